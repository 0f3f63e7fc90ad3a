"""The one exception type a user's mistake raises.

A :class:`FrontierError` carries a single line that names what is wrong (a key path, a file, a
value received). The CLI prints that line and exits with code 2; no traceback is shown for it.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class FrontierError(Exception):
    """A user-facing error: one line naming the argument, key path or file and what was received."""


class DataError(FrontierError):
    """A dataset name, root or class subset that cannot be loaded."""


class WeightsError(FrontierError):
    """A weights file that is missing or does not fit the architecture."""


class FrontierDeprecation(FutureWarning):
    """A spec key or option renamed: the old name still works for one release. The CLI prints it as
    one line, ``frontier: warning: <key path>: ...``, once per key."""
