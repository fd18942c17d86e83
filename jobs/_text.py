"""How job values read in messages and hashes: shown to a person, or written canonically.

Error messages quote what the user wrote, and what the user wrote may be hostile: a value built
from YAML aliases can expand to billions of items, or contain itself. So :func:`show` renders
lazily and stops at a fixed number of characters and levels, whatever the value.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

#: Characters of a value shown in a message (longer renderings end in "...").
SHOW_CHARS = 60
#: Nesting levels shown in a message (deeper ones read "[...]" or "{...}").
SHOW_LEVELS = 4


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, no NaN) for hashes of jobs and models."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def show(value: Any) -> str:
    """A value as the user wrote it in YAML ('text', true, null, [1, 2]), at most 60 characters.

    The rendering is produced piece by piece and abandoned once long enough, so the cost is
    bounded by the characters shown, not by the size of the value.
    """
    text = ""
    for piece in _pieces(value, SHOW_LEVELS):
        text += piece
        if len(text) > SHOW_CHARS:
            return text[: SHOW_CHARS - 3] + "..."
    return text


def _pieces(value: Any, levels: int) -> Iterator[str]:
    if isinstance(value, bool):
        yield "true" if value else "false"
    elif value is None:
        yield "null"
    elif isinstance(value, str):
        yield repr(value[: SHOW_CHARS + 1])  # repr escapes control characters
    elif isinstance(value, int):
        # Python refuses to print an integer of more than 4,300 digits, and none needs to be read.
        digits = math.floor(value.bit_length() * math.log10(2)) + 1
        yield str(value) if digits <= SHOW_CHARS else f"<an integer of about {digits:,} digits>"
    elif isinstance(value, list | tuple):
        if levels == 0:
            yield "[...]"
            return
        yield "["
        for index, item in enumerate(value):
            yield ", " if index else ""
            yield from _pieces(item, levels - 1)
        yield "]"
    elif isinstance(value, Mapping):
        if levels == 0:
            yield "{...}"
            return
        yield "{"
        for index, (key, item) in enumerate(value.items()):
            yield ", " if index else ""
            yield _key(key)
            yield ": "
            yield from _pieces(item, levels - 1)
        yield "}"
    else:
        yield repr(value)[: SHOW_CHARS + 1]


def _key(key: Any) -> str:
    """A mapping key as YAML shows it: bare text (control characters still escaped), or a scalar."""
    return repr(key[: SHOW_CHARS + 1])[1:-1] if isinstance(key, str) else next(_pieces(key, 0))


# C0 and C1 controls, zero-width and bidirectional marks: what can move a terminal's cursor,
# hide text or reorder it. The newline is one of them only where a value must stay on one line.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_CONTROL_OR_NEWLINE = re.compile(_CONTROL.pattern[:-1] + "\n]")


def printable(text: str, *, newlines: bool = False) -> str:
    """`text` with control characters escaped (``\\x1b``): names, values and errors from files and
    jobs go to a terminal or a log, where a raw escape sequence could rewrite what the user sees.
    ``newlines`` keeps line breaks (whole messages); otherwise they are escaped too (one value)."""
    pattern = _CONTROL if newlines else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda m: ascii(m.group())[1:-1], text)


# the password runs to the last "@" before the path: a raw "@" inside it is common
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^/\s]*@")
_QUERY = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|secret|secret_key|token|sas_token)=)[^&;\s]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``: a storage or results URL
    may carry one (``postgresql://user:secret@host/db``, ``?password=…``), and whatever rashomon
    prints or stores ends up in logs, notebooks and shared study databases."""
    return _QUERY.sub(r"\g<head>***", _USERINFO.sub(r"\g<head>:***@", text))


def type_name(value: Any) -> str:
    """'a list', 'a string', 'a number' ...: what a YAML value is, in the user's words."""
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a bool"}
    return names.get(type(value), type(value).__name__)


def join_path(loc: Sequence[Any]) -> str:
    """A pydantic location as the dotted YAML key path the user reads: population.grid.lr[1]."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def or_list(items: Any) -> str:
    """'a', 'a or b', 'a, b or c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def did_you_mean(value: Any, options: Sequence[str]) -> str:
    """ "did you mean 'x'?" for the closest option, or "" when none is close."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""
