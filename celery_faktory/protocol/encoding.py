"""Compact, single-line JSON as Faktory needs it.

Faktory reads one command per line, and MUTATE splits its line on spaces, so every JSON document we send is
compact (no whitespace between tokens), never contains a raw newline, and refuses NaN and infinities, which
the server would reject as invalid JSON anyway.
"""

from __future__ import annotations

import json
from typing import Any

from celery_faktory.errors import InvalidCommand

__all__ = ["dumps", "dumps_spaceless", "loads"]

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Encode ``value`` as compact JSON on one line.

    Raises:
        InvalidCommand: ``value`` holds something JSON cannot carry (NaN, infinity, an unknown type).
    """
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidCommand(f"cannot encode as JSON: {exc}") from exc


def dumps_spaceless(value: Any) -> str:
    r"""Encode ``value`` as compact JSON that contains no space character at all.

    Compact JSON has spaces only inside strings; each is written as the equivalent escape ``\u0020``, so
    the decoded value is unchanged. MUTATE needs this: the server splits its line on single spaces.
    """
    return dumps(value).replace(" ", "\\u0020")


def loads(text: str | bytes) -> Any:
    """Decode JSON text (or UTF-8 bytes) into Python values."""
    return json.loads(text)
