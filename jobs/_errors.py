"""The one exception type for mistakes a user can fix.

The CLI turns it into a single line on stderr and exit status 2, with no traceback, so its
message must name the place (a YAML key path, a file, a column) and the fix.
"""

from __future__ import annotations


class UserError(Exception):
    """A bad job, file, column or value: the message says where and how to fix it."""
