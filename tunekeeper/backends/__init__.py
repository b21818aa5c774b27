"""The tuning services tunekeeper speaks, one package each, beside what Google's REST APIs share."""
