"""A fake of :mod:`ledger._winapi` that behaves as Windows does, over a real folder.

Files really exist (in the test's temp folder, on a POSIX host); the fake adds what
POSIX lacks and the Windows backend relies on:

- handles with share modes, checked the way NTFS checks them (only opens with
  read, write or delete data rights take part), and a C runtime descriptor that
  owns the handle once ``open_osfhandle`` gave it one;
- byte-range locks that start at the descriptor's current position, conflict
  across holders (even two handles of one process), must be unlocked with exactly
  the range that was locked, and are mandatory: another handle cannot read or
  write a locked range;
- ``LK_LOCK`` that tries ten times a second apart and then fails with
  ``EDEADLOCK``, ``LK_NBLCK`` that tries once and fails with ``EACCES``, on an
  injectable clock so no test waits for real;
- a replace refused (WinError 32 by default, 5 if asked) while another handle on
  the destination lacks ``FILE_SHARE_DELETE``, and on a read-only destination;
- reparse points: POSIX symlinks stand for Windows symlinks, and the ones made
  with :meth:`FakeWinApi.make_junction` for junctions (tag ``MOUNT_POINT``);
  ``FILE_FLAG_OPEN_REPARSE_POINT`` opens the link itself, otherwise it is followed,
  and folders above the last name are always followed, as on Windows;
- owners, DACLs, the Administrators membership, drive types, placeholders
  (non-surrogate tags) and devices, set per file by the test.

What it does not model: case-insensitive names, short (8.3) names, delayed lock
release after close (it releases at once and counts it in ``closed_with_locks``).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set, Tuple

if sys.version_info >= (3, 8):
    from typing import Protocol

from ledger import _winapi as w
from ledger._winapi import Ace, FileInfo, win_error

Key = Tuple[int, int]

USER_SID = "S-1-5-21-1111111111-2222222222-3333333333-1001"
OTHER_SID = "S-1-5-21-1111111111-2222222222-3333333333-1002"
FILE_ALL_ACCESS = 0x001F01FF
DATA_RIGHTS = w.FILE_READ_DATA | w.FILE_EXECUTE | w.FILE_WRITE_DATA | w.FILE_APPEND_DATA | w.DELETE
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_EDEADLOCK = getattr(errno, "EDEADLOCK", errno.EDEADLK)
_LOCK_NAMES = {w.LK_UNLCK: "LK_UNLCK", w.LK_LOCK: "LK_LOCK", w.LK_NBLCK: "LK_NBLCK",
               w.LK_RLCK: "LK_RLCK", w.LK_NBRLCK: "LK_NBRLCK"}


class FakeMisuse(AssertionError):
    """A call the product must never make this way (Windows would misbehave or leak)."""


class Clock(Protocol):
    """What the fake needs of a clock."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    """Wall time, for tests where threads really wait for each other."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeClock:
    """Simulated time: ``sleep`` moves the clock on at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.now += seconds
        self.slept += seconds
        time.sleep(0)


def expand(access: int) -> int:
    """Map generic rights to the specific file rights they grant."""
    if access & w.GENERIC_ALL:
        access |= FILE_ALL_ACCESS
    if access & w.GENERIC_READ:
        access |= w.FILE_READ_DATA | w.FILE_READ_ATTRIBUTES | w.READ_CONTROL | w.SYNCHRONIZE
    if access & w.GENERIC_WRITE:
        access |= (w.FILE_WRITE_DATA | w.FILE_APPEND_DATA | w.FILE_WRITE_ATTRIBUTES
                   | w.READ_CONTROL | w.SYNCHRONIZE)
    if access & 0x20000000:
        access |= w.FILE_EXECUTE | w.READ_CONTROL | w.SYNCHRONIZE
    return access


@dataclass
class Handle:
    """One open handle of the fake."""

    id: int
    path: str
    final: str
    key: Key
    kind: str
    access: int
    share: int
    flags: int
    fd: Optional[int] = None
    owned_by_fd: bool = False
    tag: int = 0
    link_is_dir: bool = False


@dataclass
class LockCall:
    """One ``locking`` call as the fake saw it."""

    mode: str
    start: int
    nbytes: int
    handle: int
    granted: bool


@dataclass
class MoveCall:
    """One ``MoveFileExW`` call that went through."""

    src: str
    dst: str
    flags: int
    source_flushed: bool


class FakeWinApi:
    """Windows semantics over a real POSIX folder; see the module docstring."""

    def __init__(self, clock: Optional[Clock] = None) -> None:
        self.clock: Clock = clock if clock is not None else RealClock()
        self._mutex = threading.RLock()
        self._handles: Dict[int, Handle] = {}
        self._by_fd: Dict[int, int] = {}
        self._next = 0x10000
        self._locks: Dict[Key, List[Tuple[int, int, int]]] = {}
        self.features: Set[str] = {"lock", "security", "volume"}
        self.user_sid = USER_SID
        self.admin_member = False
        self.owners: Dict[Key, str] = {}
        self.dacls: Dict[Key, Optional[List[Ace]]] = {}
        self.readonly: Set[Key] = set()
        self.tags: Dict[Key, int] = {}
        self.links: Dict[str, Tuple[int, bool]] = {}
        self.devices: Set[str] = set()
        self.volumes: Dict[str, int] = {os.sep: w.DRIVE_FIXED}
        self.final_override: Dict[str, str] = {}
        self.replace_error = w.ERROR_SHARING_VIOLATION
        self.security_error: Optional[int] = None
        self.dirty: Set[Key] = set()
        self.lock_calls: List[LockCall] = []
        self.moves: List[MoveCall] = []
        self.violations: List[str] = []
        self.refused_moves = 0
        self.closed_with_locks = 0
        self.on_move_refused: Optional[Callable[[int], None]] = None
        self.before_read: Optional[Callable[[str], None]] = None
        self.on_lock_refused: Optional[Callable[[int], None]] = None

    # Setting the scene (what an attacker, another program or the system did).

    def make_junction(self, link: str, target: str) -> None:
        """Put a junction at ``link`` pointing to folder ``target``."""
        os.symlink(target, link, target_is_directory=True)
        self.links[os.path.abspath(link)] = (w.IO_REPARSE_TAG_MOUNT_POINT, True)

    def make_symlink(self, link: str, target: str, *, directory: bool = False) -> None:
        """Put a symbolic link at ``link``."""
        os.symlink(target, link, target_is_directory=directory)
        self.links[os.path.abspath(link)] = (w.IO_REPARSE_TAG_SYMLINK, directory)

    def set_owner(self, path: str, sid: str) -> None:
        self.owners[self._key(path)] = sid

    def grant(self, path: str, sid: str, mask: int, *, flags: int = 0,
              ace_type: int = w.ACCESS_ALLOWED_ACE_TYPE) -> None:
        """Add an entry to the DACL of ``path``."""
        key = self._key(path)
        entries = self.dacls.get(key, self._default_dacl()) or []
        self.dacls[key] = entries + [Ace(ace_type, flags, mask, sid)]

    def set_null_dacl(self, path: str) -> None:
        self.dacls[self._key(path)] = None

    def forget_acls(self, path: str, *, dacl: Optional[List[Ace]] = None) -> None:
        """Make ``path`` look like a folder on FAT: owner Everyone, no DACL (or ``dacl``)."""
        self.owners[self._key(path)] = w.SID_EVERYONE
        self.dacls[self._key(path)] = dacl

    def set_readonly(self, path: str) -> None:
        self.readonly.add(self._key(path))

    def set_tag(self, path: str, tag: int) -> None:
        """Mark a real file or folder as a placeholder with a (non-surrogate) reparse tag."""
        self.tags[self._key(path)] = tag

    def make_device(self, path: str) -> None:
        """Make ``path`` open as a character device, like ``CON`` or ``NUL``."""
        self.devices.add(os.path.abspath(path))

    def add_volume(self, root: str, drive_type: int) -> None:
        self.volumes[os.path.abspath(root)] = drive_type

    def open_foreign(self, path: str, access: int = w.GENERIC_READ,
                     share: int = w.FILE_SHARE_READ | w.FILE_SHARE_WRITE) -> int:
        """Open ``path`` as another program would (Python's ``open()`` shares no delete)."""
        handle = self.create_file(path, access, share, w.OPEN_EXISTING, 0)
        return self.open_osfhandle(handle, 0)

    def hold_lock(self, path: str, note: bytes = b"") -> int:
        """Take the writers' lock on ``path`` as another process would; return its fd."""
        handle = self.create_file(path, w.GENERIC_READ | w.GENERIC_WRITE,
                                  w.FILE_SHARE_READ | w.FILE_SHARE_WRITE, w.OPEN_ALWAYS, 0)
        fd = self.open_osfhandle(handle, 0)
        self.lseek(fd, 0, os.SEEK_SET)
        self.locking(fd, w.LK_NBLCK, 1)
        if note:
            self.lseek(fd, 1, os.SEEK_SET)
            self.write(fd, note)
        return fd

    def open_handles(self) -> List[Handle]:
        with self._mutex:
            return list(self._handles.values())

    def lock_holders(self, path: str) -> List[Tuple[int, int, int]]:
        with self._mutex:
            return list(self._locks.get(self._key(path), []))

    def fd_of(self, suffix: str) -> int:
        """The descriptor of the one open handle whose path ends with ``suffix``."""
        found = [h.fd for h in self.open_handles() if h.path.endswith(suffix) and h.fd is not None]
        assert len(found) == 1, found
        return found[0]

    # Internals.

    def _key(self, path: str) -> Key:
        st = os.lstat(path)
        return (st.st_dev, st.st_ino)

    def _default_dacl(self) -> List[Ace]:
        return [Ace(w.ACCESS_ALLOWED_ACE_TYPE, 0, FILE_ALL_ACCESS, w.SID_SYSTEM),
                Ace(w.ACCESS_ALLOWED_ACE_TYPE, 0, FILE_ALL_ACCESS, w.SID_ADMINISTRATORS),
                Ace(w.ACCESS_ALLOWED_ACE_TYPE, 0, FILE_ALL_ACCESS, self.user_sid)]

    def _link_info(self, path: str) -> Tuple[int, bool]:
        known = self.links.get(os.path.abspath(path))
        if known is not None:
            return known
        return w.IO_REPARSE_TAG_SYMLINK, os.path.isdir(path)

    def _handle(self, handle: int) -> Handle:
        found = self._handles.get(handle)
        if found is None:
            raise win_error(6)
        return found

    def _by_descriptor(self, fd: int) -> Handle:
        handle = self._by_fd.get(fd)
        if handle is None:
            raise FakeMisuse(f"descriptor {fd} was not made by open_osfhandle")
        return self._handles[handle]

    def _conflict(self, key: Key, access: int, share: int, skip: int = 0) -> bool:
        """NTFS sharing check of a new open against the handles already open on ``key``."""
        access = expand(access)
        if not access & DATA_RIGHTS:
            return False
        for other in self._handles.values():
            if other.key != key or other.id == skip:
                continue
            held = expand(other.access)
            if not held & DATA_RIGHTS:
                continue
            if access & (w.FILE_READ_DATA | w.FILE_EXECUTE) and not other.share & w.FILE_SHARE_READ:
                return True
            if access & (w.FILE_WRITE_DATA | w.FILE_APPEND_DATA) and not (
                    other.share & w.FILE_SHARE_WRITE):
                return True
            if access & w.DELETE and not other.share & w.FILE_SHARE_DELETE:
                return True
            if held & (w.FILE_READ_DATA | w.FILE_EXECUTE) and not share & w.FILE_SHARE_READ:
                return True
            if held & (w.FILE_WRITE_DATA | w.FILE_APPEND_DATA) and not share & w.FILE_SHARE_WRITE:
                return True
            if held & w.DELETE and not share & w.FILE_SHARE_DELETE:
                return True
        return False

    def _register(self, handle: Handle) -> int:
        self._next += 4
        handle.id = self._next
        self._handles[handle.id] = handle
        return handle.id

    def _drop(self, handle: Handle) -> None:
        held = [lock for lock in self._locks.get(handle.key, []) if lock[0] == handle.id]
        if held:
            self.closed_with_locks += 1
            self._locks[handle.key] = [
                lock for lock in self._locks[handle.key] if lock[0] != handle.id]
        del self._handles[handle.id]
        if handle.fd is not None:
            self._by_fd.pop(handle.fd, None)
            os.close(handle.fd)

    def _locked_by_other(self, handle: Handle, start: int, end: int) -> bool:
        return any(owner != handle.id and lo < end and start < hi
                   for owner, lo, hi in self._locks.get(handle.key, []))

    # The Api interface.

    def supports(self, feature: str) -> bool:
        return feature in self.features

    def create_file(self, path: str, access: int, share: int, disposition: int,
                    flags: int) -> int:
        with self._mutex:
            path = os.path.abspath(path)
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                raise win_error(w.ERROR_PATH_NOT_FOUND, path)
            backup = bool(flags & w.FILE_FLAG_BACKUP_SEMANTICS)
            no_follow = bool(flags & w.FILE_FLAG_OPEN_REPARSE_POINT)
            if path in self.devices:
                return self._register(Handle(id=0, path=path, final=path, key=(-1, hash(path)),
                                             kind="device", access=access, share=share,
                                             flags=flags))
            try:
                st: Optional[os.stat_result] = os.lstat(path)
            except FileNotFoundError:
                st = None

            target = path
            if st is not None and stat.S_ISLNK(st.st_mode):
                tag, is_dir = self._link_info(path)
                if no_follow:
                    if disposition == w.CREATE_NEW:
                        raise win_error(w.ERROR_FILE_EXISTS, path)
                    if is_dir and not backup:
                        raise win_error(w.ERROR_ACCESS_DENIED, path)
                    key = (st.st_dev, st.st_ino)
                    if self._conflict(key, access, share):
                        raise win_error(w.ERROR_SHARING_VIOLATION, path)
                    final = os.path.join(os.path.realpath(parent), os.path.basename(path))
                    return self._register(Handle(id=0, path=path, final=final, key=key,
                                                 kind="link", access=access, share=share,
                                                 flags=flags, tag=tag, link_is_dir=is_dir))
                target = os.path.realpath(path)
                try:
                    st = os.stat(target)
                except FileNotFoundError:
                    st = None

            if st is not None and stat.S_ISDIR(st.st_mode):
                if not backup:
                    raise win_error(w.ERROR_ACCESS_DENIED, path)
                if disposition == w.CREATE_NEW:
                    raise win_error(w.ERROR_FILE_EXISTS, path)
                key = (st.st_dev, st.st_ino)
                if self._conflict(key, access, share):
                    raise win_error(w.ERROR_SHARING_VIOLATION, path)
                return self._register(Handle(id=0, path=path, final=os.path.realpath(target),
                                             key=key, kind="dir", access=access, share=share,
                                             flags=flags))

            wants = expand(access)
            writes = bool(wants & (w.FILE_WRITE_DATA | w.FILE_APPEND_DATA))
            reads = bool(wants & w.FILE_READ_DATA)
            if writes and reads:
                os_flags = os.O_RDWR
            elif writes:
                os_flags = os.O_WRONLY
            else:
                os_flags = os.O_RDONLY
            if wants & w.FILE_APPEND_DATA and not wants & w.FILE_WRITE_DATA:
                os_flags |= os.O_APPEND
            if no_follow:
                os_flags |= _O_NOFOLLOW
            if st is not None:
                if disposition == w.CREATE_NEW:
                    raise win_error(w.ERROR_FILE_EXISTS, path)
                if (st.st_dev, st.st_ino) in self.readonly and writes:
                    raise win_error(w.ERROR_ACCESS_DENIED, path)
                if disposition == w.CREATE_ALWAYS:
                    os_flags |= os.O_TRUNC
            elif disposition == w.OPEN_EXISTING:
                raise win_error(w.ERROR_FILE_NOT_FOUND, path)
            else:
                os_flags |= os.O_CREAT | os.O_EXCL
            fd = os.open(target, os_flags, 0o600)
            fst = os.fstat(fd)
            key = (fst.st_dev, fst.st_ino)
            if self._conflict(key, access, share):
                os.close(fd)
                raise win_error(w.ERROR_SHARING_VIOLATION, path)
            return self._register(Handle(id=0, path=path, final=os.path.realpath(target),
                                         key=key, kind="file", access=access, share=share,
                                         flags=flags, fd=fd))

    def close_handle(self, handle: int) -> None:
        with self._mutex:
            found = self._handle(handle)
            if found.owned_by_fd:
                raise FakeMisuse(f"handle {handle} belongs to descriptor {found.fd}; "
                                 "close the descriptor instead")
            self._drop(found)

    def file_info(self, handle: int) -> FileInfo:
        with self._mutex:
            found = self._handle(handle)
            if found.kind == "device":
                raise win_error(1, found.path, text="Incorrect function")
            if found.kind == "link":
                attributes = w.FILE_ATTRIBUTE_REPARSE_POINT | (
                    w.FILE_ATTRIBUTE_DIRECTORY if found.link_is_dir else w.FILE_ATTRIBUTE_ARCHIVE)
                return FileInfo(attributes, found.tag, 1, found.key[0], found.key[1])
            if found.kind == "dir":
                attributes = w.FILE_ATTRIBUTE_DIRECTORY
                links = 1
            else:
                assert found.fd is not None
                attributes = w.FILE_ATTRIBUTE_ARCHIVE
                links = os.fstat(found.fd).st_nlink
            if found.key in self.readonly:
                attributes |= w.FILE_ATTRIBUTE_READONLY
            tag = self.tags.get(found.key, 0)
            if tag:
                attributes |= w.FILE_ATTRIBUTE_REPARSE_POINT
            return FileInfo(attributes, tag, links, found.key[0], found.key[1])

    def file_type(self, handle: int) -> int:
        with self._mutex:
            found = self._handle(handle)
            return w.FILE_TYPE_CHAR if found.kind == "device" else w.FILE_TYPE_DISK

    def file_attributes(self, path: str) -> Optional[int]:
        with self._mutex:
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if stat.S_ISLNK(st.st_mode):
                _, is_dir = self._link_info(path)
                return w.FILE_ATTRIBUTE_REPARSE_POINT | (
                    w.FILE_ATTRIBUTE_DIRECTORY if is_dir else w.FILE_ATTRIBUTE_ARCHIVE)
            key = (st.st_dev, st.st_ino)
            attributes = (w.FILE_ATTRIBUTE_DIRECTORY if stat.S_ISDIR(st.st_mode)
                          else w.FILE_ATTRIBUTE_ARCHIVE)
            if key in self.readonly:
                attributes |= w.FILE_ATTRIBUTE_READONLY
            if key in self.tags:
                attributes |= w.FILE_ATTRIBUTE_REPARSE_POINT
            return attributes

    def final_path(self, handle: int) -> str:
        with self._mutex:
            found = self._handle(handle)
            return self.final_override.get(found.path, found.final)

    def _need_read_control(self, found: Handle) -> None:
        if not expand(found.access) & w.READ_CONTROL:
            raise win_error(w.ERROR_ACCESS_DENIED, found.path)
        if self.security_error is not None:
            raise win_error(self.security_error, found.path)

    def owner_sid(self, handle: int) -> str:
        with self._mutex:
            found = self._handle(handle)
            self._need_read_control(found)
            return self.owners.get(found.key, self.user_sid)

    def dacl(self, handle: int) -> Optional[List[Ace]]:
        with self._mutex:
            found = self._handle(handle)
            self._need_read_control(found)
            if found.key in self.dacls:
                entries = self.dacls[found.key]
                return None if entries is None else list(entries)
            return self._default_dacl()

    def current_user_sid(self) -> str:
        return self.user_sid

    def is_admin_member(self) -> bool:
        return self.admin_member

    def volume_root(self, path: str) -> str:
        path = os.path.abspath(path)
        roots = [root for root in self.volumes
                 if path == root or path.startswith(root.rstrip(os.sep) + os.sep)]
        return max(roots, key=len)

    def drive_type(self, root: str) -> int:
        return self.volumes.get(root, w.DRIVE_NO_ROOT_DIR)

    def open_osfhandle(self, handle: int, flags: int) -> int:
        with self._mutex:
            found = self._handle(handle)
            if found.kind != "file" or found.fd is None:
                raise FakeMisuse(f"open_osfhandle on a {found.kind} handle ({found.path})")
            if found.owned_by_fd:
                raise FakeMisuse(f"handle {handle} already belongs to descriptor {found.fd}")
            found.owned_by_fd = True
            self._by_fd[found.fd] = found.id
            return found.fd

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        if nbytes < 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        name = _LOCK_NAMES.get(mode, str(mode))
        if mode == w.LK_UNLCK:
            with self._mutex:
                found = self._by_descriptor(fd)
                start = os.lseek(fd, 0, os.SEEK_CUR)
                entry = (found.id, start, start + nbytes)
                locks = self._locks.get(found.key, [])
                granted = entry in locks
                self.lock_calls.append(LockCall(name, start, nbytes, found.id, granted))
                if granted:
                    locks.remove(entry)
                    return
                mine = [(lo, hi) for owner, lo, hi in locks if owner == found.id]
                self.violations.append(
                    f"unlock of bytes [{start}, {start + nbytes}) of {found.path}, which this "
                    f"handle did not lock (it holds {mine})")
            raise PermissionError(errno.EACCES, "Permission denied")

        tries = 10 if mode in (w.LK_LOCK, w.LK_RLCK) else 1
        for attempt in range(tries):
            with self._mutex:
                found = self._by_descriptor(fd)
                start = os.lseek(fd, 0, os.SEEK_CUR)
                end = start + nbytes
                busy = any(lo < end and start < hi for _, lo, hi in self._locks.get(found.key, []))
                self.lock_calls.append(LockCall(name, start, nbytes, found.id, not busy))
                if not busy:
                    self._locks.setdefault(found.key, []).append((found.id, start, end))
                    return
            hook = self.on_lock_refused
            if hook is not None:
                hook(fd)
            if attempt < tries - 1:
                self.clock.sleep(1.0)
        if tries > 1:
            raise OSError(_EDEADLOCK, "Resource deadlock avoided")
        raise PermissionError(errno.EACCES, "Permission denied")

    def lseek(self, fd: int, pos: int, how: int) -> int:
        with self._mutex:
            self._by_descriptor(fd)
            return os.lseek(fd, pos, how)

    def read(self, fd: int, size: int) -> bytes:
        hook = self.before_read
        if hook is not None:
            hook(self._by_descriptor(fd).path)
        with self._mutex:
            found = self._by_descriptor(fd)
            if found.flags & w.FILE_FLAG_OPEN_REPARSE_POINT and found.key in self.tags:
                raise FakeMisuse(f"data of placeholder {found.path} read through a handle that "
                                 "bypasses the program serving it")
            start = os.lseek(fd, 0, os.SEEK_CUR)
            if self._locked_by_other(found, start, start + size):
                raise PermissionError(errno.EACCES, "Permission denied")
            return os.read(fd, size)

    def write(self, fd: int, data: bytes) -> int:
        with self._mutex:
            found = self._by_descriptor(fd)
            start = os.lseek(fd, 0, os.SEEK_CUR)
            if found.flags & w.FILE_FLAG_OPEN_REPARSE_POINT and found.key in self.tags:
                raise FakeMisuse(f"placeholder {found.path} written through a bypassing handle")
            if self._locked_by_other(found, start, start + len(data)):
                raise PermissionError(errno.EACCES, "Permission denied")
            self.dirty.add(found.key)
            return os.write(fd, data)

    def truncate(self, fd: int, size: int) -> None:
        with self._mutex:
            found = self._by_descriptor(fd)
            self.dirty.add(found.key)
            os.ftruncate(fd, size)

    def flush(self, fd: int) -> None:
        with self._mutex:
            found = self._by_descriptor(fd)
            if not expand(found.access) & (w.FILE_WRITE_DATA | w.FILE_APPEND_DATA):
                raise win_error(w.ERROR_ACCESS_DENIED, found.path)
            self.dirty.discard(found.key)

    def close(self, fd: int) -> None:
        with self._mutex:
            self._drop(self._by_descriptor(fd))

    def move_file(self, src: str, dst: str, flags: int) -> None:
        refused: Optional[OSError] = None
        with self._mutex:
            try:
                source = os.lstat(src)
            except FileNotFoundError:
                raise win_error(w.ERROR_FILE_NOT_FOUND, src, dst) from None
            src_key = (source.st_dev, source.st_ino)
            if self._conflict(src_key, w.DELETE, w.FILE_SHARE_READ | w.FILE_SHARE_WRITE
                              | w.FILE_SHARE_DELETE):
                raise win_error(w.ERROR_SHARING_VIOLATION, src, dst)
            try:
                dest: Optional[os.stat_result] = os.lstat(dst)
            except FileNotFoundError:
                dest = None
            if dest is not None:
                if not flags & w.MOVEFILE_REPLACE_EXISTING:
                    raise win_error(w.ERROR_ALREADY_EXISTS, src, dst)
                dst_key = (dest.st_dev, dest.st_ino)
                if stat.S_ISDIR(dest.st_mode) or dst_key in self.readonly:
                    raise win_error(w.ERROR_ACCESS_DENIED, src, dst)
                # A classic rename never replaces a file that is open anywhere, whatever
                # share mode its handles gave (delete sharing included).
                if any(handle.key == dst_key for handle in self._handles.values()):
                    self.refused_moves += 1
                    refused = win_error(self.replace_error, src, dst)
            if refused is None:
                self.moves.append(MoveCall(src, dst, flags, src_key not in self.dirty))
                os.replace(src, dst)
                return
        hook = self.on_move_refused
        if hook is not None:
            hook(self.refused_moves)
        raise refused

    def delete_file(self, path: str) -> None:
        with self._mutex:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                raise win_error(w.ERROR_FILE_NOT_FOUND, path) from None
            key = (st.st_dev, st.st_ino)
            is_dir = stat.S_ISDIR(st.st_mode) or (
                stat.S_ISLNK(st.st_mode) and self._link_info(path)[1])
            if is_dir or key in self.readonly:
                raise win_error(w.ERROR_ACCESS_DENIED, path)
            if self._conflict(key, w.DELETE, w.FILE_SHARE_READ | w.FILE_SHARE_WRITE
                              | w.FILE_SHARE_DELETE):
                raise win_error(w.ERROR_SHARING_VIOLATION, path)
            os.unlink(path)

    def create_directory(self, path: str) -> None:
        with self._mutex:
            if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                raise win_error(w.ERROR_PATH_NOT_FOUND, path)
            if os.path.lexists(path):
                raise win_error(w.ERROR_ALREADY_EXISTS, path)
            os.mkdir(path, 0o700)

    def list_directory(self, path: str) -> List[str]:
        return os.listdir(path)

    def monotonic(self) -> float:
        return float(self.clock.monotonic())

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)
