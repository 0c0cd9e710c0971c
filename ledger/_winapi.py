"""The one module that calls ``msvcrt`` and the Win32 API (through ``ctypes``) directly.

Everything here is a thin wrapper that turns a Win32 call into Python values and a
failed call into an ``OSError`` carrying ``winerror``. The decisions (what to
refuse, what to retry, what to report) live in :mod:`ledger._windows`, which talks
to this module through one object with the :class:`Api` interface, so tests can
hand it ``tests/fake_winapi.py`` instead.

The module imports on every OS; the Win32 bindings are loaded on first use, and
only on Windows.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from typing import Any, List, NamedTuple, Optional

if sys.version_info >= (3, 8):
    from typing import Protocol
else:  # pragma: no cover
    from typing_extensions import Protocol

__all__ = [
    "Api",
    "Ace",
    "FileInfo",
    "WinApi",
    "program_data_folder",
    "strip_extended_prefix",
    "win_error",
    "winerror_of",
]

# Access rights (winnt.h).
FILE_READ_DATA = 0x0001
FILE_LIST_DIRECTORY = 0x0001
FILE_WRITE_DATA = 0x0002
FILE_ADD_FILE = 0x0002
FILE_APPEND_DATA = 0x0004
FILE_ADD_SUBDIRECTORY = 0x0004
FILE_WRITE_EA = 0x0010
FILE_EXECUTE = 0x0020
FILE_TRAVERSE = 0x0020
FILE_DELETE_CHILD = 0x0040
FILE_READ_ATTRIBUTES = 0x0080
FILE_WRITE_ATTRIBUTES = 0x0100
DELETE = 0x00010000
READ_CONTROL = 0x00020000
WRITE_DAC = 0x00040000
WRITE_OWNER = 0x00080000
SYNCHRONIZE = 0x00100000
GENERIC_ALL = 0x10000000
GENERIC_WRITE = 0x40000000
GENERIC_READ = 0x80000000

# Share modes.
FILE_SHARE_READ = 0x1
FILE_SHARE_WRITE = 0x2
FILE_SHARE_DELETE = 0x4

# Creation dispositions.
CREATE_NEW = 1
CREATE_ALWAYS = 2
OPEN_EXISTING = 3
OPEN_ALWAYS = 4

# File attributes and CreateFileW flags.
FILE_ATTRIBUTE_READONLY = 0x1
FILE_ATTRIBUTE_DIRECTORY = 0x10
FILE_ATTRIBUTE_ARCHIVE = 0x20
FILE_ATTRIBUTE_DEVICE = 0x40
FILE_ATTRIBUTE_NORMAL = 0x80
FILE_ATTRIBUTE_REPARSE_POINT = 0x400
FILE_FLAG_BACKUP_SEMANTICS = 0x02000000
FILE_FLAG_OPEN_REPARSE_POINT = 0x00200000

# Reparse tags (bit 29 marks a name surrogate: the entry stands for another name).
REPARSE_TAG_NAME_SURROGATE_BIT = 0x20000000
IO_REPARSE_TAG_MOUNT_POINT = 0xA0000003
IO_REPARSE_TAG_SYMLINK = 0xA000000C
IO_REPARSE_TAG_LX_SYMLINK = 0xA000001D
IO_REPARSE_TAG_CLOUD = 0x9000001A
IO_REPARSE_TAG_CLOUD_MASK = 0x0000F000

# GetFileType results.
FILE_TYPE_UNKNOWN = 0
FILE_TYPE_DISK = 1
FILE_TYPE_CHAR = 2
FILE_TYPE_PIPE = 3

# MoveFileExW flags.
MOVEFILE_REPLACE_EXISTING = 0x1
MOVEFILE_WRITE_THROUGH = 0x8

# GetDriveTypeW results.
DRIVE_UNKNOWN = 0
DRIVE_NO_ROOT_DIR = 1
DRIVE_REMOVABLE = 2
DRIVE_FIXED = 3
DRIVE_REMOTE = 4
DRIVE_CDROM = 5
DRIVE_RAMDISK = 6

# msvcrt.locking modes (<sys/locking.h>).
LK_UNLCK = 0
LK_LOCK = 1
LK_NBLCK = 2
LK_RLCK = 3
LK_NBRLCK = 4

# ACE types and flags.
ACCESS_ALLOWED_ACE_TYPE = 0
ACCESS_DENIED_ACE_TYPE = 1
ACCESS_ALLOWED_OBJECT_ACE_TYPE = 5
ACCESS_ALLOWED_CALLBACK_ACE_TYPE = 9
ACCESS_ALLOWED_CALLBACK_OBJECT_ACE_TYPE = 11
INHERIT_ONLY_ACE = 0x08

# Well-known SIDs.
SID_SYSTEM = "S-1-5-18"
SID_ADMINISTRATORS = "S-1-5-32-544"
SID_EVERYONE = "S-1-1-0"
SID_AUTHENTICATED_USERS = "S-1-5-11"
SID_USERS = "S-1-5-32-545"

# Win32 error codes the backend reacts to.
ERROR_FILE_NOT_FOUND = 2
ERROR_PATH_NOT_FOUND = 3
ERROR_ACCESS_DENIED = 5
ERROR_SHARING_VIOLATION = 32
ERROR_LOCK_VIOLATION = 33
ERROR_HANDLE_DISK_FULL = 39
ERROR_FILE_EXISTS = 80
ERROR_DISK_FULL = 112
ERROR_NOT_LOCKED = 158
ERROR_ALREADY_EXISTS = 183

# Win32 error -> errno, following CPython's PC/errmap.h for the codes used here.
_ERRNO_OF = {
    2: errno.ENOENT,
    3: errno.ENOENT,
    5: errno.EACCES,
    6: errno.EBADF,
    17: errno.EXDEV,
    19: errno.EACCES,
    32: errno.EACCES,
    33: errno.EACCES,
    39: errno.ENOSPC,
    80: errno.EEXIST,
    87: errno.EINVAL,
    112: errno.ENOSPC,
    145: errno.ENOTEMPTY,
    158: errno.EACCES,
    183: errno.EEXIST,
    267: errno.ENOTDIR,
}

_TEXT_OF = {
    2: "The system cannot find the file specified",
    3: "The system cannot find the path specified",
    5: "Access is denied",
    32: "The process cannot access the file because it is being used by another process",
    33: "The process cannot access the file because another process has locked a portion "
        "of the file",
    39: "The disk is full",
    80: "The file exists",
    112: "There is not enough space on the disk",
    158: "The segment is already unlocked",
    183: "Cannot create a file when that file already exists",
}


class FileInfo(NamedTuple):
    """What ``GetFileInformationByHandle(Ex)`` says about an open handle.

    Attributes:
        attributes: ``FILE_ATTRIBUTE_*`` bits of the object behind the handle.
        reparse_tag: The reparse tag, or 0 when the object is not a reparse point.
        links: Number of hard links (``nNumberOfLinks``).
        volume: Volume serial number.
        file_id: 64-bit file index; with ``volume`` it names the file on this machine.
    """

    attributes: int
    reparse_tag: int
    links: int
    volume: int
    file_id: int


class Ace(NamedTuple):
    """One access control entry of a DACL, as the backend needs it."""

    type: int
    flags: int
    mask: int
    sid: str


def win_error(code: int, path: Optional[str] = None, path2: Optional[str] = None,
              text: Optional[str] = None) -> OSError:
    """Build the ``OSError`` Python raises for Win32 error ``code``, on any OS.

    On Windows this is exactly what CPython builds (the subclass follows the
    errno that ``code`` maps to). Elsewhere (for the fake) the same subclass is
    built from the same mapping, and ``winerror`` is set by hand.
    """
    message = text or _TEXT_OF.get(code, f"Windows error {code}")
    if sys.platform == "win32":
        return OSError(None, message, path, code, path2)
    exc = OSError(_ERRNO_OF.get(code, errno.EINVAL), message, path, None, path2)
    setattr(exc, "winerror", code)
    return exc


def winerror_of(exc: BaseException) -> Optional[int]:
    """Return the Win32 error code an exception carries, if any."""
    code = getattr(exc, "winerror", None)
    return code if isinstance(code, int) else None


def strip_extended_prefix(path: str) -> str:
    r"""Turn ``\\?\C:\x`` into ``C:\x`` and ``\\?\UNC\srv\share`` into ``\\srv\share``."""
    if path.startswith("\\\\?\\UNC\\"):
        return "\\\\" + path[len("\\\\?\\UNC\\"):]
    if path.startswith("\\\\?\\"):
        return path[len("\\\\?\\"):]
    return path


class Api(Protocol):
    """The calls :mod:`ledger._windows` makes; :class:`WinApi` and the test fake provide them."""

    def supports(self, feature: str) -> bool:
        """Tell whether ``"lock"``, ``"security"`` or ``"volume"`` calls work here."""

    def create_file(self, path: str, access: int, share: int, disposition: int,
                    flags: int) -> int:
        """``CreateFileW``; return the handle."""

    def close_handle(self, handle: int) -> None:
        """``CloseHandle`` (only for handles not given to a descriptor)."""

    def file_info(self, handle: int) -> FileInfo:
        """Attributes, reparse tag, link count and file id of an open handle."""

    def file_type(self, handle: int) -> int:
        """``GetFileType``: disk file, character device, pipe or unknown."""

    def file_attributes(self, path: str) -> Optional[int]:
        """``GetFileAttributesW`` on a path, ``None`` if nothing is there."""

    def final_path(self, handle: int) -> str:
        """``GetFinalPathNameByHandleW`` without the ``\\\\?\\`` prefix."""

    def owner_sid(self, handle: int) -> str:
        """Owner of the object behind ``handle`` as a string SID (``""`` if it has none)."""

    def dacl(self, handle: int) -> Optional[List[Ace]]:
        """Entries of the object's DACL; ``None`` for a NULL DACL (everyone may do anything)."""

    def current_user_sid(self) -> str:
        """SID of the user this process runs as."""

    def is_admin_member(self) -> bool:
        """Tell whether this process's token counts as a member of BUILTIN\\Administrators."""

    def volume_root(self, path: str) -> str:
        """``GetVolumePathNameW``: the root of the volume holding ``path``."""

    def drive_type(self, root: str) -> int:
        """``GetDriveTypeW`` of a volume root."""

    def open_osfhandle(self, handle: int, flags: int) -> int:
        """Give ``handle`` to a new C runtime descriptor, which then owns it."""

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        """``msvcrt.locking``: the range starts at the descriptor's current position."""

    def lseek(self, fd: int, pos: int, how: int) -> int:
        """Move the descriptor's file position."""

    def read(self, fd: int, size: int) -> bytes:
        """Read from the descriptor's position."""

    def write(self, fd: int, data: bytes) -> int:
        """Write at the descriptor's position; return how many bytes were written."""

    def truncate(self, fd: int, size: int) -> None:
        """Cut the file to ``size`` bytes."""

    def flush(self, fd: int) -> None:
        """``FlushFileBuffers`` on the descriptor's handle."""

    def close(self, fd: int) -> None:
        """Close a descriptor (and the handle it owns)."""

    def move_file(self, src: str, dst: str, flags: int) -> None:
        """``MoveFileExW``."""

    def delete_file(self, path: str) -> None:
        """``DeleteFileW``."""

    def create_directory(self, path: str) -> None:
        """Create a folder, private to the user where the runtime supports it."""

    def list_directory(self, path: str) -> List[str]:
        """Names in a folder."""

    def monotonic(self) -> float:
        """Seconds from a clock that never goes back."""

    def sleep(self, seconds: float) -> None:
        """Wait."""


if sys.platform == "win32":
    import ctypes
    import msvcrt
    from ctypes import wintypes

    class _ByHandleFileInformation(ctypes.Structure):
        _fields_ = [
            ("dwFileAttributes", wintypes.DWORD),
            ("ftCreationTime", wintypes.FILETIME),
            ("ftLastAccessTime", wintypes.FILETIME),
            ("ftLastWriteTime", wintypes.FILETIME),
            ("dwVolumeSerialNumber", wintypes.DWORD),
            ("nFileSizeHigh", wintypes.DWORD),
            ("nFileSizeLow", wintypes.DWORD),
            ("nNumberOfLinks", wintypes.DWORD),
            ("nFileIndexHigh", wintypes.DWORD),
            ("nFileIndexLow", wintypes.DWORD),
        ]

    class _FileAttributeTagInfo(ctypes.Structure):
        _fields_ = [("FileAttributes", wintypes.DWORD), ("ReparseTag", wintypes.DWORD)]

    class _AclSizeInformation(ctypes.Structure):
        _fields_ = [
            ("AceCount", wintypes.DWORD),
            ("AclBytesInUse", wintypes.DWORD),
            ("AclBytesFree", wintypes.DWORD),
        ]

    class _AceHeader(ctypes.Structure):
        _fields_ = [("AceType", ctypes.c_ubyte), ("AceFlags", ctypes.c_ubyte),
                    ("AceSize", wintypes.WORD)]

    class _Guid(ctypes.Structure):
        _fields_ = [
            ("Data1", wintypes.DWORD),
            ("Data2", wintypes.WORD),
            ("Data3", wintypes.WORD),
            ("Data4", ctypes.c_ubyte * 8),
        ]

    _FILE_ATTRIBUTE_TAG_INFO_CLASS = 9
    _ACL_SIZE_INFORMATION_CLASS = 2
    _SE_FILE_OBJECT = 1
    _OWNER_SECURITY_INFORMATION = 0x1
    _DACL_SECURITY_INFORMATION = 0x4
    _TOKEN_QUERY = 0x0008
    _TOKEN_USER_CLASS = 1
    _INVALID_HANDLE = ctypes.c_void_p(-1).value
    _INVALID_FILE_ATTRIBUTES = 0xFFFFFFFF

    class _Dlls:
        """The Win32 functions used here, with argument and result types declared."""

        def __init__(self) -> None:
            k32 = ctypes.WinDLL("kernel32", use_last_error=True)
            adv = ctypes.WinDLL("advapi32", use_last_error=True)
            h, d, b = wintypes.HANDLE, wintypes.DWORD, wintypes.BOOL
            p, s, ps = ctypes.c_void_p, wintypes.LPCWSTR, ctypes.POINTER(ctypes.c_void_p)
            self.CreateFileW = _bind(k32.CreateFileW, [s, d, d, p, d, d, h], h)
            self.CloseHandle = _bind(k32.CloseHandle, [h], b)
            self.GetFileInformationByHandle = _bind(
                k32.GetFileInformationByHandle, [h, ctypes.POINTER(_ByHandleFileInformation)], b)
            self.GetFileInformationByHandleEx = _bind(
                k32.GetFileInformationByHandleEx, [h, ctypes.c_int, p, d], b)
            self.GetFileType = _bind(k32.GetFileType, [h], d)
            self.GetFileAttributesW = _bind(k32.GetFileAttributesW, [s], d)
            self.GetFinalPathNameByHandleW = _bind(
                k32.GetFinalPathNameByHandleW, [h, wintypes.LPWSTR, d, d], d)
            self.MoveFileExW = _bind(k32.MoveFileExW, [s, s, d], b)
            self.FlushFileBuffers = _bind(k32.FlushFileBuffers, [h], b)
            self.GetDriveTypeW = _bind(k32.GetDriveTypeW, [s], wintypes.UINT)
            self.GetVolumePathNameW = _bind(
                k32.GetVolumePathNameW, [s, wintypes.LPWSTR, d], b)
            self.GetCurrentProcess = _bind(k32.GetCurrentProcess, [], h)
            self.LocalFree = _bind(k32.LocalFree, [p], p)
            self.GetSecurityInfo = _bind(
                adv.GetSecurityInfo, [h, ctypes.c_int, d, ps, ps, ps, ps, ps], d)
            self.OpenProcessToken = _bind(
                adv.OpenProcessToken, [h, d, ctypes.POINTER(wintypes.HANDLE)], b)
            self.GetTokenInformation = _bind(
                adv.GetTokenInformation, [h, ctypes.c_int, p, d, ctypes.POINTER(d)], b)
            self.ConvertSidToStringSidW = _bind(
                adv.ConvertSidToStringSidW, [p, ctypes.POINTER(ctypes.c_void_p)], b)
            self.ConvertStringSidToSidW = _bind(adv.ConvertStringSidToSidW, [s, ps], b)
            self.CheckTokenMembership = _bind(
                adv.CheckTokenMembership, [h, p, ctypes.POINTER(b)], b)
            self.GetAclInformation = _bind(
                adv.GetAclInformation, [p, p, d, ctypes.c_int], b)
            self.GetAce = _bind(adv.GetAce, [p, d, ps], b)

    def _bind(func: Any, argtypes: List[Any], restype: Any) -> Any:
        func.argtypes = argtypes
        func.restype = restype
        return func

    _DLLS: Optional[_Dlls] = None

    def _dlls() -> _Dlls:
        global _DLLS
        if _DLLS is None:
            _DLLS = _Dlls()
        return _DLLS

    def _last_error(path: Optional[str] = None, path2: Optional[str] = None) -> OSError:
        code = ctypes.get_last_error()
        return win_error(code, path, path2, ctypes.FormatError(code).strip())

    def _sid_string(sid: Optional[int]) -> str:
        dlls = _dlls()
        text = ctypes.c_void_p()
        if not dlls.ConvertSidToStringSidW(sid, ctypes.byref(text)):
            raise _last_error()
        try:
            return ctypes.wstring_at(text.value or 0)
        finally:
            dlls.LocalFree(text)

    def _ace_sid_offset(ace_type: int, address: int) -> Optional[int]:
        """Byte offset of the SID inside an ACE, or ``None`` for kinds that carry none here."""
        if ace_type in (ACCESS_ALLOWED_ACE_TYPE, ACCESS_DENIED_ACE_TYPE,
                        ACCESS_ALLOWED_CALLBACK_ACE_TYPE):
            return 8
        if ace_type in (ACCESS_ALLOWED_OBJECT_ACE_TYPE, ACCESS_ALLOWED_CALLBACK_OBJECT_ACE_TYPE):
            present = ctypes.c_uint32.from_address(address + 8).value
            return 12 + 16 * bool(present & 1) + 16 * bool(present & 2)
        return None

    def _security(handle: int, what: int) -> tuple[int, int, int]:
        """``GetSecurityInfo``: (owner SID, DACL, descriptor to free with ``LocalFree``)."""
        owner, dacl, descriptor = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        code = int(_dlls().GetSecurityInfo(
            handle, _SE_FILE_OBJECT, what, ctypes.byref(owner), None, ctypes.byref(dacl),
            None, ctypes.byref(descriptor)))
        if code != 0:
            raise win_error(code, text=ctypes.FormatError(code).strip())
        return owner.value or 0, dacl.value or 0, descriptor.value or 0

    def _read_acl(acl: int) -> List[Ace]:
        dlls = _dlls()
        size = _AclSizeInformation()
        if not dlls.GetAclInformation(acl, ctypes.byref(size), ctypes.sizeof(size),
                                      _ACL_SIZE_INFORMATION_CLASS):
            raise _last_error()
        entries = []
        for index in range(int(size.AceCount)):
            pointer = ctypes.c_void_p()
            if not dlls.GetAce(acl, index, ctypes.byref(pointer)):
                raise _last_error()
            address = pointer.value or 0
            header = _AceHeader.from_address(address)
            mask = ctypes.c_uint32.from_address(address + 4).value
            offset = _ace_sid_offset(int(header.AceType), address)
            sid = _sid_string(address + offset) if offset is not None else ""
            entries.append(Ace(int(header.AceType), int(header.AceFlags), int(mask), sid))
        return entries

    def _known_folder(folder: tuple[int, int, int, tuple[int, ...]]) -> str:
        """``SHGetKnownFolderPath`` for the folder whose GUID parts are given."""
        shell32 = ctypes.WinDLL("shell32")
        ole32 = ctypes.WinDLL("ole32")
        get_path = _bind(shell32.SHGetKnownFolderPath,
                         [ctypes.POINTER(_Guid), wintypes.DWORD, wintypes.HANDLE,
                          ctypes.POINTER(ctypes.c_void_p)], ctypes.c_long)
        free = _bind(ole32.CoTaskMemFree, [ctypes.c_void_p], None)
        folder_id = _Guid(folder[0], folder[1], folder[2], (ctypes.c_ubyte * 8)(*folder[3]))
        out = ctypes.c_void_p()
        result = int(get_path(ctypes.byref(folder_id), 0, None, ctypes.byref(out)))
        try:
            if result != 0:
                raise OSError(f"SHGetKnownFolderPath failed: "
                              f"HRESULT {result & 0xFFFFFFFF:#010x}")
            return str(ctypes.wstring_at(out.value or 0))
        finally:
            free(out)


class WinApi:
    """The real calls. Constructing one works everywhere; calling one works on Windows."""

    def supports(self, feature: str) -> bool:
        if sys.platform == "win32":
            try:
                _dlls()
            except (OSError, AttributeError):
                return False
            return feature in ("lock", "security", "volume")
        return False

    def create_file(self, path: str, access: int, share: int, disposition: int,
                    flags: int) -> int:
        if sys.platform == "win32":
            handle = _dlls().CreateFileW(path, access, share, None, disposition, flags, None)
            if handle is None or handle == _INVALID_HANDLE:
                raise _last_error(path)
            return int(handle)
        raise _not_windows()

    def close_handle(self, handle: int) -> None:
        if sys.platform == "win32":
            if not _dlls().CloseHandle(handle):
                raise _last_error()
            return
        raise _not_windows()

    def file_info(self, handle: int) -> FileInfo:
        if sys.platform == "win32":
            dlls = _dlls()
            info = _ByHandleFileInformation()
            if not dlls.GetFileInformationByHandle(handle, ctypes.byref(info)):
                raise _last_error()
            tag = _FileAttributeTagInfo()
            if not dlls.GetFileInformationByHandleEx(handle, _FILE_ATTRIBUTE_TAG_INFO_CLASS,
                                                     ctypes.byref(tag), ctypes.sizeof(tag)):
                raise _last_error()
            reparse = int(tag.FileAttributes) & FILE_ATTRIBUTE_REPARSE_POINT
            return FileInfo(
                attributes=int(info.dwFileAttributes) | reparse,
                reparse_tag=int(tag.ReparseTag) if reparse else 0,
                links=int(info.nNumberOfLinks),
                volume=int(info.dwVolumeSerialNumber),
                file_id=(int(info.nFileIndexHigh) << 32) | int(info.nFileIndexLow),
            )
        raise _not_windows()

    def file_type(self, handle: int) -> int:
        if sys.platform == "win32":
            return int(_dlls().GetFileType(handle))
        raise _not_windows()

    def file_attributes(self, path: str) -> Optional[int]:
        if sys.platform == "win32":
            attributes = int(_dlls().GetFileAttributesW(path))
            if attributes != _INVALID_FILE_ATTRIBUTES:
                return attributes
            error = _last_error(path)
            if winerror_of(error) in (ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND):
                return None
            raise error
        raise _not_windows()

    def final_path(self, handle: int) -> str:
        if sys.platform == "win32":
            size = 512
            while True:
                buffer = ctypes.create_unicode_buffer(size)
                needed = int(_dlls().GetFinalPathNameByHandleW(handle, buffer, size, 0))
                if needed == 0:
                    raise _last_error()
                if needed < size:
                    return strip_extended_prefix(buffer.value)
                size = needed + 1
        raise _not_windows()

    def owner_sid(self, handle: int) -> str:
        if sys.platform == "win32":
            owner, _, descriptor = _security(handle, _OWNER_SECURITY_INFORMATION)
            try:
                return _sid_string(owner) if owner else ""
            finally:
                _dlls().LocalFree(descriptor)
        raise _not_windows()

    def dacl(self, handle: int) -> Optional[List[Ace]]:
        if sys.platform == "win32":
            dlls = _dlls()
            _, acl, descriptor = _security(handle, _DACL_SECURITY_INFORMATION)
            try:
                return _read_acl(acl) if acl else None
            finally:
                dlls.LocalFree(descriptor)
        raise _not_windows()

    def current_user_sid(self) -> str:
        if sys.platform == "win32":
            dlls = _dlls()
            token = wintypes.HANDLE()
            if not dlls.OpenProcessToken(dlls.GetCurrentProcess(), _TOKEN_QUERY,
                                         ctypes.byref(token)):
                raise _last_error()
            try:
                needed = wintypes.DWORD(0)
                dlls.GetTokenInformation(token, _TOKEN_USER_CLASS, None, 0,
                                         ctypes.byref(needed))
                buffer = ctypes.create_string_buffer(max(int(needed.value), 64))
                if not dlls.GetTokenInformation(token, _TOKEN_USER_CLASS, buffer,
                                                ctypes.sizeof(buffer), ctypes.byref(needed)):
                    raise _last_error()
                # TOKEN_USER starts with SID_AND_ATTRIBUTES, whose first field is the SID.
                return _sid_string(ctypes.c_void_p.from_buffer(buffer).value)
            finally:
                dlls.CloseHandle(token)
        raise _not_windows()

    def is_admin_member(self) -> bool:
        if sys.platform == "win32":
            dlls = _dlls()
            sid = ctypes.c_void_p()
            if not dlls.ConvertStringSidToSidW(SID_ADMINISTRATORS, ctypes.byref(sid)):
                raise _last_error()
            try:
                member = wintypes.BOOL()
                if not dlls.CheckTokenMembership(None, sid, ctypes.byref(member)):
                    raise _last_error()
                return bool(member.value)
            finally:
                dlls.LocalFree(sid)
        raise _not_windows()

    def volume_root(self, path: str) -> str:
        if sys.platform == "win32":
            size = max(len(path) + 2, 300)
            buffer = ctypes.create_unicode_buffer(size)
            if not _dlls().GetVolumePathNameW(path, buffer, size):
                raise _last_error(path)
            return buffer.value
        raise _not_windows()

    def drive_type(self, root: str) -> int:
        if sys.platform == "win32":
            return int(_dlls().GetDriveTypeW(root))
        raise _not_windows()

    def open_osfhandle(self, handle: int, flags: int) -> int:
        if sys.platform == "win32":
            return msvcrt.open_osfhandle(handle, flags)
        raise _not_windows()

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        if sys.platform == "win32":
            msvcrt.locking(fd, mode, nbytes)
            return
        raise _not_windows()

    def lseek(self, fd: int, pos: int, how: int) -> int:
        return os.lseek(fd, pos, how)

    def read(self, fd: int, size: int) -> bytes:
        return os.read(fd, size)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def flush(self, fd: int) -> None:
        if sys.platform == "win32":
            if not _dlls().FlushFileBuffers(msvcrt.get_osfhandle(fd)):
                raise _last_error()
            return
        raise _not_windows()

    def close(self, fd: int) -> None:
        os.close(fd)

    def move_file(self, src: str, dst: str, flags: int) -> None:
        if sys.platform == "win32":
            if not _dlls().MoveFileExW(src, dst, flags):
                raise _last_error(src, dst)
            return
        raise _not_windows()

    def delete_file(self, path: str) -> None:
        os.unlink(path)

    def create_directory(self, path: str) -> None:
        # Python 3.13 (and 3.12.4) give mode 0o700 a meaning on Windows: only the owner.
        os.mkdir(path, 0o700)

    def list_directory(self, path: str) -> List[str]:
        return os.listdir(path)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _not_windows() -> OSError:
    return OSError(errno.ENOSYS, "this call exists only on Windows")


def program_data_folder() -> str:
    """Return the machine's ProgramData folder (``FOLDERID_ProgramData``).

    The answer comes from the shell's known-folder table, not from environment
    variables, so an unprivileged user cannot redirect it.

    Raises:
        OSError: Not on Windows, or the shell call failed.
    """
    if sys.platform == "win32":
        return _known_folder((0x62AB5D82, 0xFDC1, 0x4DC3,
                              (0xA9, 0xDD, 0x07, 0x0D, 0x1D, 0x49, 0x5D, 0x97)))
    raise _not_windows()
