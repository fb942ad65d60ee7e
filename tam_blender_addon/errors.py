"""User-facing errors: one class, one clear line, shown without a traceback."""

from __future__ import annotations


class TamError(Exception):
    """An error whose message is meant for the user as it stands (one line)."""


class InputError(TamError):
    """Bad input from the user: a missing file, a click outside the frame, ..."""


class MediaError(TamError):
    """A video or image sequence that cannot be read (corrupt, truncated, unsupported)."""


class SessionError(TamError):
    """A session directory that cannot be used (locked, newer format, damaged)."""


class WeightsError(TamError):
    """A checkpoint that is missing, corrupt, or has the wrong keys."""


class Cancelled(TamError):
    """The user cancelled a long job; everything finished so far is kept."""
