"""Secrets in URLs are never shown or recorded.

A storage or results URL may carry a password (``postgresql://user:secret@host/db``,
``s3://key:secret@bucket``, ``?password=…``), and whatever rashomon prints or stores ends up in
logs, notebooks and shared study databases.
"""

from __future__ import annotations

import re

# the password runs to the last "@" before the path: a raw "@" inside it is common
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^/\s]*@")
_QUERY = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|secret|secret_key|token|sas_token)=)[^&;\s]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _QUERY.sub(r"\g<head>***", _USERINFO.sub(r"\g<head>:***@", text))
