"""Tell whether a folder is on a network filesystem, where locks may be fake.

Linux: the folder descriptor's device number is looked up in
``/proc/self/mountinfo``. macOS: ``fstatfs`` through ``ctypes`` (``MNT_LOCAL``).
The answer is about the folder that was opened, not about a path.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

__all__ = ["MECHANISM", "NETWORK_TYPES", "filesystem_of", "is_network_type"]

NETWORK_TYPES = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "afs", "coda",
        "ceph", "glusterfs", "lustre", "gpfs", "9p", "fuse.sshfs", "fuse.glusterfs",
        "fuse.ceph", "fuse.s3fs", "fuse.rclone", "fuse.gcsfuse", "davfs", "fuse.davfs2",
        "beegfs", "orangefs", "ocfs2", "gfs2", "webdav", "afpfs",
        # Folders shared into a virtual machine: locks may not reach the host's other users.
        "vboxsf", "vmhgfs", "fuse.vmhgfs-fuse", "virtiofs", "prl_fs",
        "fuse.juicefs", "fuse.mfs", "fuse.lizardfs", "fuse.cephfs", "fuse.seaweedfs",
    }
)

if sys.platform.startswith("linux"):
    MECHANISM: Optional[str] = "mountinfo"
elif sys.platform == "darwin":
    MECHANISM = "statfs"
else:
    MECHANISM = None


def is_network_type(fs_type: str) -> bool:
    """Tell whether a filesystem type name is one whose locks cannot be trusted."""
    fs_type = fs_type.lower()
    return fs_type in NETWORK_TYPES or fs_type.split(".", 1)[0] in NETWORK_TYPES


def filesystem_of(fd: int) -> tuple[str, Optional[bool]]:
    """Return ``(type, remote)`` for the filesystem holding open folder ``fd``.

    ``remote`` is ``None`` when this platform cannot tell.
    """
    if sys.platform.startswith("linux"):
        dev = os.fstat(fd).st_dev
        return _linux_type(f"{os.major(dev)}:{os.minor(dev)}")
    if sys.platform == "darwin":
        return _darwin_type(fd)
    return "unknown", None


def _linux_type(wanted: str, mountinfo: str = "/proc/self/mountinfo") -> tuple[str, Optional[bool]]:
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return "unknown", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3 or fields[2] != wanted or " - " not in line:
            continue
        fs_type = line.split(" - ", 1)[1].split()[0]
        return fs_type, is_network_type(fs_type)
    return "unknown", None


def _darwin_type(fd: int) -> tuple[str, Optional[bool]]:
    import ctypes
    import ctypes.util

    class StatFs(ctypes.Structure):
        # struct statfs of <sys/mount.h> with 64-bit inodes (the default since 10.6).
        _fields_ = [
            ("f_bsize", ctypes.c_uint32),
            ("f_iosize", ctypes.c_int32),
            ("f_blocks", ctypes.c_uint64),
            ("f_bfree", ctypes.c_uint64),
            ("f_bavail", ctypes.c_uint64),
            ("f_files", ctypes.c_uint64),
            ("f_ffree", ctypes.c_uint64),
            ("f_fsid", ctypes.c_int32 * 2),
            ("f_owner", ctypes.c_uint32),
            ("f_type", ctypes.c_uint32),
            ("f_flags", ctypes.c_uint32),
            ("f_fssubtype", ctypes.c_uint32),
            ("f_fstypename", ctypes.c_char * 16),
            ("f_mntonname", ctypes.c_char * 1024),
            ("f_mntfromname", ctypes.c_char * 1024),
            ("f_flags_ext", ctypes.c_uint32),
            ("f_reserved", ctypes.c_uint32 * 7),
        ]

    mnt_local = 0x00001000
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fstatfs = libc.fstatfs
        fstatfs.argtypes = [ctypes.c_int, ctypes.POINTER(StatFs)]
        fstatfs.restype = ctypes.c_int
        info = StatFs()
        if fstatfs(fd, ctypes.byref(info)) != 0:
            return "unknown", None
    except (OSError, AttributeError):
        return "unknown", None
    fs_type = info.f_fstypename.decode("ascii", "replace")
    return fs_type, not (info.f_flags & mnt_local) or is_network_type(fs_type)
