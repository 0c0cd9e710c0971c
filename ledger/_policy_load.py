"""Find, read, check and merge policy files.

Strongest first: the machine policy (one fixed place per OS), an explicit file
(``--policy`` or ``LEDGER_POLICY``), the user's policy, and the built-in default.
Each file is opened without following links and trusted only after checks on the
descriptor that was opened. A file that cannot be read, trusted or validated
raises :class:`~ledger.errors.PolicyError`; nothing falls back to a weaker mode.

This runs on every hook call, so when no policy file exists it only stats the
candidate paths: the TOML parser is imported only to read a file that is there.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Optional

from ._policy_parse import KEYS, KeySpec, policy_problems
from .errors import PolicyError
from .policy import Policy, mode_rank

if TYPE_CHECKING:
    from ._winapi import Api

__all__ = [
    "KEYS",
    "apply_machine_floor",
    "MACHINE_POLICY_PATH",
    "MACHINE_OWNER_UIDS",
    "POLICY_ENV",
    "Location",
    "load",
    "locations",
    "machine_policy_path",
    "user_policy_path",
    "read_policy",
    "parse_policy",
    "policy_problems",
]

POLICY_ENV = "LEDGER_POLICY"
MAX_POLICY_BYTES = 256 * 1024

# Fixed per OS and computed without any environment variable, so that an
# unprivileged user cannot point hooks at a machine policy of their own.
_POSIX_MACHINE_PATHS = {
    "darwin": "/Library/Application Support/ledger/policy.toml",
}
_LINUX_MACHINE_PATH = "/etc/ledger/policy.toml"
_WINDOWS_PROGRAM_DATA = "C:\\ProgramData"


def _fixed_machine_path() -> Optional[str]:
    """Return the machine policy path where it is a constant (``None`` on Windows)."""
    if sys.platform == "win32":
        return None
    return _POSIX_MACHINE_PATHS.get(sys.platform, _LINUX_MACHINE_PATH)


MACHINE_POLICY_PATH: Optional[str] = _fixed_machine_path()
"""Where the machine policy is looked for; on Windows filled on first use."""

MACHINE_OWNER_UIDS: tuple[int, ...] = (0,)
"""Owners a machine policy (and each folder above it) may have on POSIX."""

WINDOWS_API: Optional[Api] = None
"""The Windows calls to use; ``None`` means the real ones (tests put a fake here)."""

# O_NOFOLLOW on a link fails with ELOOP on Linux and macOS, EMLINK on FreeBSD.
_LINK_ERRNOS = (errno.ELOOP, errno.EMLINK)

_SID_TRUSTED_INSTALLER = "S-1-5-80-956008885-3425558581-2785563289-1616101891-2229658046"


class Location(NamedTuple):
    """A place a policy file is looked for.

    Attributes:
        kind: ``machine``, ``explicit`` or ``user``.
        path: The file's absolute path.
        named_by: For an explicit file, ``--policy`` or the variable's name.
    """

    kind: str
    path: str
    named_by: Optional[str] = None

    @property
    def required(self) -> bool:
        """A file named explicitly must exist; elsewhere no file means none is set."""
        return self.kind == "explicit"

    def describe(self) -> str:
        """Name the file for a message: ``machine policy /etc/ledger/policy.toml``."""
        if self.kind != "explicit":
            return f"{self.kind} policy {self.path}"
        named = f" (named by {self.named_by})" if self.named_by else ""
        return f"policy file {self.path}{named}"


# Where files are looked for.


def machine_policy_path() -> str:
    """Return the machine policy's fixed path on this OS."""
    global MACHINE_POLICY_PATH
    if MACHINE_POLICY_PATH is None:
        MACHINE_POLICY_PATH = os.path.join(_program_data(), "ledger", "policy.toml")
    return MACHINE_POLICY_PATH


def _program_data() -> str:
    """Return the ProgramData known folder, never from an environment variable."""
    try:
        from . import _winapi

        folder: Callable[[], str] = getattr(_winapi, "program_data_folder")
        return folder()
    except (ImportError, AttributeError, OSError):
        return _WINDOWS_PROGRAM_DATA


def user_policy_path() -> str:
    """Return the user's policy path, under ``platformdirs.user_config_dir("ledger")``."""
    import platformdirs

    return os.path.join(platformdirs.user_config_dir("ledger", appauthor=False), "policy.toml")


def locations(explicit: Optional[str], environ: Mapping[str, str]) -> list[Location]:
    """Return where policy files are looked for, strongest first."""
    found = [Location("machine", machine_policy_path())]
    named_by = "--policy"
    if explicit == "":
        # Most likely "--policy $VAR" with VAR unset: going on without it could be weaker.
        raise PolicyError(
            "--policy was given an empty file name. Name the policy file, or leave "
            "--policy out to use LEDGER_POLICY, the user's policy or the default.",
            reason="empty_policy_name",
        )
    if explicit is None:
        # An empty variable counts as unset, as shells and most tools treat it.
        explicit = environ.get(POLICY_ENV) or None
        named_by = POLICY_ENV
    if explicit:
        path = os.path.abspath(os.path.expanduser(explicit))
        found.append(Location("explicit", path, named_by))
    found.append(Location("user", user_policy_path()))

    # The same file named twice counts once, at its strongest place.
    seen: set[str] = set()
    unique = []
    for where in found:
        key = os.path.normcase(os.path.normpath(where.path))
        if key not in seen:
            seen.add(key)
            unique.append(where)
    return unique


# Reading with trust checks.


def _refuse(where: Location, problem: str, step: str) -> PolicyError:
    return PolicyError(
        f"Refusing the {where.describe()}: {problem}. {step}",
        path=where.path,
        reason="untrusted_policy",
    )


def _unreadable(where: Location, exc: OSError) -> PolicyError:
    detail = exc.strerror or str(exc)
    return PolicyError(
        f"Cannot read the {where.describe()}: {detail}. Fix its permissions or remove it; "
        "no command runs with a policy that cannot be read.",
        path=where.path,
        reason="unreadable_policy",
    )


def read_policy(where: Location) -> Optional[bytes]:
    """Return the bytes of the policy file at ``where``, or ``None`` if there is none.

    Raises:
        PolicyError: The file was named and is missing, cannot be read, or is not trusted.
    """
    try:
        os.lstat(where.path)
    except FileNotFoundError:
        return _missing(where)
    except NotADirectoryError:
        return _missing(where)
    except OSError as exc:
        raise _unreadable(where, exc) from None

    if sys.platform == "win32":
        data = _read_windows(where, _windows_api())
    else:
        data = _read_posix(where)
    return _missing(where) if data is None else data


def _too_large(where: Location) -> PolicyError:
    return PolicyError(
        f"The {where.describe()} is larger than {MAX_POLICY_BYTES} bytes, far more "
        "than a policy needs. Check that it is the right file.",
        path=where.path,
        reason="invalid_policy",
    )


def _read_all(read: Callable[[int], bytes], where: Location) -> bytes:
    """Read a descriptor to its end through ``read``, refusing more than a policy needs."""
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = read(65536)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > MAX_POLICY_BYTES:
                raise _too_large(where)
            chunks.append(chunk)
    except OSError as exc:
        raise _unreadable(where, exc) from None


def _read_posix(where: Location) -> Optional[bytes]:
    fd = _open_posix(where)
    if fd is None:
        return None
    try:
        return _read_all(lambda size: os.read(fd, size), where)
    finally:
        os.close(fd)


def _missing(where: Location) -> Optional[bytes]:
    if where.required:
        raise PolicyError(
            f"The {where.describe()} does not exist. Create it, or stop naming it; "
            "a policy named on purpose is never skipped.",
            path=where.path,
            reason="missing_policy",
        )
    return None


def _owners(where: Location) -> tuple[int, ...]:
    """Owners allowed for the file itself."""
    if sys.platform == "win32":
        return ()
    if where.kind == "machine":
        return MACHINE_OWNER_UIDS
    if where.kind == "user":
        return (os.geteuid(),)
    return (os.geteuid(), 0)


def _write_mask(where: Location) -> int:
    """Write bits that must be clear on every kind: a policy chooses files a write touches."""
    return 0o022


def _bits(where: Location) -> str:
    """The chmod argument that clears the write bits :func:`_write_mask` forbids."""
    return "go-w"


def _owner_words(where: Location) -> str:
    if where.kind == "machine":
        return "root"
    if where.kind == "user":
        return "you"
    return "you or root"


def _open_posix(where: Location) -> Optional[int]:
    """Walk to the file one checked folder at a time, then open it without following links.

    A folder on the way may be a symbolic link (a dotfiles folder, ``/var`` on
    macOS): it is followed only from a folder that already passed the checks and
    only if the link belongs to a trusted owner, and every folder it leads to is
    checked in turn.
    """
    if sys.platform == "win32":
        return None
    file_flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    owners = MACHINE_OWNER_UIDS if where.kind == "machine" else (os.geteuid(), 0)
    dir_fd = _walk(where, os.path.dirname(where.path), owners)
    if dir_fd is None:
        return None

    try:
        fd = os.open(os.path.basename(where.path), file_flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS:
            raise _refuse(where, "it is a symbolic link",
                          "Put the policy file itself there, not a link to it.") from None
        raise _unreadable(where, exc) from None
    finally:
        os.close(dir_fd)

    try:
        _check_file(os.fstat(fd), where)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _walk(where: Location, folder: str, owners: tuple[int, ...]) -> Optional[int]:
    """Open ``folder`` from ``/`` down, checking each step; ``None`` if a step is missing."""
    if sys.platform == "win32":
        return None
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    pending = [part for part in folder.split("/") if part]
    here = "/"
    links = 0
    dir_fd = os.open("/", flags)
    try:
        _check_folder(os.fstat(dir_fd), here, where, owners)
        while pending:
            part = pending.pop(0)
            if part == ".":
                continue
            try:
                next_fd = os.open(part, flags, dir_fd=dir_fd)
            except FileNotFoundError:
                os.close(dir_fd)
                return None
            except OSError as exc:
                if exc.errno not in _LINK_ERRNOS + (errno.ENOTDIR,):
                    raise _unreadable(where, exc) from None
                target = _link_target(dir_fd, part)
                links += 1
                if target is None or links > 40:
                    raise _refuse(where, f"{os.path.join(here, part)} is not a folder",
                                  "Remove what is there, or check the path.") from None
                _check_link(dir_fd, part, os.path.join(here, part), where, owners)
                if target.startswith("/"):
                    os.close(dir_fd)
                    dir_fd = os.open("/", flags)
                    here = "/"
                pending[:0] = [item for item in target.split("/") if item]
                continue
            os.close(dir_fd)
            dir_fd = next_fd
            here = os.path.dirname(here) if part == ".." else os.path.join(here, part)
            _check_folder(os.fstat(dir_fd), here, where, owners)
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd


def _check_link(
    dir_fd: int, name: str, path: str, where: Location, owners: tuple[int, ...]
) -> None:
    """Refuse to follow a folder link that a user other than a trusted owner made.

    The walk reads links itself, so the kernel's protection of links in sticky
    folders does not apply: the link's own owner is checked here instead.
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise _unreadable(where, exc) from None
    if st.st_uid not in owners:
        words = "root" if where.kind == "machine" else "you or root"
        raise _refuse(
            where,
            f"{path} is a symbolic link of uid {st.st_uid}, another user who may have "
            f"planted it; a link on the way must belong to {words}",
            "Name the policy by its real path, or remove the link.",
        )


def _link_target(dir_fd: int, name: str) -> Optional[str]:
    """Return where link ``name`` in the open folder points, or ``None`` if it is no link."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def _check_folder(
    st: os.stat_result, here: str, where: Location, owners: tuple[int, ...]
) -> None:
    """Refuse a folder on the way whose owner is not trusted or that others may change."""
    if st.st_uid not in owners:
        raise _refuse(
            where,
            f"the folder {here} belongs to uid {st.st_uid}, so that user could replace the file",
            "Keep policy files in folders of their owner or of root.",
        )
    if st.st_mode & _write_mask(where) and not st.st_mode & stat.S_ISVTX:
        raise _refuse(
            where,
            f"other users may write to the folder {here} (mode {stat.S_IMODE(st.st_mode):o})",
            f"Run 'chmod {_bits(where)} {here}' and try again.",
        )


def _check_file(st: os.stat_result, where: Location) -> None:
    """Refuse a policy file that is not a regular file of a trusted owner, private enough."""
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(where, "it is not a regular file", "Replace it with a plain TOML file.")
    if st.st_uid not in _owners(where):
        raise _refuse(
            where,
            f"it belongs to uid {st.st_uid}; it must belong to {_owner_words(where)}",
            f"Run 'chown' to give it to {_owner_words(where)}, or remove it.",
        )
    if st.st_mode & _write_mask(where):
        raise _refuse(
            where,
            f"its group or other users may write to it (mode {stat.S_IMODE(st.st_mode):o})",
            f"Run 'chmod {_bits(where)} {where.path}' and try again.",
        )
    if st.st_nlink != 1:
        raise _refuse(
            where,
            f"it has {st.st_nlink} hard links, so it may be another user's file",
            "Replace it with a plain copy of the policy.",
        )


def _windows_api() -> Api:
    if WINDOWS_API is not None:
        return WINDOWS_API
    from ._winapi import WinApi

    return WinApi()


def _read_windows(where: Location, api: Api) -> Optional[bytes]:
    """Reach the file through checked folder handles, open it without following links, read it.

    Each folder from the drive root down is opened as a handle that does not follow
    reparse points and is held, without delete sharing, until the file is read, so
    none of them can be swapped for a junction meanwhile. Consecutive final paths
    must line up, and the file's final path must sit in the last folder's.
    """
    from . import _winapi as w

    path = os.path.abspath(where.path)
    try:
        attributes = api.file_attributes(path)
    except OSError as exc:
        raise _unreadable(where, exc) from None
    if attributes is None:
        return None
    if attributes & w.FILE_ATTRIBUTE_DIRECTORY and not attributes & w.FILE_ATTRIBUTE_REPARSE_POINT:
        raise _refuse(where, "it is not a regular file", "Replace it with a plain TOML file.")

    handles: list[int] = []
    try:
        folder_final = _walk_windows(api, where, os.path.dirname(path), handles)
        if folder_final is None:
            return None
        return _read_windows_file(api, where, path, folder_final)
    finally:
        for handle in reversed(handles):
            try:
                api.close_handle(handle)
            except OSError:
                pass


def _walk_windows(api: Api, where: Location, folder: str, handles: list[int]) -> Optional[str]:
    """Open and hold each folder down to ``folder``; return its final path (``None``: missing)."""
    from . import _winapi as w
    from ._windows import is_name_surrogate

    access = w.FILE_LIST_DIRECTORY | w.FILE_TRAVERSE | w.FILE_READ_ATTRIBUTES | w.SYNCHRONIZE
    share = w.FILE_SHARE_READ | w.FILE_SHARE_WRITE
    flags = w.FILE_FLAG_OPEN_REPARSE_POINT | w.FILE_FLAG_BACKUP_SEMANTICS
    drive, rest = os.path.splitdrive(folder)
    here = drive + os.sep
    steps = [here]
    for part in rest.replace(os.altsep or os.sep, os.sep).split(os.sep):
        if part:
            here = os.path.join(here, part)
            steps.append(here)

    parent_final: Optional[str] = None
    for here in steps:
        try:
            handles.append(api.create_file(here, access, share, w.OPEN_EXISTING, flags))
            info = api.file_info(handles[-1])
            final = w.strip_extended_prefix(api.final_path(handles[-1]))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unreadable(where, exc) from None
        if info.attributes & w.FILE_ATTRIBUTE_REPARSE_POINT and is_name_surrogate(
                info.reparse_tag):
            raise _refuse(where, f"the folder {here} is a link or junction",
                          "Keep policy files in real folders, reached without links.")
        if not info.attributes & w.FILE_ATTRIBUTE_DIRECTORY:
            raise _refuse(where, f"{here} is not a folder", "Remove what is there.")
        if parent_final is not None and not _same_path(os.path.dirname(final), parent_final):
            raise _refuse(where, f"the folder {here} leads to {final}",
                          "Keep policy files in real folders, reached without links.")
        parent_final = final
    return parent_final


def _same_path(a: str, b: str) -> bool:
    return os.path.normcase(a.rstrip("\\/")) == os.path.normcase(b.rstrip("\\/"))


def _read_windows_file(api: Api, where: Location, path: str, folder_final: str) -> bytes:
    """Open the policy file itself without following a link, check the handle, and read it."""
    from . import _winapi as w
    from ._windows import is_name_surrogate

    access = w.GENERIC_READ | w.READ_CONTROL | w.SYNCHRONIZE
    share = w.FILE_SHARE_READ | w.FILE_SHARE_WRITE | w.FILE_SHARE_DELETE
    flags = w.FILE_FLAG_OPEN_REPARSE_POINT | w.FILE_FLAG_BACKUP_SEMANTICS
    try:
        handle = api.create_file(path, access, share, w.OPEN_EXISTING, flags)
    except OSError as exc:
        raise _unreadable(where, exc) from None

    try:
        info = api.file_info(handle)
        if info.attributes & w.FILE_ATTRIBUTE_REPARSE_POINT:
            what = "a link or junction" if is_name_surrogate(info.reparse_tag) else (
                "a placeholder served by another program (cloud sync)")
            raise _refuse(where, f"it is {what}",
                          "Put the policy file itself there, as a plain local file.")
        if (info.attributes & (w.FILE_ATTRIBUTE_DIRECTORY | w.FILE_ATTRIBUTE_DEVICE)
                or api.file_type(handle) != w.FILE_TYPE_DISK):
            raise _refuse(where, "it is not a regular file", "Replace it with a plain TOML file.")
        if info.links != 1:
            raise _refuse(where, f"it has {info.links} hard links, so it may be another "
                          "user's file", "Replace it with a plain copy of the policy.")
        final = w.strip_extended_prefix(api.final_path(handle))
        if not _same_path(os.path.dirname(final), folder_final):
            raise _refuse(where, f"it now leads to {final}",
                          "Something changed the path while it was read; check it.")
        problem = _windows_owner_problem(api, handle, where)
        if problem:
            raise _refuse(where, problem, "Ask an administrator to fix its owner and ACL.")
        fd = api.open_osfhandle(handle, os.O_RDONLY)
    except BaseException as exc:
        try:
            api.close_handle(handle)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, PolicyError):
            raise _unreadable(where, exc) from None
        raise

    try:
        return _read_all(lambda size: api.read(fd, size), where)
    finally:
        api.close(fd)


def _windows_owner_problem(api: Api, handle: int, where: Location) -> Optional[str]:
    """Return why the owner or DACL of an opened policy file is not trusted, or ``None``.

    Machine policy: owned by Administrators, SYSTEM or TrustedInstaller. User policy:
    owned by the user (or by Administrators when the user is one). Explicit: either.
    Nobody else may have write rights. Where the system or the filesystem keeps no
    owners, a machine policy is refused (any user may create files in ProgramData)
    and the other kinds rest on the profile's own protection.
    """
    from . import _winapi as w
    from ._windows import loose_writers

    machine = where.kind == "machine"
    if not api.supports("security"):
        return "its owner cannot be checked on this system" if machine else None
    owner = api.owner_sid(handle)
    aces = api.dacl(handle)
    if owner == w.SID_EVERYONE and aces is None:
        return "its filesystem records no owners, so anyone may have put it there" if (
            machine) else None

    user = api.current_user_sid()
    admins = (w.SID_ADMINISTRATORS, w.SID_SYSTEM, _SID_TRUSTED_INSTALLER)
    if machine:
        trusted, words = owner in admins, "Administrators"
    elif where.kind == "user":
        own_admin = owner == w.SID_ADMINISTRATORS and api.is_admin_member()
        trusted, words = owner == user or own_admin, "you"
    else:
        trusted, words = owner == user or owner in admins, "you or Administrators"
    if not trusted:
        return f"it belongs to {owner}; it must belong to {words}"

    writers = loose_writers(aces, w.SID_SYSTEM if machine else user)
    if writers:
        return f"other accounts may write to it ({', '.join(writers)})"
    return None


# Validation is in ledger._policy_parse.


def parse_policy(data: bytes, where: Location) -> dict[str, Any]:
    """Return the settings of a policy file, or raise one error that lists every problem."""
    values, problems = policy_problems(data, where.kind)
    if problems:
        raise PolicyError(
            f"The {where.describe()} is not valid: {'; '.join(problems)}. "
            f"Fix it, then run 'ledgerctl policy check {where.path}'.",
            path=where.path,
            reason="invalid_policy",
        )
    return values


# Merging.


def merge(layers: list[tuple[Location, dict[str, Any]]]) -> Policy:
    """Merge settings key by key, strongest layer first, and apply the machine floor.

    When the machine policy (its ``mode`` or its floor) makes the mode stronger than
    the files below it asked for, ``requested_mode`` keeps what the strongest of
    those files asked, so that ``policy show`` and the audit can say so.
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {key: "default" for key in KEYS}
    for where, settings in layers:
        for key, value in settings.items():
            if key not in values:
                values[key] = value
                origins[key] = where.path

    mode: str = values.get("mode", "secure")
    floor: Optional[str] = values.get("minimum_mode")
    requested: Optional[str] = None
    if floor is not None and mode_rank(mode) < mode_rank(floor):
        requested = mode
        origins["requested_mode"] = origins["mode"]
        origins["mode"] = origins["minimum_mode"]
        mode = floor

    asked = next(((where, settings["mode"]) for where, settings in layers
                  if where.kind != "machine" and "mode" in settings), None)
    if requested is None and asked is not None and mode_rank(asked[1]) < mode_rank(mode):
        requested = asked[1]
        origins["requested_mode"] = asked[0].path

    defaults = Policy()
    return Policy(
        mode=mode,
        lock_timeout=values.get("lock_timeout", defaults.lock_timeout),
        minimum_mode=floor,
        requested_mode=requested,
        escalation_dir=values.get("escalation_dir"),
        escalation_cap=values.get("escalation_cap", defaults.escalation_cap),
        audit_log=values.get("audit_log"),
        audit_stderr=values.get("audit_stderr", defaults.audit_stderr),
        sources=tuple(where.path for where, _ in layers),
        origins=origins,
    )


def apply_machine_floor(policy: Policy) -> Policy:
    """Raise a policy that a program built itself to the machine's mode, if it is below it.

    The machine's mode here is the stronger of the machine policy's ``mode`` and
    ``minimum_mode``; a program's policy is never lowered by it. Only the machine
    policy is read, with the usual trust checks; when it does not exist this costs one
    failed ``lstat``. The raised policy records the mode asked for (origin ``caller``
    unless the policy names one) and lists the machine policy among its sources. A
    policy at or above the machine's mode is returned as it is.

    Args:
        policy: The policy a caller passed, for instance to :class:`ledger.Ledger`.

    Raises:
        PolicyError: The machine policy cannot be read, is not trusted or is not valid.
    """
    where = Location("machine", machine_policy_path())
    data = read_policy(where)
    if data is None:
        return policy
    settings = parse_policy(data, where)
    asked = [mode for mode in (settings.get("mode"), settings.get("minimum_mode")) if mode]
    if not asked:
        return policy
    floor: str = max(asked, key=mode_rank)
    if mode_rank(policy.mode) >= mode_rank(floor):
        return policy

    origins = dict(policy.origins)
    if policy.requested_mode is None:
        origins["requested_mode"] = origins.get("mode", "caller")
    origins["mode"] = where.path
    if "minimum_mode" in settings:
        origins["minimum_mode"] = where.path
    sources = policy.sources if where.path in policy.sources else (where.path,) + policy.sources
    return policy._replace(
        mode=floor,
        minimum_mode=settings.get("minimum_mode", policy.minimum_mode),
        requested_mode=policy.requested_mode or policy.mode,
        sources=sources,
        origins=origins,
    )


def load(explicit: Optional[str], environ: Mapping[str, str]) -> Policy:
    """Load the effective policy: machine, explicit, user, then the default.

    Args:
        explicit: The file given with ``--policy``, if any.
        environ: Where ``LEDGER_POLICY`` is read when ``explicit`` is not given.

    Raises:
        PolicyError: A policy file cannot be read, is not trusted or is not valid, or
            a file named explicitly does not exist.
    """
    layers = []
    for where in locations(explicit, environ):
        data = read_policy(where)
        if data is not None:
            layers.append((where, parse_policy(data, where)))
    return merge(layers)
