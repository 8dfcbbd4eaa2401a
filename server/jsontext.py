"""JSON as runcast writes it: orjson, for any value a user's step may return (what it
cannot encode is shown by its text), always valid Unicode, and one canonical form for
comparing inputs. Pure; imports nothing of runcast's own."""

from __future__ import annotations

from typing import Any

import orjson


def _default(value: Any) -> Any:
    # Step outputs are user data: anything orjson cannot encode is shown by its text.
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return valid_text(safe_str(value))


def safe_str(value: Any) -> str:
    """str(value), or a stand-in naming its type when its __str__ raises."""
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__} object that cannot be shown>"


def valid_text(text: str) -> str:
    """`text` as valid Unicode: a lone surrogate (half of a character split in two, or
    os.fsdecode of a bad byte), which no UTF-8 encoder takes, becomes U+FFFD; a pair of
    surrogates becomes the character it stands for."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _plain(value: Any, depth: int = 0) -> Any:
    """A copy orjson can always encode: odd keys and huge integers become strings, and
    text that is not valid Unicode is made valid (see valid_text)."""
    if depth > 200:
        return valid_text(safe_str(value))
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {valid_text(k if isinstance(k, str) else safe_str(k)): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return safe_str(value)
    return value


def _encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # rare user data (tuple keys, huge ints, lone surrogates): the slow, safe road
        return orjson.dumps(_plain(value), default=_default, option=orjson.OPT_NON_STR_KEYS)


def json_bytes(value: Any) -> bytes:
    """JSON of a value as bytes; never fails on user data."""
    return _encode(value)


def dumps(value: Any) -> str:
    """JSON text of a value; never fails on user data (unknown objects become strings)."""
    return _encode(value).decode()


def canonical_json(value: Any) -> bytes:
    """One JSON text for equal JSON values (object keys sorted): `true` and `1` differ."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=_default)


def to_json_value(value: Any) -> Any:
    """The value as it will look to clients once it has crossed the wire."""
    return orjson.loads(_encode(value))
