"""Windows backend: ``msvcrt.locking``, reparse-point checks on opened handles, ``MoveFileExW``.

Windows has no ``dir_fd``: files are opened by full path. So the folder and every
folder above it are opened as handles (``FILE_FLAG_OPEN_REPARSE_POINT`` and
``FILE_FLAG_BACKUP_SEMANTICS``), checked, and held open without delete sharing for
the whole operation, which keeps any of them from being renamed or replaced by a
junction meanwhile. Each file is then opened with ``FILE_FLAG_OPEN_REPARSE_POINT``,
and the checks (reparse tag, link count, owner, final path) are made on that handle
before it becomes a descriptor.

Every raw call goes through one object with the :class:`ledger._winapi.Api`
interface; tests hand :class:`WindowsBackend` a fake of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
from typing import Iterator, List, Optional

from . import _refusals as refusals
from . import _winapi as w
from ._backend import FOLDER_ATTEMPTS, is_temp_of, read_bounded, temp_name, wait_for_lock
from ._winapi import Ace, Api, FileInfo, WinApi, strip_extended_prefix, winerror_of
from .errors import LedgerError, LedgerIOError
from .errors import UnsafePathError
from .protections import Report

__all__ = [
    "WindowsBackend",
    "WindowsFolder",
    "REPLACE_RETRY_SECONDS",
    "is_name_surrogate",
    "is_unc",
    "loose_writers",
]

# How long a replace blocked by another program's open handle is retried.
REPLACE_RETRY_SECONDS = 5.0

LOCK_MECHANISM = "msvcrt.locking"
NO_FOLLOW_MECHANISM = "FILE_FLAG_OPEN_REPARSE_POINT"
FOLDER_MECHANISM = "CreateFileW(OPEN_REPARSE_POINT|BACKUP_SEMANTICS)+GetFinalPathNameByHandleW"
OWNER_MECHANISM = "GetSecurityInfo(owner)"
PERMISSION_MECHANISM = "GetSecurityInfo(DACL)"
LINK_MECHANISM = "GetFileInformationByHandle.nNumberOfLinks"
LOCAL_FS_MECHANISM = "GetDriveTypeW"
TEMP_MECHANISM = "CreateFileW(CREATE_NEW|OPEN_REPARSE_POINT)"
FLUSH_MECHANISM = "FlushFileBuffers"
REPLACE_MECHANISM = "MoveFileExW(REPLACE_EXISTING)"
DURABLE_RENAME_MECHANISM = "MOVEFILE_WRITE_THROUGH"

_LOCK_BYTES = 1
# The note naming the holder sits after the locked byte: others cannot read a locked range.
_HOLDER_OFFSET = 1
_TEMP_ATTEMPTS = 16

# Folders: list/traverse rights make the handle count for sharing, so without
# FILE_SHARE_DELETE nobody can rename or delete the folder while it is held.
_DIR_ACCESS = (w.FILE_LIST_DIRECTORY | w.FILE_TRAVERSE | w.FILE_READ_ATTRIBUTES
               | w.READ_CONTROL | w.SYNCHRONIZE)
_DIR_SHARE = w.FILE_SHARE_READ | w.FILE_SHARE_WRITE
_DIR_FLAGS = w.FILE_FLAG_OPEN_REPARSE_POINT | w.FILE_FLAG_BACKUP_SEMANTICS
_CHECK_ACCESS = w.FILE_READ_ATTRIBUTES | w.READ_CONTROL | w.SYNCHRONIZE
_SHARE_ALL = w.FILE_SHARE_READ | w.FILE_SHARE_WRITE | w.FILE_SHARE_DELETE
_FILE_FLAGS = w.FILE_FLAG_OPEN_REPARSE_POINT | w.FILE_ATTRIBUTE_NORMAL

_WRITE_RIGHTS = (w.FILE_WRITE_DATA | w.FILE_APPEND_DATA | w.FILE_WRITE_EA | w.FILE_DELETE_CHILD
                 | w.FILE_WRITE_ATTRIBUTES | w.DELETE | w.WRITE_DAC | w.WRITE_OWNER
                 | w.GENERIC_WRITE | w.GENERIC_ALL)
_ALLOW_TYPES = (w.ACCESS_ALLOWED_ACE_TYPE, w.ACCESS_ALLOWED_CALLBACK_ACE_TYPE,
                w.ACCESS_ALLOWED_OBJECT_ACE_TYPE, w.ACCESS_ALLOWED_CALLBACK_OBJECT_ACE_TYPE)
_OWNER_RIGHTS = "S-1-3-4"
_LOCAL_DRIVES = {
    w.DRIVE_REMOVABLE: "removable",
    w.DRIVE_FIXED: "fixed",
    w.DRIVE_CDROM: "cdrom",
    w.DRIVE_RAMDISK: "ramdisk",
}
_BLOCKED_REPLACE = (w.ERROR_ACCESS_DENIED, w.ERROR_SHARING_VIOLATION)
_NO_SECURITY_ERRORS = (1, 50)  # ERROR_INVALID_FUNCTION, ERROR_NOT_SUPPORTED


def is_name_surrogate(tag: int) -> bool:
    """Tell whether a reparse tag stands for another name (symlink, junction, mount point)."""
    return bool(tag & w.REPARSE_TAG_NAME_SURROGATE_BIT)


def is_unc(path: str) -> bool:
    r"""Tell whether ``path`` names a network share (``\\server\share``, ``\\?\UNC\...``)."""
    path = strip_extended_prefix(path).replace("/", "\\")
    if path.startswith("\\\\.\\"):
        return path[4:].upper().startswith("UNC\\")
    return path.startswith("\\\\")


def loose_writers(aces: Optional[List[Ace]], user: str) -> List[str]:
    """Return the accounts, other than the user, SYSTEM and Administrators, that may write.

    Only entries that apply to the object itself count (inherit-only ones are for
    its children). A NULL DACL lets everyone do anything.
    """
    if aces is None:
        return [w.SID_EVERYONE]
    trusted = {user, w.SID_SYSTEM, w.SID_ADMINISTRATORS, _OWNER_RIGHTS}
    found: List[str] = []
    for ace in aces:
        if ace.type not in _ALLOW_TYPES or ace.flags & w.INHERIT_ONLY_ACE:
            continue
        if ace.sid in trusted or not ace.mask & _WRITE_RIGHTS:
            continue
        name = ace.sid or "an unnamed account"
        if name not in found:
            found.append(name)
    return found


def _same_path(a: str, b: str) -> bool:
    return os.path.normcase(a.rstrip("\\/")) == os.path.normcase(b.rstrip("\\/"))


def _reparse_error(path: str, tag: int, what: str) -> UnsafePathError:
    if tag == w.IO_REPARSE_TAG_MOUNT_POINT:
        return refusals.link(path, what, "a junction (or mount point)", "junction")
    if tag in (w.IO_REPARSE_TAG_SYMLINK, w.IO_REPARSE_TAG_LX_SYMLINK):
        return refusals.link(path, what)
    return refusals.link(path, what, f"a link (reparse tag {tag:#010x})", "reparse_point")


def _moved(path: str, final: str) -> UnsafePathError:
    return UnsafePathError(
        f"Refusing to use {path}: it now leads to {final}, outside the folder that was checked. "
        "Something changed the path while it was in use; check it and run the command again.",
        path=path,
        reason="path_changed",
    )


def os_error(exc: OSError, path: str, doing: str) -> LedgerError:
    """Turn an ``OSError`` met while ``doing`` something to ``path`` into a ledger error."""
    code = winerror_of(exc)
    if code == w.ERROR_ACCESS_DENIED or (code is None and isinstance(exc, PermissionError)):
        return UnsafePathError(
            f"Permission denied while {doing} {path}. Check that the folder belongs to you "
            "and that you may write to it.",
            path=path,
            reason="permission_denied",
        )
    if code in (w.ERROR_SHARING_VIOLATION, w.ERROR_LOCK_VIOLATION):
        return LedgerIOError(
            f"Could not finish {doing} {path}: another program has it open. The old ledger is "
            "intact; close that program and run the command again.",
            path=path,
            reason="in_use",
        )
    if code in (w.ERROR_DISK_FULL, w.ERROR_HANDLE_DISK_FULL) or exc.errno == errno.ENOSPC:
        return LedgerIOError(
            f"Could not finish {doing} {path}: the disk is full. The old ledger is intact; "
            "free some space and run the command again.",
            path=path,
            reason="io_error:disk_full",
        )
    slug = f"winerror_{code}" if code is not None else errno.errorcode.get(exc.errno or 0, "eio")
    return LedgerIOError(
        f"Could not finish {doing} {path}: {exc.strerror or exc}. The old ledger is intact; "
        "fix the folder, then run the command again.",
        path=path,
        reason=f"io_error:{slug.lower()}",
    )


class _Trust:
    """Decides whether an opened object's owner and DACL are the user's own."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._user: Optional[str] = None
        self._admin: Optional[bool] = None

    @property
    def user(self) -> str:
        if self._user is None:
            self._user = self.api.current_user_sid()
        return self._user

    def _admin_member(self) -> bool:
        if self._admin is None:
            self._admin = self.api.is_admin_member()
        return self._admin

    def check(self, handle: int, path: str, what: str) -> bool:
        """Refuse a foreign owner or other writers; ``False`` if the filesystem keeps no ACLs."""
        try:
            owner = self.api.owner_sid(handle)
            aces = self.api.dacl(handle)
        except OSError as exc:
            if winerror_of(exc) in _NO_SECURITY_ERRORS:
                return False
            raise os_error(exc, path, "checking the owner of") from exc
        # FAT and exFAT keep no owners: the owner reads back as Everyone, open to everyone.
        writers = loose_writers(aces, self.user)
        if owner in ("", w.SID_EVERYONE) and set(writers) <= {w.SID_EVERYONE}:
            return False
        if owner != self.user and not (owner == w.SID_ADMINISTRATORS and self._admin_member()):
            raise UnsafePathError(
                f"Refusing to use {path}: {what} belongs to {owner}, not to you ({self.user}) or "
                "the Administrators you belong to. Use a ledger folder of your own.",
                path=path,
                reason="foreign_owner",
            )
        if writers:
            raise UnsafePathError(
                f"Refusing to use {path}: other accounts may write to {what} "
                f"({', '.join(writers)}). Remove their write access (for example with icacls) "
                "and try again.",
                path=path,
                reason="loose_permissions",
            )
        return True


class WindowsFolder:
    """A ledger folder held open by handle (with every folder above it)."""

    def __init__(self, api: Api, path: str, final: str, handles: List[int], report: Report,
                 trust: Optional[_Trust]) -> None:
        self.api = api
        self.path = path
        self.final = final
        self._handles = handles
        self._report = report
        self._trust = trust

    def _join(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _attributes(self, path: str) -> Optional[int]:
        try:
            return self.api.file_attributes(path)
        except OSError as exc:
            raise os_error(exc, path, "checking") from exc

    def _create(self, path: str, access: int, share: int, disposition: int, flags: int) -> int:
        try:
            return self.api.create_file(path, access | _CHECK_ACCESS, share, disposition, flags)
        except (FileNotFoundError, FileExistsError):
            raise
        except OSError as exc:
            raise os_error(exc, path, "opening") from exc

    def _classify_folder_at(self, path: str) -> UnsafePathError:
        """Say what the folder found at a file's name is: a junction/link, or a plain folder."""
        try:
            handle = self.api.create_file(path, _CHECK_ACCESS, _SHARE_ALL, w.OPEN_EXISTING,
                                          _DIR_FLAGS)
        except OSError:
            return refusals.not_regular(path)
        try:
            info = self.api.file_info(handle)
        except OSError:
            return refusals.not_regular(path)
        finally:
            self.api.close_handle(handle)
        if info.attributes & w.FILE_ATTRIBUTE_REPARSE_POINT and is_name_surrogate(info.reparse_tag):
            return _reparse_error(path, info.reparse_tag, "the file")
        return refusals.not_regular(path)

    def _open_file(self, name: str, access: int, share: int, disposition: int, fd_flags: int,
                   *, check_owner: bool = True) -> int:
        """Open ``name`` without following reparse points, check the handle, return a fd."""
        api = self.api
        path = self._join(name)
        attributes = self._attributes(path)
        if attributes is not None and disposition == w.CREATE_NEW:
            raise w.win_error(w.ERROR_FILE_EXISTS, path)
        if attributes is not None and attributes & w.FILE_ATTRIBUTE_DIRECTORY:
            raise self._classify_folder_at(path)

        handle = self._create(path, access, share, disposition, _FILE_FLAGS)
        try:
            if api.file_type(handle) != w.FILE_TYPE_DISK:
                raise refusals.not_regular(path)
            info = api.file_info(handle)
            if info.attributes & w.FILE_ATTRIBUTE_REPARSE_POINT:
                if is_name_surrogate(info.reparse_tag):
                    raise _reparse_error(path, info.reparse_tag, "the file")
                handle, info = self._reopen_through_filter(path, handle, info, access, share)
            self._check_file(handle, info, path, check_owner)
            fd = api.open_osfhandle(handle, fd_flags)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                api.close_handle(handle)
            if isinstance(exc, OSError) and not isinstance(exc, LedgerError):
                raise os_error(exc, path, "checking") from exc
            raise
        self._report.apply("no_follow", NO_FOLLOW_MECHANISM)
        self._report.apply("link_count", LINK_MECHANISM)
        return fd

    def _reopen_through_filter(self, path: str, handle: int, info: FileInfo, access: int,
                               share: int) -> tuple[int, FileInfo]:
        """Reopen a placeholder (cloud, dedup...) normally, proving it is the same file.

        A handle opened with ``FILE_FLAG_OPEN_REPARSE_POINT`` bypasses the program that
        serves such a file's data, so the data is read through a second, normal handle.
        """
        again = self._create(path, access, share, w.OPEN_EXISTING, w.FILE_ATTRIBUTE_NORMAL)
        try:
            second = self.api.file_info(again)
            if (second.volume, second.file_id) != (info.volume, info.file_id):
                raise _moved(path, self.api.final_path(again))
        except BaseException:
            self.api.close_handle(again)
            raise
        self.api.close_handle(handle)
        self._report.notes.append(
            f"{path} is a placeholder served by another program (reparse tag "
            f"{info.reparse_tag:#010x}); it was read through that program")
        return again, second

    def _check_file(self, handle: int, info: FileInfo, path: str, check_owner: bool) -> None:
        api = self.api
        if info.attributes & (w.FILE_ATTRIBUTE_DIRECTORY | w.FILE_ATTRIBUTE_DEVICE):
            raise refusals.not_regular(path)
        if info.links != 1:
            raise UnsafePathError(
                f"Refusing to use {path}: it has {info.links} hard links, so writing it could "
                "change another file. Remove it and run the command again.",
                path=path,
                reason="hard_link",
            )
        final = api.final_path(handle)
        if not _same_path(os.path.dirname(final), self.final):
            raise _moved(path, final)
        if check_owner and self._trust is not None:
            self._trust.check(handle, path, "it")

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        api = self.api
        path = self._join(name)
        fd = self._open_file(name, w.GENERIC_READ | w.GENERIC_WRITE,
                             w.FILE_SHARE_READ | w.FILE_SHARE_WRITE, w.OPEN_ALWAYS, 0)
        try:
            self._acquire(fd, path, timeout)
            self._report.apply("lock", LOCK_MECHANISM)
            try:
                self._note_holder(fd)
                yield
            finally:
                self._release(fd, path)
        finally:
            api.close(fd)

    def _acquire(self, fd: int, path: str, timeout: float) -> None:
        api = self.api

        def try_lock() -> bool:
            # The locked range starts at the file position: always lock byte 0.
            try:
                api.lseek(fd, 0, os.SEEK_SET)
                api.locking(fd, w.LK_NBLCK, _LOCK_BYTES)
            except PermissionError:
                return False
            except OSError as exc:
                raise os_error(exc, path, "locking") from exc
            return True

        wait_for_lock(try_lock, path, timeout, lambda: self._read_holder(fd),
                      monotonic=api.monotonic, sleep=api.sleep)

    def _release(self, fd: int, path: str) -> None:
        # The unlock must name exactly the locked range, which starts at the file position.
        try:
            self.api.lseek(fd, 0, os.SEEK_SET)
            self.api.locking(fd, w.LK_UNLCK, _LOCK_BYTES)
        except OSError as exc:
            self._report.notes.append(
                f"could not unlock {path} ({exc}); closing it released the lock")

    def _note_holder(self, fd: int) -> None:
        note = f"pid {os.getpid()} on {socket.gethostname()}\n".encode()
        with contextlib.suppress(OSError):
            self.api.truncate(fd, _HOLDER_OFFSET)
            self.api.lseek(fd, _HOLDER_OFFSET, os.SEEK_SET)
            self.api.write(fd, note)

    def _read_holder(self, fd: int) -> str:
        with contextlib.suppress(OSError):
            self.api.lseek(fd, _HOLDER_OFFSET, os.SEEK_SET)
            return self.api.read(fd, 200).decode("utf-8", "replace").strip("\0\n ")
        return ""

    def read(self, name: str, max_bytes: int) -> Optional[bytes]:
        api = self.api
        path = self._join(name)
        try:
            fd = self._open_file(name, w.GENERIC_READ, _SHARE_ALL, w.OPEN_EXISTING, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return read_bounded(lambda size: api.read(fd, size), path, max_bytes)
        except OSError as exc:
            raise os_error(exc, path, "reading") from exc
        finally:
            api.close(fd)

    def replace(self, name: str, data: bytes) -> None:
        api = self.api
        path = self._join(name)
        self._refuse_read_only(path)
        tmp_name, fd = self._create_temp(name)
        tmp = self._join(tmp_name)
        try:
            try:
                done = 0
                while done < len(data):
                    done += api.write(fd, data[done:])
                api.flush(fd)
            finally:
                api.close(fd)
            self._report.apply("durable_write", FLUSH_MECHANISM)
            self._move(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                api.delete_file(tmp)
            if isinstance(exc, OSError) and not isinstance(exc, LedgerError):
                raise os_error(exc, path, "writing") from exc
            raise
        self._report.apply("atomic_replace", REPLACE_MECHANISM)
        self._report.apply("durable_rename", DURABLE_RENAME_MECHANISM)

    def _refuse_read_only(self, path: str) -> None:
        attributes = self._attributes(path)
        if attributes is None or not attributes & w.FILE_ATTRIBUTE_READONLY:
            return
        if attributes & w.FILE_ATTRIBUTE_DIRECTORY:
            raise self._classify_folder_at(path)
        raise LedgerIOError(
            f"{path} is marked read-only, so it was not replaced; the old ledger is intact. "
            f"If it should be writable, run 'attrib -R \"{path}\"' and run the command again.",
            path=path,
            reason="read_only",
        )

    def _create_temp(self, name: str) -> tuple[str, int]:
        for _ in range(_TEMP_ATTEMPTS):
            tmp = temp_name(name)
            try:
                fd = self._open_file(tmp, w.GENERIC_WRITE, w.FILE_SHARE_READ, w.CREATE_NEW, 0,
                                     check_owner=False)
            except FileExistsError:
                continue
            self._report.apply("exclusive_temp", TEMP_MECHANISM)
            return tmp, fd
        raise refusals.temp_names_taken(self.path)

    def _move(self, tmp: str, path: str) -> None:
        """Put ``tmp`` in place of ``path``, retrying while another program blocks it."""
        api = self.api
        deadline = api.monotonic() + REPLACE_RETRY_SECONDS
        delay = 0.01
        while True:
            try:
                api.move_file(tmp, path, w.MOVEFILE_REPLACE_EXISTING | w.MOVEFILE_WRITE_THROUGH)
                return
            except OSError as exc:
                code = winerror_of(exc)
                if code not in _BLOCKED_REPLACE:
                    raise
                self._refuse_read_only(path)
                remaining = deadline - api.monotonic()
                if remaining <= 0:
                    raise LedgerIOError(
                        f"Could not replace {path}: another program kept it open without delete "
                        f"sharing for {REPLACE_RETRY_SECONDS:g} s (WinError {code}). The old "
                        "ledger is intact and the new content was not written; close that "
                        "program and run the command again.",
                        path=path,
                        reason="replace_blocked",
                    ) from exc
                api.sleep(min(delay, remaining) * (0.5 + secrets.randbelow(1000) / 1000))
                delay = min(delay * 2, 0.25)

    def remove_stale_temps(self, name: str) -> list[str]:
        try:
            entries = self.api.list_directory(self.path)
        except OSError:
            return []
        removed = []
        for entry in entries:
            if not is_temp_of(entry, name):
                continue
            try:
                self.api.delete_file(self._join(entry))
            except OSError:
                continue
            removed.append(entry)
        return removed

    def open_append(self, name: str) -> int:
        return self._open_file(name, w.FILE_APPEND_DATA, _SHARE_ALL, w.OPEN_ALWAYS, os.O_APPEND)

    def close(self) -> None:
        while self._handles:
            handle = self._handles.pop()
            with contextlib.suppress(OSError):
                self.api.close_handle(handle)


class WindowsBackend:
    """Secure and strict modes on Windows.

    Args:
        api: The Win32 calls to use; the real ones by default, a fake in tests.
    """

    name = "windows"

    def __init__(self, api: Optional[Api] = None) -> None:
        self.api: Api = api if api is not None else WinApi()

    def capabilities(self) -> dict[str, Optional[str]]:
        security = self.api.supports("security")
        return {
            "lock": LOCK_MECHANISM if self.api.supports("lock") else None,
            "no_follow": NO_FOLLOW_MECHANISM,
            "folder_check": FOLDER_MECHANISM,
            "owner_check": OWNER_MECHANISM if security else None,
            "permission_check": PERMISSION_MECHANISM if security else None,
            "link_count": LINK_MECHANISM,
            "local_fs": LOCAL_FS_MECHANISM if self.api.supports("volume") else None,
            "exclusive_temp": TEMP_MECHANISM,
            "durable_write": FLUSH_MECHANISM,
            "atomic_replace": REPLACE_MECHANISM,
            "durable_rename": DURABLE_RENAME_MECHANISM,
        }

    def open_folder(self, path: str, *, create: bool, report: Report) -> WindowsFolder:
        path = os.path.abspath(os.path.expanduser(path))
        drive, rest = os.path.splitdrive(path)
        anchor = drive + os.sep
        if os.altsep:
            rest = rest.replace(os.altsep, os.sep)
        parts = [part for part in rest.split(os.sep) if part]

        handles: List[int] = []
        try:
            handle, final = self._open_dir(anchor, None, create=False, report=report)
            handles.append(handle)
            here = anchor
            for part in parts:
                here = os.path.join(here, part)
                handle, final = self._open_dir(here, final, create=create, report=report)
                handles.append(handle)
            trust = self._check_security(handle, path, report)
        except BaseException:
            for handle in reversed(handles):
                with contextlib.suppress(OSError):
                    self.api.close_handle(handle)
            raise

        report.apply("folder_check", FOLDER_MECHANISM)
        self._check_filesystem(path, final, report)
        return WindowsFolder(self.api, path, final, handles, report, trust)

    def _open_dir(self, here: str, parent_final: Optional[str], *, create: bool,
                  report: Report) -> tuple[int, str]:
        """Open folder ``here`` as a handle that pins it, and check that handle."""
        api = self.api
        handle = self._open_or_make(here, create=create)
        try:
            info = api.file_info(handle)
            if info.attributes & w.FILE_ATTRIBUTE_REPARSE_POINT:
                if is_name_surrogate(info.reparse_tag):
                    raise _reparse_error(here, info.reparse_tag, "this folder")
                report.notes.append(f"{here} is served by another program (reparse tag "
                                    f"{info.reparse_tag:#010x})")
            if not info.attributes & w.FILE_ATTRIBUTE_DIRECTORY:
                raise refusals.not_folder(here)
            final = api.final_path(handle)
            if parent_final is not None and not _same_path(os.path.dirname(final), parent_final):
                raise _moved(here, final)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                api.close_handle(handle)
            if isinstance(exc, OSError) and not isinstance(exc, LedgerError):
                raise os_error(exc, here, "checking the folder") from exc
            raise
        return handle, final

    def _open_or_make(self, here: str, *, create: bool) -> int:
        """Open folder ``here`` as a handle, making it first if it is missing and ``create``.

        Someone else may make and remove the same name between our create and open; each
        such loss is retried, a few times, then refused.
        """
        api = self.api
        for _ in range(FOLDER_ATTEMPTS):
            try:
                attributes = api.file_attributes(here)
            except OSError as exc:
                raise os_error(exc, here, "checking the folder") from exc
            if attributes is None:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "No such folder", here)
                try:
                    api.create_directory(here)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise os_error(exc, here, "creating the folder") from exc
            elif not attributes & w.FILE_ATTRIBUTE_DIRECTORY:
                raise refusals.not_folder(here)
            try:
                return api.create_file(here, _DIR_ACCESS, _DIR_SHARE, w.OPEN_EXISTING,
                                       _DIR_FLAGS)
            except FileNotFoundError:
                if not create:
                    raise
            except OSError as exc:
                raise os_error(exc, here, "opening the folder") from exc
        raise refusals.folder_churning(here)

    def _check_security(self, handle: int, path: str, report: Report) -> Optional[_Trust]:
        if not self.api.supports("security"):
            return None
        trust = _Trust(self.api)
        if not trust.check(handle, path, "the folder"):
            note = f"{path} is on a filesystem that records no owners or permissions"
            report.lack("owner_check", note)
            report.lack("permission_check")
            return None
        report.apply("owner_check", OWNER_MECHANISM)
        report.apply("permission_check", PERMISSION_MECHANISM)
        return trust

    def _check_filesystem(self, path: str, final: str, report: Report) -> None:
        if is_unc(path) or is_unc(final):
            report.lack("local_fs", f"{path} is on a network share")
            return
        if not self.api.supports("volume"):
            return
        try:
            kind = self.api.drive_type(self.api.volume_root(final))
        except OSError:
            report.lack("local_fs", f"could not tell whether {path} is on a local drive")
            return
        if kind == w.DRIVE_REMOTE:
            report.lack("local_fs", f"{path} is on a network drive")
        elif kind in _LOCAL_DRIVES:
            report.apply("local_fs", f"{LOCAL_FS_MECHANISM}:{_LOCAL_DRIVES[kind]}")
        else:
            report.lack("local_fs", f"could not tell whether {path} is on a local drive")
