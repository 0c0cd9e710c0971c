"""Legacy mode: no lock and no checks, only the atomic replace.

An admin chooses this mode knowingly (for example on a single-user machine whose
filesystem has no working locks). It follows links like ordinary Python code and
does not protect several users sharing one home; ``ledgerctl`` warns about that
once per process.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator, Optional

from . import _refusals as refusals
from ._backend import is_temp_of, temp_name
from ._posix import io_error
from .protections import Report

__all__ = ["LegacyBackend", "LegacyFolder"]

_STALE_AFTER = 600.0


class LegacyFolder:
    """A folder used by path, with no checks."""

    def __init__(self, path: str, report: Report) -> None:
        self.path = path
        self._report = report

    def _join(self, name: str) -> str:
        return os.path.join(self.path, name)

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        yield

    def read(self, name: str, max_bytes: int) -> Optional[bytes]:
        path = self._join(name)
        try:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise io_error(exc, path, "reading") from exc
        if len(data) > max_bytes:
            raise refusals.too_large(path, max_bytes)
        return data

    def replace(self, name: str, data: bytes) -> None:
        path = self._join(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        try:
            tmp = os.path.join(self.path, temp_name(name))
            fd = os.open(tmp, flags, 0o600)
        except OSError as exc:
            raise io_error(exc, path, "creating a temp file for") from exc
        try:
            with open(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self._report.apply("durable_write", "fsync")
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise io_error(exc, path, "writing") from exc
            raise
        self._report.apply("atomic_replace", "os.replace")

    def remove_stale_temps(self, name: str) -> list[str]:
        # Without a lock a fresh temp file may be another writer's: remove only old ones.
        removed = []
        cutoff = time.time() - _STALE_AFTER
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not is_temp_of(entry.name, name):
                    continue
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed.append(entry.name)
        return removed

    def open_append(self, name: str) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        return os.open(self._join(name), flags, 0o600)

    def close(self) -> None:
        pass


class LegacyBackend:
    """The admin-chosen mode without lock or checks."""

    name = "legacy"

    def capabilities(self) -> dict[str, Optional[str]]:
        from .protections import PROTECTIONS

        offered = dict.fromkeys(PROTECTIONS)
        offered.update(durable_write="fsync", atomic_replace="os.replace")
        return offered

    def open_folder(self, path: str, *, create: bool, report: Report) -> LegacyFolder:
        path = os.path.abspath(os.path.expanduser(path))
        if create:
            try:
                os.makedirs(path, 0o700, exist_ok=True)
            except OSError as exc:
                raise io_error(exc, path, "creating the folder") from exc
        elif not os.path.isdir(path):
            raise FileNotFoundError(path)
        return LegacyFolder(path, report)
