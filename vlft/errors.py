"""The project's public error base: bad input a user can fix (a file, a flag, a folder).

Every stage script catches ``UserError`` once (``vlft.cli.run_stage``) and prints it as one
``error: ...`` line with exit code ``BAD_INPUT`` (2), never a traceback. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

BAD_INPUT = 2  # exit code of every stage for bad input (the same as argparse's for a bad flag)


class UserError(Exception):
    """Bad input; the message is one line naming the file, row, field or folder."""


class AdapterLoadError(UserError, RuntimeError):
    """The adapter folder is missing, unreadable, foreign to this base, or did not apply."""
