"""User-facing errors: one class, one clear line, shown without a traceback.

A leaf module (standard library only) at the package root, so both layers import it
without an arrow running up: `models/` as ``..errors``, the engine as ``..errors``
(through ``tam_blender_addon.errors``, which re-exports it), Blender's side likewise.
"""

from __future__ import annotations

import errno


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


class DiskError(TamError):
    """The disk is full or not writable: the job stopped, what it finished is on disk."""


# errno values that mean "the disk cannot take this write", not a bug in our code
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def as_disk_error(exc: BaseException) -> DiskError | None:
    """A DiskError with a one-line, actionable message for a full/read-only disk; None for other errors."""
    if not isinstance(exc, OSError) or exc.errno not in _DISK_ERRNOS:
        return None
    what = exc.strerror or str(exc)
    where = f" writing {exc.filename}" if exc.filename else ""
    hint = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "choose a writable folder"
    return DiskError(f"{what}{where}: {hint} and run it again; everything finished so far is kept")


def as_user_error(exc: BaseException) -> TamError | None:
    """`exc` itself if it is meant for the user, its DiskError if it is a disk problem, else None (a bug)."""
    return exc if isinstance(exc, TamError) else as_disk_error(exc)
