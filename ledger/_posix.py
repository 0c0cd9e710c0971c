"""POSIX backend: ``flock``, no-follow opens, ``dir_fd`` operations, ``fstat`` checks.

The folder is reached by walking its canonical path one component at a time with
``O_NOFOLLOW | O_DIRECTORY``; from then on every file is opened, created,
renamed and removed relative to that folder descriptor, and every check is made
with ``fstat`` on the descriptor that is then used.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import time
from typing import Any, Iterator, Optional

from . import _netfs
from . import _refusals as refusals
from ._backend import FOLDER_ATTEMPTS, is_temp_of, read_bounded, temp_name, wait_for_lock
from .errors import LedgerError, LedgerIOError, UnsafePathError, UsageError
from .protections import Report

if sys.platform != "win32":
    import fcntl

    _flock = fcntl.flock
    _LOCK_EX, _LOCK_NB, _LOCK_UN = fcntl.LOCK_EX, fcntl.LOCK_NB, fcntl.LOCK_UN
    _geteuid = os.geteuid
    _pread = os.pread
    _pwrite = os.pwrite
    _F_FULLFSYNC: Optional[int] = getattr(fcntl, "F_FULLFSYNC", None)

    def _full_fsync(fd: int) -> None:
        assert _F_FULLFSYNC is not None
        fcntl.fcntl(fd, _F_FULLFSYNC)

else:  # the module imports everywhere; this backend is never chosen on Windows

    def _posix_only(*args: object) -> Any:
        raise OSError(errno.ENOSYS, "this call exists only on POSIX systems")

    _flock = _full_fsync = _pread = _pwrite = _posix_only
    _LOCK_EX, _LOCK_NB, _LOCK_UN = 2, 4, 8
    _F_FULLFSYNC = None

    def _geteuid() -> int:
        return -1

__all__ = ["PosixBackend", "PosixFolder", "io_error"]

_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)

_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
_TEMP_ATTEMPTS = 16
_LOCK_ATTEMPTS = 16
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM}


def io_error(exc: OSError, path: str, doing: str) -> Exception:
    """Turn an ``OSError`` met while ``doing`` something to ``path`` into a ledger error."""
    if exc.errno == errno.ENAMETOOLONG:
        return UsageError(
            f"The name {path} is longer than this filesystem allows; choose a shorter one.",
            path=path,
        )
    if exc.errno in _PERMISSION_ERRNOS:
        return UnsafePathError(
            f"Permission denied while {doing} {path}. "
            "Check that the folder belongs to you and is writable by you.",
            path=path,
            reason="permission_denied",
        )
    detail = os.strerror(exc.errno) if exc.errno else str(exc)
    slug = errno.errorcode.get(exc.errno or 0, "EIO").lower()
    return LedgerIOError(
        f"Could not finish {doing} {path}: {detail}. The old ledger is intact; "
        "free some space or fix the folder, then run the command again.",
        path=path,
        reason=f"io_error:{slug}",
    )


def _owner_ok(st: os.stat_result) -> bool:
    return st.st_uid in (_geteuid(), 0)


def check_file(st: os.stat_result, path: str) -> None:
    """Refuse a file that is not a regular file of the user's, or that has other links."""
    if not stat.S_ISREG(st.st_mode):
        raise refusals.not_regular(path)
    if not _owner_ok(st):
        raise UnsafePathError(
            f"Refusing to use {path}: it belongs to uid {st.st_uid}, not to you. "
            "Remove it, or use a ledger folder of your own.",
            path=path,
            reason="foreign_owner",
        )
    # No link at all means the name was removed after the open: nothing else can be
    # reached through this file (a lock file is checked again once it is locked).
    if st.st_nlink > 1:
        raise UnsafePathError(
            f"Refusing to use {path}: it has {st.st_nlink} hard links, so writing it could "
            "change another file. Remove it and run the command again.",
            path=path,
            reason="hard_link",
        )
    if st.st_mode & 0o022:
        raise UnsafePathError(
            f"Refusing to use {path}: other users may write to it (mode "
            f"{stat.S_IMODE(st.st_mode):o}). Run 'chmod go-w {path}' and try again.",
            path=path,
            reason="loose_permissions",
        )


def _check_folder(st: os.stat_result, path: str, *, final: bool) -> None:
    """Check one folder on the way to the ledger (``final``: the ledger's own folder)."""
    if not _owner_ok(st):
        raise UnsafePathError(
            f"Refusing to use {path}: the folder belongs to uid {st.st_uid}, not to you "
            "or the administrator. Use a ledger folder of your own.",
            path=path,
            reason="foreign_owner",
        )
    writable_by_others = bool(st.st_mode & 0o022)
    if writable_by_others and (final or not st.st_mode & stat.S_ISVTX):
        raise UnsafePathError(
            f"Refusing to use {path}: other users may write to this folder (mode "
            f"{stat.S_IMODE(st.st_mode):o}). Run 'chmod go-w {path}' and try again.",
            path=path,
            reason="loose_permissions",
        )


class PosixFolder:
    """A ledger folder held open by descriptor; every later step goes through it."""

    def __init__(self, fd: int, path: str, report: Report) -> None:
        self.fd = fd
        self.path = path
        self._report = report
        self._held: Optional[tuple[str, int]] = None  # the lock file's name and descriptor

    def _join(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _open_checked(self, name: str, flags: int, mode: int = 0o600) -> int:
        """Open ``name`` in the folder without following links, and check what was opened."""
        path = self._join(name)
        try:
            fd = os.open(name, flags | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK, mode, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise refusals.link(path, "the file") from exc
            if exc.errno in (errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
                raise refusals.not_regular(path) from exc
            raise
        try:
            check_file(os.fstat(fd), path)
        except BaseException:
            os.close(fd)
            raise
        if _O_NOFOLLOW:  # a flag that is 0 protects nothing, so it is never claimed
            self._report.apply("no_follow", "O_NOFOLLOW")
        self._report.apply("link_count", "fstat.st_nlink")
        return fd

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        fd = self._lock_current(name, timeout)
        try:
            self._report.apply("lock", "fcntl.flock")
            _note_holder(fd)
            self._held = (name, fd)
            try:
                yield
            finally:
                self._held = None
                _flock(fd, _LOCK_UN)
        finally:
            os.close(fd)

    def _lock_current(self, name: str, timeout: float) -> int:
        """Open and lock the lock file ``name``, and return its descriptor.

        A lock file removed or replaced while we waited (by hand, say) no longer guards
        anything: another writer may already hold a lock on the new file. So once the lock
        is ours, the name must still lead to the file we locked; if not, start again.
        """
        path = self._join(name)
        deadline = time.monotonic() + timeout
        for _ in range(_LOCK_ATTEMPTS):
            try:
                fd = self._open_checked(name, os.O_RDWR | os.O_CREAT)
            except LedgerError:
                raise
            except OSError as exc:
                raise io_error(exc, path, "opening the lock file") from exc
            try:
                self._acquire(fd, path, timeout, deadline)
                if self._still_named(fd, name):
                    return fd
                _flock(fd, _LOCK_UN)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise UnsafePathError(
            f"Refusing to use {path}: the lock file was removed or replaced each time it was "
            "locked, so something keeps changing the folder. Check the folder; nothing was "
            "written.",
            path=path,
            reason="lock_replaced",
        )

    def _check_still_locked(self) -> None:
        """Refuse to replace the ledger if the lock file was removed or replaced meanwhile.

        A writer that came after the removal made a new lock file and may be writing now;
        replacing the ledger could drop its record. Nothing is written, and the caller is
        told, so that no record is lost without a word.
        """
        if self._held is None or self._still_named(self._held[1], self._held[0]):
            return
        path = self._join(self._held[0])
        raise UnsafePathError(
            f"The lock file {path} was removed or replaced while this write held it, so "
            "another writer may have run at the same time; nothing was written. Do not "
            "remove lock files; run the command again.",
            path=path,
            reason="lock_replaced",
        )

    def _still_named(self, fd: int, name: str) -> bool:
        try:
            named = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    @staticmethod
    def _acquire(fd: int, path: str, timeout: float, deadline: float) -> None:
        def try_lock() -> bool:
            try:
                _flock(fd, _LOCK_EX | _LOCK_NB)
            except BlockingIOError:
                return False
            return True

        wait_for_lock(try_lock, path, timeout, lambda: _read_holder(fd), deadline=deadline)

    def read(self, name: str, max_bytes: int) -> Optional[bytes]:
        path = self._join(name)
        try:
            fd = self._open_checked(name, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except LedgerError:
            raise
        except OSError as exc:
            raise io_error(exc, path, "reading") from exc
        try:
            size = os.fstat(fd).st_size
            if size > max_bytes:
                raise refusals.too_large(path, max_bytes)
            return read_bounded(lambda size: os.read(fd, size), path, max_bytes)
        finally:
            os.close(fd)

    def replace(self, name: str, data: bytes) -> None:
        path = self._join(name)
        tmp, fd = self._create_temp(name)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                _fsync_file(fd)
            finally:
                os.close(fd)
            self._report.apply("durable_write", "F_FULLFSYNC" if _F_FULLFSYNC else "fsync")
            self._check_still_locked()
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            if isinstance(exc, OSError) and not isinstance(exc, LedgerError):
                # A writer let in by a removed lock file may have taken our temp file away.
                self._check_still_locked()
                raise io_error(exc, path, "writing") from exc
            raise
        self._report.apply("atomic_replace", "renameat")
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise LedgerIOError(
                f"{path} was replaced, but the folder could not be flushed to disk "
                f"({exc.strerror or exc}); the new version may not survive a power loss. "
                "Check the disk, then run the command again.",
                path=path,
                reason="folder_fsync_failed",
            ) from exc
        self._report.apply("durable_rename", "fsync(dir)")

    def _create_temp(self, name: str) -> tuple[str, int]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        for _ in range(_TEMP_ATTEMPTS):
            tmp = temp_name(name)
            try:
                fd = os.open(tmp, flags, 0o600, dir_fd=self.fd)
            except FileExistsError:
                continue
            except OSError as exc:
                raise io_error(exc, self._join(tmp), "creating the temp file") from exc
            if _O_NOFOLLOW:
                self._report.apply("exclusive_temp", "O_CREAT|O_EXCL|O_NOFOLLOW")
            return tmp, fd
        raise refusals.temp_names_taken(self.path)

    def remove_stale_temps(self, name: str) -> list[str]:
        removed = []
        with os.scandir(self.fd) as entries:
            stale = [entry.name for entry in entries if is_temp_of(entry.name, name)]
        for entry in stale:
            try:
                os.unlink(entry, dir_fd=self.fd)
            except FileNotFoundError:
                continue
            except OSError:
                continue
            removed.append(entry)
        return removed

    def open_append(self, name: str) -> int:
        return self._open_checked(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _fsync_file(fd: int) -> None:
    if _F_FULLFSYNC is not None:
        try:
            _full_fsync(fd)
            return
        except OSError:
            pass
    os.fsync(fd)


def _note_holder(fd: int) -> None:
    """Write who holds the lock into the lock file, for the next writer's timeout message."""
    import socket  # writes only: reads never take the lock

    note = f"pid {os.getpid()} on {socket.gethostname()}\n".encode()
    with contextlib.suppress(OSError):
        # A process that writes again finds its own note there: no need to write it twice.
        if _pread(fd, len(note) + 1, 0) == note:
            return
        os.ftruncate(fd, 0)
        _pwrite(fd, note, 0)


def _read_holder(fd: int) -> str:
    """Name the lock's holder: the note, unless the system's lock table says otherwise."""
    text = ""
    with contextlib.suppress(OSError):
        note: bytes = _pread(fd, 200, 0)
        text = note.decode("utf-8", "replace").strip()
    holders = _flock_holders(fd)
    if not holders:
        return text
    if text.split()[:2] != ["pid", str(holders[0])]:
        # The note is an earlier writer's: another program holds the lock now.
        text = f"pid {holders[0]}"
    if _alive(holders[0]):
        return text
    # The kernel still lists the pid that took the lock, but it has ended: a child it
    # started inherited the lock file's descriptor. Name who has the file open now.
    openers = _processes_with_open(fd)
    now = f"; the lock file is open in pid {', pid '.join(map(str, openers))}" if openers else ""
    return f"{text}, which has ended and passed the lock on to a process it started{now}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _processes_with_open(fd: int, limit: int = 8, budget: float = 0.5) -> list[int]:
    """Return up to ``limit`` other processes with ``fd``'s file open, as far as ``/proc``
    lets this user see within ``budget`` seconds (Linux only).

    Descriptors are compared by the path the kernel gives (``readlink``), which never
    touches the files themselves, so a hung network mount cannot stall the search.
    """
    if not sys.platform.startswith("linux"):
        return []
    deadline = time.monotonic() + budget
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        # Newest first: a process that inherited the lock is most likely a recent one.
        pids = sorted((int(entry) for entry in os.listdir("/proc") if entry.isdigit()),
                      reverse=True)
    except (OSError, ValueError):
        return []
    found: list[int] = []
    for pid in pids:
        if len(found) >= limit or time.monotonic() > deadline:
            break
        if pid == os.getpid():
            continue
        folder = f"/proc/{pid}/fd"
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            try:
                if os.readlink(os.path.join(folder, entry)) == target:
                    found.append(pid)
                    break
            except OSError:
                continue
    return found


def _flock_holders(fd: int) -> Optional[list[int]]:
    """Return the pids holding a ``flock`` on ``fd``'s file, per ``/proc/locks`` on Linux.

    ``None`` or an empty list: this system does not say (no ``/proc/locks``, or the
    holder is not visible from here, as across some overlay or pid namespaces).
    """
    if not sys.platform.startswith("linux"):
        return None
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters have "->" in field 1.
    return [int(fields[4]) for fields in (line.split() for line in lines)
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key
            and fields[4].isdigit() and int(fields[4]) > 0]


def _trusted_realpath(path: str) -> str:
    """Resolve ``path`` like ``realpath``, following only links no other user can have made.

    A link is followed when it belongs to the user or root and sits in a folder that
    passes the ancestor checks (``/var`` on macOS, a dotfiles link); a link planted by
    someone else, such as in a shared sticky folder, is refused.
    """
    pending = [part for part in path.split(os.sep) if part]
    here = os.sep
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in (".", ".."):
            here = os.path.dirname(here) if part == ".." else here
            continue
        link = os.path.join(here, part)
        try:
            st = os.lstat(link)
        except OSError:
            return os.path.join(link, *pending)
        if not stat.S_ISLNK(st.st_mode):
            here = link
            continue
        hops += 1
        if hops > 40:
            raise refusals.link(link, "this folder (a loop of links)")
        if not _owner_ok(st):
            raise UnsafePathError(
                f"Refusing to use {link}: it is a symbolic link of uid {st.st_uid}, which "
                "another user may have planted. Remove it, or use a path without it.",
                path=link,
                reason="symlink",
            )
        _check_folder(os.stat(here), here, final=False)
        target = os.readlink(link)
        if target.startswith(os.sep):
            here = os.sep
        pending[:0] = [item for item in target.split(os.sep) if item]
    return here


class PosixBackend:
    """Secure and strict modes on Linux and macOS."""

    name = "posix"

    def capabilities(self) -> dict[str, Optional[str]]:
        nofollow = "O_NOFOLLOW" if _O_NOFOLLOW else None
        dirfd = {os.open, os.rename, os.unlink, os.mkdir} <= os.supports_dir_fd
        walk = "openat(O_NOFOLLOW|O_DIRECTORY)" if nofollow and _O_DIRECTORY and dirfd else None
        return {
            "lock": "fcntl.flock" if sys.platform != "win32" else None,
            "no_follow": nofollow,
            "folder_check": walk,
            "owner_check": "fstat.st_uid",
            "permission_check": "fstat.st_mode",
            "link_count": "fstat.st_nlink",
            "local_fs": _netfs.MECHANISM,
            "exclusive_temp": "O_CREAT|O_EXCL|O_NOFOLLOW" if nofollow else None,
            "durable_write": "F_FULLFSYNC" if _F_FULLFSYNC else "fsync",
            "atomic_replace": "renameat" if dirfd else None,
            "durable_rename": "fsync(dir)",
        }

    def open_folder(self, path: str, *, create: bool, report: Report) -> PosixFolder:
        path = os.path.abspath(os.path.expanduser(path))
        parent, leaf = os.path.split(path)
        target = os.path.join(_trusted_realpath(parent), leaf) if leaf else _trusted_realpath(path)
        parts = [part for part in target.split(os.sep) if part]
        fd = os.open("/", _DIR_FLAGS)
        here = "/"
        try:
            for index, part in enumerate(parts):
                final = index == len(parts) - 1
                here = os.path.join(here, part)
                child = self._step(fd, part, here, create=create, final=final)
                os.close(fd)
                fd = child
            _check_folder(os.fstat(fd), path, final=True)
        except BaseException:
            os.close(fd)
            raise
        if _O_NOFOLLOW and _O_DIRECTORY:
            report.apply("folder_check", "openat(O_NOFOLLOW|O_DIRECTORY)")
        report.apply("owner_check", "fstat.st_uid")
        report.apply("permission_check", "fstat.st_mode")
        fs_type, remote = _netfs.filesystem_of(fd)
        if remote is None:
            report.lack("local_fs", f"could not tell whether {path} is on a local filesystem")
        elif remote:
            report.lack("local_fs", f"{path} is on a network filesystem ({fs_type})")
        else:
            report.apply("local_fs", f"{_netfs.MECHANISM}:{fs_type}")
        return PosixFolder(fd, path, report)

    @staticmethod
    def _step(parent_fd: int, part: str, here: str, *, create: bool, final: bool) -> int:
        """Open folder ``part`` below ``parent_fd``, and check it if it is an ancestor."""
        try:
            fd = PosixBackend._open_or_make(parent_fd, part, here, create=create)
        except LedgerError:
            raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                if os.path.islink(here) or exc.errno == errno.ELOOP:
                    raise refusals.link(here, "this folder") from exc
                raise refusals.not_folder(here) from exc
            if isinstance(exc, FileNotFoundError):
                raise
            raise io_error(exc, here, "opening the folder") from exc
        if not final:
            try:
                _check_folder(os.fstat(fd), here, final=False)
            except BaseException:
                os.close(fd)
                raise
        return fd

    @staticmethod
    def _open_or_make(parent_fd: int, part: str, here: str, *, create: bool) -> int:
        """Open folder ``part``, making it first if it is missing and ``create`` is set.

        In a shared folder someone else may make and remove the same name between our
        ``mkdir`` and ``open``; each such loss is retried, a few times, then refused.
        """
        for _ in range(FOLDER_ATTEMPTS):
            try:
                return os.open(part, _DIR_FLAGS, dir_fd=parent_fd)
            except FileNotFoundError:
                if not create:
                    raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=parent_fd)
        raise refusals.folder_churning(here)
