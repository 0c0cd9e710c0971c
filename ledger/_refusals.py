"""The refusals every backend gives, worded once.

Each returns the exception for the caller to raise, so that the messages and the
audit reasons are the same on every platform.
"""

from __future__ import annotations

from .errors import CorruptLedgerError, UnsafePathError

__all__ = [
    "link", "not_regular", "not_folder", "folder_churning", "temp_names_taken", "too_large",
]


def link(path: str, what: str, kind: str = "a symbolic link",
         reason: str = "symlink") -> UnsafePathError:
    """``what`` at ``path`` (``"the file"``, ``"this folder"``) is a link of some ``kind``."""
    return UnsafePathError(
        f"Refusing to use {path}: {what} is {kind}. Remove the link and run the command "
        "again; nothing was written.",
        path=path,
        reason=reason,
    )


def not_regular(path: str) -> UnsafePathError:
    """A FIFO, device, folder or other non-file stands where a file should be."""
    return UnsafePathError(
        f"Refusing to use {path}: it is not a regular file. Remove it and run the command "
        "again; nothing was written.",
        path=path,
        reason="not_regular_file",
    )


def not_folder(path: str) -> UnsafePathError:
    """Something other than a folder stands where a folder should be."""
    return UnsafePathError(
        f"Refusing to use {path}: it is not a folder. Remove it or choose another ledger folder.",
        path=path,
        reason="not_a_folder",
    )


def folder_churning(path: str) -> UnsafePathError:
    """The folder at ``path`` kept vanishing between being made and being opened."""
    return UnsafePathError(
        f"Refusing to use {path}: the folder kept disappearing while it was being created, "
        "so someone else is making and removing that name. Check the folder above it; "
        "nothing was written.",
        path=path,
        reason="folder_churning",
    )


def temp_names_taken(folder: str) -> UnsafePathError:
    """Every fresh temp name tried in ``folder`` was already taken."""
    return UnsafePathError(
        f"Could not create a fresh temp file in {folder}: every name tried was taken. "
        "Something is planting files there; check the folder.",
        path=folder,
        reason="temp_name_taken",
    )


def too_large(path: str, limit: int) -> CorruptLedgerError:
    """The ledger is larger than a ledger may be; it was not read."""
    return CorruptLedgerError(
        f"{path} is more than the {limit} bytes a ledger may have. "
        "Move it aside and run the command again; it was not changed.",
        path=path,
        reason="too_large",
    )
