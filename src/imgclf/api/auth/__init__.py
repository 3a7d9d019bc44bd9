"""Logging in: the OAuth2 password form, JWT access tokens, throttled failures."""
