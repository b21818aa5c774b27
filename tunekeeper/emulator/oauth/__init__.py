"""The OAuth 2.0 side of Google Cloud: the token endpoint and the bearer tokens it issues."""
