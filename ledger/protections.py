"""The protections a write can have, and the record of which ones it got.

Each protection has a stable name that the audit trail and ``ledgerctl doctor``
use. A backend fills a :class:`Report` as it works: the mechanism that applied a
protection (``"fcntl.flock"``, ``"O_NOFOLLOW"``...), or a note that the mode
wanted it and this platform or filesystem could not give it.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["PROTECTIONS", "DESCRIPTIONS", "Report"]

DESCRIPTIONS: dict[str, str] = {
    "lock": "exclusive lock on the side lock file for the whole read-modify-write",
    "no_follow": "ledger, lock and temp files opened without following links",
    "folder_check": "the ledger's folder (and those above it) checked for links on what was opened",
    "owner_check": "folder and files owned by the user (or the admin account)",
    "permission_check": "folder and files not writable by other users",
    "link_count": "ledger and lock file have exactly one hard link",
    "local_fs": "the folder is on a local filesystem, where locks are real",
    "exclusive_temp": "temp file created exclusively, mode 0600",
    "durable_write": "temp file flushed to disk before the replace",
    "atomic_replace": "the ledger is replaced in one step, never rewritten in place",
    "durable_rename": "the replace itself made durable (folder fsync or write-through)",
}

PROTECTIONS: tuple[str, ...] = tuple(DESCRIPTIONS)


class Report:
    """What one ledger operation applied, and what it wanted but could not get."""

    def __init__(self, wanted: tuple[str, ...] = PROTECTIONS) -> None:
        self.wanted = wanted
        self.applied: dict[str, Optional[str]] = {name: None for name in PROTECTIONS}
        self.missing: list[str] = []
        self.notes: list[str] = []

    def apply(self, name: str, mechanism: str) -> None:
        """Record that ``name`` was applied by ``mechanism``."""
        if name not in self.applied:
            raise KeyError(f"unknown protection {name!r}")
        self.applied[name] = mechanism
        if name in self.missing:
            self.missing.remove(name)

    def lack(self, name: str, note: Optional[str] = None) -> None:
        """Record that the mode wanted ``name`` but it was not available here."""
        if name not in self.applied:
            raise KeyError(f"unknown protection {name!r}")
        self.applied[name] = None
        if name not in self.wanted:
            return
        if name not in self.missing:
            self.missing.append(name)
        if note:
            self.notes.append(note)
