"""The runcast client library (see client.__main__ for `python -m client`)."""
