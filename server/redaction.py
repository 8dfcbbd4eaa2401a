"""One redaction for every URL, DSN or token runcast prints: what a log line or a message
shows of an address keeps its shape and loses its secrets. Pure; imports nothing of runcast's."""

from __future__ import annotations

import re

_QUERY_VALUE = re.compile(r"([?&][^=&#\s\"]*=)[^&#\s\"]*")  # ?token=abc -> ?token=***
_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]*@", re.IGNORECASE)  # user:pw@ -> user:***@


def redact(text: str) -> str:
    """`text` with every query string's values and every URL's password replaced by `***`:
    `postgresql://app:s3cret@db/runs` -> `postgresql://app:***@db/runs`."""
    return _PASSWORD.sub(r"\1***@", _QUERY_VALUE.sub(r"\1***", text))
