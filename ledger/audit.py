"""The audit trail: one JSON line per write attempt, written with structlog.

The library never configures structlog or the standard ``logging`` module: every
event goes through a bound logger built here with the library's own processors,
ending in a small writer that appends the line to the audit file (and, if the
policy asks, to stderr). A host program's logging stays exactly as it set it.

The audit file is opened through the same platform backend as the ledger: its
folder is walked without following links and checked, the file is opened
no-follow, checked for owner and link count, created 0600. Each event is one
``os.write`` of a whole line, at most :data:`MAX_LINE_BYTES` long, on a
descriptor opened with ``O_APPEND``, so lines from many processes never mix.
The file is rotated by size under its own side lock. structlog is imported only
when an event is written.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import math
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Mapping, MutableMapping, Optional

from . import __version__
from .errors import LedgerError, LedgerIOError, LockTimeoutError, UnsafePathError
from .policy import Policy

if TYPE_CHECKING:
    from ._backend import Folder

__all__ = [
    "AuditTrail",
    "EVENT_WRITE",
    "KEEP",
    "MAX_BYTES",
    "MAX_LINE_BYTES",
    "clean_text",
    "default_audit_path",
    "plain",
    "rotated_paths",
    "trail",
]

EVENT_WRITE = "ledger.write"
MAX_BYTES = 10 * 1024 * 1024
KEEP = 5
MAX_LINE_BYTES = 4096

_ROTATE_LOCK_TIMEOUT = 2.0
_MAX_DEPTH = 6
_TRUNCATION_STEPS = (512, 128, 32)
_ORDER = (
    "timestamp", "event", "outcome", "reason", "message", "ledger", "mode", "requested_mode",
    "raised_by_floor", "policy", "protections", "missing", "pruned", "notes", "duration_ms",
    "pid", "user", "host", "platform", "version",
)
_CORE = ("timestamp", "event", "outcome", "reason", "ledger", "mode", "pid", "host")
_UNSAFE_WORDS = {
    "symlink": "is a symbolic link",
    "junction": "is a junction or mount point",
    "reparse_point": "is a reparse point",
    "path_changed": "changed while it was being opened",
    "foreign_owner": "belongs to another user",
    "loose_permissions": "is writable by other users",
    "hard_link": "has more than one hard link",
    "not_regular_file": "is not a regular file",
    "not_a_folder": "is not a folder",
    "permission_denied": "cannot be opened (permission denied)",
}


def default_audit_path() -> str:
    """Return the default audit file, ``audit.jsonl`` in the user's log folder."""
    import platformdirs

    return os.path.join(platformdirs.user_log_dir("ledger", appauthor=False), "audit.jsonl")


def rotated_paths(path: str) -> list[str]:
    """Return ``path`` and its rotated siblings ``path.1``, ``path.2``... oldest first.

    Only files that exist are listed; the siblings are found by name, whatever
    their number, so files kept by a larger ``keep`` are not missed.
    """
    folder, name = os.path.split(path)
    numbered: list[tuple[int, str]] = []
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder or "."):
            suffix = entry[len(name) + 1:]
            if entry.startswith(name + ".") and suffix.isdigit():
                numbered.append((int(suffix), os.path.join(folder, entry)))
    found = [sibling for _, sibling in sorted(numbered, reverse=True)]
    if os.path.exists(path):
        found.append(path)
    return found


# Values JSON can hold, whatever a caller put in the event.

def _text(value: Any) -> str:
    """Return ``str(value)`` as clean UTF-8 text, whatever ``__str__`` does."""
    for render in (str, repr):
        try:
            text = render(value)
        except Exception:  # a broken __str__ must not break the audit line
            continue
        if isinstance(text, str):
            return clean_text(text)
    return f"<unprintable {type(value).__name__}>"


def clean_text(text: str) -> str:
    """Escape what UTF-8 cannot encode (lone surrogates from undecodable paths or JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def plain(value: Any, depth: int = 0) -> Any:
    """Return ``value`` made of what JSON holds: objects with text keys, lists, text, numbers.

    Paths, bytes, UUIDs, times, sets and anything else become strings; keys that
    are not strings become strings; NaN and infinities become strings; nesting
    deeper than a few levels becomes a string. Never raises.
    """
    try:
        return _plain(value, depth)
    except Exception:  # whatever a value does while converted, the line is still written
        return _text(value)


def _plain(value: Any, depth: int) -> Any:
    if value is None or type(value) in (bool, int):
        return value
    if isinstance(value, float):
        number = float.__float__(value)
        return number if math.isfinite(number) else str(number)
    if isinstance(value, str):
        return clean_text(str.__str__(value))
    if isinstance(value, int):
        return bool(value) if isinstance(value, bool) else int.__int__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return clean_text(bytes(value).decode("utf-8", "backslashreplace"))
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return _text(value.isoformat())
    if isinstance(value, os.PathLike):
        return clean_text(os.fsdecode(os.fspath(value)))
    if depth >= _MAX_DEPTH:
        return _text(value)
    if isinstance(value, Mapping):
        return {_key(key): plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item, depth + 1) for item in value]
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(_text(item) for item in value)) + "}"
    return _text(value)


def _key(key: Any) -> str:
    return clean_text(key) if isinstance(key, str) else _text(plain(key, _MAX_DEPTH))


def _shorten(value: Any, limit: int) -> Any:
    """Return ``value`` with every string cut to ``limit`` characters."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[: limit - 1] + "\u2026"
    if isinstance(value, dict):
        return {_shorten(key, limit): _shorten(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [_shorten(item, limit) for item in value]
    return value


def _ordered(event: Mapping[str, Any]) -> dict[str, Any]:
    ordered = {key: event[key] for key in _ORDER if key in event}
    ordered.update((key, value) for key, value in event.items() if key not in ordered)
    return ordered


def _serialize(event: Mapping[str, Any], **_: Any) -> str:
    """Render the event as one JSON line of at most :data:`MAX_LINE_BYTES` bytes.

    A line that would be longer has its strings shortened, step by step, and
    says ``"truncated": true``; as a last resort only the core fields are kept.
    """
    import json

    def dumps(value: Mapping[str, Any]) -> str:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))

    limit = MAX_LINE_BYTES - 1
    clean = _ordered(plain(dict(event)))
    line = dumps(clean)
    if len(line.encode("utf-8")) <= limit:
        return line
    clean["truncated"] = True
    for size in _TRUNCATION_STEPS:
        line = dumps(_shorten(clean, size))
        if len(line.encode("utf-8")) <= limit:
            return line
    core = {key: clean[key] for key in _CORE if key in clean}
    core["truncated"] = True
    return dumps(_shorten(core, _TRUNCATION_STEPS[-1]))


# The fields every event carries.

class _Context:
    """The structlog processor that adds who and where: pid, user, host, platform, version."""

    def __init__(self) -> None:
        self._static: Optional[dict[str, Any]] = None

    def static(self) -> dict[str, Any]:
        if self._static is None:
            self._static = {
                "user": _user(),
                "host": _host(),
                "platform": sys.platform,
                "version": __version__,
            }
        return self._static

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event.update(self.static())
        event["pid"] = os.getpid()
        return event


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # getuser raises several kinds when no name is known
        getuid = getattr(os, "getuid", None)
        return f"uid:{getuid()}" if getuid else "unknown"


def _host() -> str:
    import socket

    try:
        return socket.gethostname()
    except OSError:
        return "unknown"


_CONTEXT = _Context()


# The audit file.

def _open_folder(path: str, *, create: bool) -> Folder:
    """Open the audit file's folder through the platform's secure backend."""
    from ._backend import backend_for
    from .protections import Report

    return backend_for("secure").open_folder(path, create=create, report=Report())


def _in_folder(folder: Folder) -> Optional[int]:
    """Return the folder's descriptor, when the backend works relative to one."""
    fd = getattr(folder, "fd", None)
    return fd if isinstance(fd, int) and fd >= 0 and os.rename in os.supports_dir_fd else None


def _stat_in(folder: Folder, name: str) -> os.stat_result:
    fd = _in_folder(folder)
    if fd is not None:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    return os.stat(os.path.join(folder.path, name), follow_symlinks=False)


def _replace_in(folder: Folder, source: str, target: str) -> None:
    fd = _in_folder(folder)
    if fd is not None:
        os.rename(source, target, src_dir_fd=fd, dst_dir_fd=fd)
    else:
        os.replace(os.path.join(folder.path, source), os.path.join(folder.path, target))


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


class _RotationError(Exception):
    """The event was written, but the full audit file could not be rotated."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _AuditFile:
    """One audit file held open for appending, reopened when it was rotated or removed."""

    def __init__(self, path: str, max_bytes: int, keep: int) -> None:
        self.path = path
        self.folder, self.name = os.path.split(path)
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        self.fd = -1
        self._identity: Optional[tuple[int, int]] = None
        self._fresh = False

    def open(self) -> None:
        """Open (or reopen) the file through the backend, creating it 0600."""
        folder = _open_folder(self.folder, create=True)
        try:
            fd = folder.open_append(self.name)
        finally:
            folder.close()
        try:
            identity = _identity(self._stat_opened(fd))
        except BaseException:
            os.close(fd)
            raise
        self.close()
        self.fd, self._identity, self._fresh = fd, identity, True

    def _stat_opened(self, fd: int) -> os.stat_result:
        # Windows may number a file differently through a handle than by name: use the name.
        if sys.platform == "win32":
            return os.stat(self.path, follow_symlinks=False)
        return os.fstat(fd)

    def is_current(self) -> bool:
        """Tell whether the open descriptor is still the file at the path."""
        if self.fd < 0:
            return False
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return _identity(st) == self._identity

    def ensure(self) -> None:
        """Make sure the descriptor is open on the file now at the path."""
        if self.fd < 0 or not (self._fresh or self.is_current()):
            self.open()

    def append(self, data: bytes) -> None:
        """Append ``data`` (one whole line) with a single write; rotate if the file is full."""
        self.ensure()
        self._fresh = False
        written = os.write(self.fd, data)
        if written != len(data):
            with contextlib.suppress(OSError):
                os.write(self.fd, b"\n")
            raise OSError(errno.EIO, f"only {written} of {len(data)} bytes were written")
        if os.fstat(self.fd).st_size >= self.max_bytes:
            try:
                self.rotate()
            except Exception as exc:  # the event is written; only the rotation failed
                raise _RotationError(exc) from exc

    def rotate(self) -> None:
        """Shift ``audit.jsonl`` to ``.1``, ``.1`` to ``.2``... under the side lock.

        The decision is made under the lock on the file now at the path: if
        another process rotated already, that file is small and only the
        descriptor is reopened. A lock held elsewhere for too long, or (on
        Windows) a reader holding the file without delete sharing, skips the
        rotation; the next event tries again.
        """
        folder = _open_folder(self.folder, create=False)
        try:
            with folder.lock(f"{self.name}.lock", _ROTATE_LOCK_TIMEOUT):
                try:
                    full = _stat_in(folder, self.name).st_size >= self.max_bytes
                except FileNotFoundError:
                    full = False
                if full:
                    for index in range(self.keep - 1, 0, -1):
                        with contextlib.suppress(FileNotFoundError):
                            _replace_in(folder, f"{self.name}.{index}", f"{self.name}.{index + 1}")
                    _replace_in(folder, self.name, f"{self.name}.1")
                self.open()
        except LockTimeoutError:
            return
        except PermissionError as exc:
            # On Windows a reader without FILE_SHARE_DELETE blocks the rename: try next time.
            if sys.platform != "win32" or isinstance(exc, LedgerError):
                raise
        finally:
            folder.close()

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class _Output:
    """The logger at the end of the library's structlog chain: one line to each sink."""

    def __init__(self, audit_file: Optional[_AuditFile], to_stderr: bool) -> None:
        self.audit_file = audit_file
        self.to_stderr = to_stderr

    def msg(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        failure: Optional[BaseException] = None
        if self.audit_file is not None:
            try:
                self.audit_file.append(data)
            except Exception as exc:  # stderr still gets the line; the failure is reported
                failure = exc
        if self.to_stderr:
            sys.stderr.flush()
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        if failure is not None:
            raise failure

    info = msg


class AuditTrail:
    """Writes audit events to the policy's audit file, one line per write attempt.

    Attributes:
        max_bytes: Size at which the audit file is rotated.
        keep: How many rotated files (``audit.jsonl.1`` ...) are kept.
    """

    def __init__(self, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.max_bytes = max_bytes
        self.keep = keep
        self._files: dict[str, _AuditFile] = {}
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    def _after_fork(self) -> None:
        # Another thread may have held the lock when the process forked.
        self._lock = threading.Lock()

    def path_for(self, policy: Policy) -> str:
        """Return the audit file of ``policy`` (its ``audit_log``, else the default)."""
        configured = os.fspath(policy.audit_log) if policy.audit_log else default_audit_path()
        return os.path.abspath(os.path.expanduser(configured))

    def _file(self, path: str) -> _AuditFile:
        audit_file = self._files.get(path)
        if audit_file is None:
            audit_file = _AuditFile(path, self.max_bytes, self.keep)
        audit_file.max_bytes, audit_file.keep = self.max_bytes, max(1, self.keep)
        audit_file.ensure()
        self._files[path] = audit_file
        return audit_file

    def require(self, policy: Policy) -> None:
        """Open the audit file now, or raise: strict mode writes nothing unaudited.

        Raises:
            UnsafePathError: The audit file or its folder fails a safety check (77).
            LedgerIOError: The audit file cannot be opened (74).
        """
        path = self.path_for(policy)
        try:
            with self._lock:
                self._file(path)
        except (LedgerError, OSError) as exc:
            self._refused.add(path)
            if isinstance(exc, UnsafePathError):
                raise UnsafePathError(
                    f"Strict mode refused to write: the audit file {path} cannot be used "
                    f"safely, because {_why(exc, path)}. Fix that and run the command again; "
                    "nothing was written.",
                    path=path,
                    reason="audit_unsafe",
                ) from exc
            raise LedgerIOError(
                f"Strict mode refused to write: the audit file {path} cannot be opened "
                f"({_why(exc, path)}). Fix its folder and run the command again; "
                "nothing was written.",
                path=path,
                reason="audit_unavailable",
            ) from exc

    def write_event(self, policy: Policy, fields: Mapping[str, Any]) -> None:
        """Write one ``ledger.write`` event; never raises into the caller.

        A failure is reported as one line on stderr; it changes nothing about the
        write the event describes (an ok write stands, a failed one stays failed).
        When :meth:`require` has just refused the same file, the error the caller
        gets already says so, and nothing more is printed.
        """
        path = "the audit file"
        ok = False
        try:
            ok = fields.get("outcome") == "ok"
            path = self.path_for(policy)
            event = self._event(policy, fields)
            with self._lock:
                refused = path in self._refused
                self._refused.discard(path)
                try:
                    audit_file: Optional[_AuditFile] = self._file(path)
                    opened: Optional[BaseException] = None
                except Exception as exc:  # reported below, after the stderr copy
                    audit_file, opened = None, exc
                if audit_file is not None or policy.audit_stderr:
                    self._logger(audit_file, policy.audit_stderr).info(EVENT_WRITE, **event)
            if opened is not None and not refused:
                raise opened
        except Exception as exc:  # the audit must never break the caller's write
            _complain(path, exc, ok)

    @staticmethod
    def _event(policy: Policy, fields: Mapping[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = {key: value for key, value in plain(fields).items()}
        event.pop("event", None)
        event["policy"] = list(plain(policy.sources))
        event["raised_by_floor"] = bool(policy.raised)
        if policy.raised:
            event["requested_mode"] = policy.requested_mode
        return event

    @staticmethod
    def _logger(audit_file: Optional[_AuditFile], to_stderr: bool) -> Any:
        import structlog

        return structlog.wrap_logger(
            _Output(audit_file, to_stderr),
            processors=[
                _CONTEXT,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
                structlog.processors.JSONRenderer(serializer=_serialize),
            ],
            wrapper_class=structlog.BoundLogger,
            context_class=dict,
            cache_logger_on_first_use=False,
        )

    def close(self) -> None:
        """Close every audit file this trail holds open."""
        with self._lock:
            for audit_file in self._files.values():
                audit_file.close()
            self._files.clear()


def _why(exc: BaseException, path: str) -> str:
    """Say in a few words what is wrong, without the next-step advice of the full message."""
    if isinstance(exc, UnsafePathError):
        words = _UNSAFE_WORDS.get(exc.reason, f"failed a safety check ({exc.reason})")
        return f"{exc.path or path} {words}"
    if isinstance(exc, LedgerError):
        return exc.message.split(". ", 1)[0].rstrip(".")
    detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(detail).rstrip(".")


def _complain(path: str, exc: BaseException, ok: bool) -> None:
    """Say on stderr that the event was lost (or not rotated); claim the write only if it was ok."""
    if isinstance(exc, _RotationError):
        text = (f"ledger: the audit event was written, but {path} could not be rotated: "
                f"{_why(exc.cause, path)}. Fix the audit file's folder.\n")
    else:
        stands = "The ledger write stands; fix" if ok else "Fix"
        text = (f"ledger: could not write the audit event to {path}: {_why(exc, path)}. "
                f"{stands} the audit file or its folder.\n")
    with contextlib.suppress(Exception):
        sys.stderr.write(text)


_TRAIL = AuditTrail()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_TRAIL._after_fork)


def trail() -> AuditTrail:
    """Return the process's audit trail."""
    return _TRAIL
