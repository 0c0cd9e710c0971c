"""The small interface that every platform backend implements.

The write flow in :mod:`ledger.store` is platform-neutral: it opens a folder
through a backend, locks, reads, replaces, and records on a
:class:`~ledger.protections.Report` which protections each step really had.
Backends: :mod:`ledger._posix` (Linux, macOS), :mod:`ledger._windows`, and
:mod:`ledger._legacy` (the admin-chosen mode without lock or checks).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, ContextManager, Optional, Protocol

if TYPE_CHECKING:
    from .protections import Report

TEMP_SUFFIX = ".tmp"


def temp_prefix(name: str) -> str:
    """Return the prefix of the temp files written next to ledger ``name``."""
    return f".{name}."


def read_bounded(read: Callable[[int], bytes], path: str, max_bytes: int) -> bytes:
    """Read to the end with ``read(size)``, refusing more than ``max_bytes`` bytes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = read(1 << 20)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            from ._refusals import too_large

            raise too_large(path, max_bytes)
        chunks.append(chunk)


def is_temp_of(entry: str, name: str) -> bool:
    """Tell whether folder entry ``entry`` is a temp file of ledger ``name``."""
    return entry.startswith(temp_prefix(name)) and entry.endswith(TEMP_SUFFIX)


class Folder(Protocol):
    """A ledger folder that was opened and checked once, and is used from then on."""

    path: str

    def lock(self, name: str, timeout: float) -> ContextManager[None]:
        """Hold an exclusive lock on side file ``name`` for the ``with`` body."""

    def read(self, name: str, max_bytes: int) -> Optional[bytes]:
        """Return the bytes of file ``name``, or ``None`` if it does not exist."""

    def replace(self, name: str, data: bytes) -> None:
        """Write ``data`` to a fresh temp file and atomically put it in place of ``name``."""

    def remove_stale_temps(self, name: str) -> list[str]:
        """Remove temp files of ledger ``name`` left by writers that died; return their names."""

    def open_append(self, name: str) -> int:
        """Open ``name`` for appending (created 0600), checked like the ledger; return a fd."""

    def close(self) -> None:
        """Release the folder handle."""


class Backend(Protocol):
    """Opens ledger folders with the protections of one platform and mode."""

    name: str

    def capabilities(self) -> dict[str, Optional[str]]:
        """Map each protection to the mechanism this platform offers, or ``None``."""

    def open_folder(self, path: str, *, create: bool, report: Report) -> Folder:
        """Open and check folder ``path`` (creating it 0700 if asked), filling ``report``."""


def backend_for(mode: str) -> Backend:
    """Return the backend that implements ``mode`` on this platform."""
    if mode == "legacy":
        from ._legacy import LegacyBackend

        return LegacyBackend()
    if os.name == "nt":
        from ._windows import WindowsBackend

        return WindowsBackend()
    from ._posix import PosixBackend

    return PosixBackend()
