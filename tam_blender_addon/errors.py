"""The user-facing error types of the engine: re-exported from the package-root leaf `errors`."""

from __future__ import annotations

from ..errors import (
    Cancelled,
    DiskError,
    InputError,
    MediaError,
    SessionError,
    TamError,
    WeightsError,
    as_disk_error,
    as_user_error,
)

__all__ = ["Cancelled", "DiskError", "InputError", "MediaError", "SessionError", "TamError", "WeightsError",
           "as_disk_error", "as_user_error"]
