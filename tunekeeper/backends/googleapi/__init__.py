"""What Google's REST APIs share, whichever service: the error shape and its typed errors, retries with
back-off, and one call over HTTP that classifies its outcome."""
