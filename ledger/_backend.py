"""The small interface that every platform backend implements.

The write flow in :mod:`ledger.store` is platform-neutral: it opens a folder
through a backend, locks, reads, replaces, and records on a
:class:`~ledger.protections.Report` which protections each step really had.
Backends: :mod:`ledger._posix` (Linux, macOS), :mod:`ledger._windows`, and
:mod:`ledger._legacy` (the admin-chosen mode without lock or checks).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable, ContextManager, Optional, Protocol

if TYPE_CHECKING:
    from .protections import Report

_TEMP_SUFFIX = ".tmp"
_TEMP_RANDOM_BYTES = 6

#: How often a folder that vanished between being made and being opened is tried again.
FOLDER_ATTEMPTS = 16


def temp_name(name: str) -> str:
    """Return a fresh temp file name for ledger ``name``: ``.<name>.<pid>.<12 hex>.tmp``."""
    return f".{name}.{os.getpid()}.{os.urandom(_TEMP_RANDOM_BYTES).hex()}{_TEMP_SUFFIX}"


def temp_owner(entry: str) -> Optional[str]:
    """Return the ledger name whose temp file ``entry`` is, or ``None`` if it is not one.

    Only names of the form :func:`temp_name` makes count, so that a user's own
    ``.notes.backup.tmp`` is never taken for a stale temp file.
    """
    if not (entry.startswith(".") and entry.endswith(_TEMP_SUFFIX)):
        return None
    parts = entry[1:-len(_TEMP_SUFFIX)].rsplit(".", 2)
    if len(parts) != 3:
        return None
    name, pid, random = parts
    if not (name and pid.isdigit() and pid.isascii() and len(random) == 2 * _TEMP_RANDOM_BYTES):
        return None
    return name if all(char in "0123456789abcdef" for char in random) else None


def is_temp_of(entry: str, name: str) -> bool:
    """Tell whether folder entry ``entry`` is a temp file of ledger ``name``."""
    return temp_owner(entry) == name


def wait_for_lock(
    try_lock: Callable[[], bool],
    path: str,
    timeout: float,
    read_holder: Callable[[], str],
    *,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    deadline: Optional[float] = None,
) -> None:
    """Call ``try_lock`` until it returns true, with a growing jittered pause, or time out.

    ``deadline`` (on the ``monotonic`` clock) ends the wait earlier than ``timeout`` from
    now, for a caller that already waited part of its ``timeout``.

    Raises:
        LockTimeoutError: The lock was not free within ``timeout`` seconds (75); the
            message names the lock file and, where ``read_holder`` knows it, the holder.
    """
    if deadline is None:
        deadline = monotonic() + timeout
    delay = 0.001
    while not try_lock():
        remaining = deadline - monotonic()
        if remaining <= 0:
            from .errors import LockTimeoutError

            holder = read_holder()
            held = f" (held by {holder})" if holder else ""
            raise LockTimeoutError(
                f"The lock {path} was not free within {timeout:g} s{held}. "
                "Try again later, or end the process that holds it.",
                path=path,
            )
        import secrets  # only a writer that has to wait needs the jitter

        sleep(min(delay, remaining) * (0.5 + secrets.randbelow(1000) / 1000))
        delay = min(delay * 2, 0.05)


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
