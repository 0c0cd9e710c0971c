"""The audit trail: one JSON line per write attempt, written with structlog.

The library never configures structlog or the standard ``logging`` module: it
builds its own bound logger with its own processors around a small file writer,
so a host program's logging stays exactly as that program set it.
"""

from __future__ import annotations

import datetime
import getpass
import os
import socket
import sys
from typing import Any, Optional

from .errors import LedgerError, LedgerIOError
from .policy import Policy
from .protections import Report

__all__ = ["AuditTrail", "trail", "default_audit_path"]

_VERSION = "0.1.0"


def default_audit_path() -> str:
    """Return the default audit file, under the user's log folder."""
    import platformdirs

    return os.path.join(platformdirs.user_log_dir("ledger", appauthor=False), "audit.jsonl")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # getuser raises several kinds when no name is known
        return str(getattr(os, "getuid", lambda: "unknown")())


class _LineWriter:
    """The logger at the end of the structlog chain: appends one line to a descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def msg(self, message: str) -> None:
        data = (message + "\n").encode("utf-8", "backslashreplace")
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    info = warning = error = msg


def _add_context(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event.setdefault("timestamp", datetime.datetime.now(datetime.timezone.utc).isoformat())
    event.setdefault("pid", os.getpid())
    event.setdefault("user", _user())
    event.setdefault("host", socket.gethostname())
    event.setdefault("platform", sys.platform)
    event.setdefault("version", _VERSION)
    return event


class AuditTrail:
    """Writes audit events to the policy's audit file."""

    def __init__(self) -> None:
        self._fd: Optional[int] = None
        self._path: Optional[str] = None

    def path_for(self, policy: Policy) -> str:
        return os.path.abspath(os.path.expanduser(policy.audit_log or default_audit_path()))

    def _open(self, policy: Policy) -> int:
        path = self.path_for(policy)
        if self._fd is not None and self._path == path:
            return self._fd
        from ._backend import backend_for

        folder_path, name = os.path.split(path)
        backend = backend_for("secure")
        folder = backend.open_folder(folder_path, create=True, report=Report())
        try:
            fd = folder.open_append(name)
        finally:
            folder.close()
        self._fd, self._path = fd, path
        return fd

    def require(self, policy: Policy) -> None:
        """Open the audit file now, or raise: strict mode writes nothing unaudited."""
        try:
            self._open(policy)
        except LedgerError:
            raise
        except OSError as exc:
            path = self.path_for(policy)
            raise LedgerIOError(
                f"Strict mode needs the audit file {path}, which cannot be opened: "
                f"{exc.strerror or exc}. Fix it and run the command again; nothing was written.",
                path=path,
                reason="audit_unavailable",
            ) from exc

    def write_event(self, policy: Policy, fields: dict[str, Any]) -> None:
        """Write one ``ledger.write`` event; never raises into the caller."""
        try:
            import structlog

            fd = self._open(policy)
            fields = dict(fields)
            fields["policy"] = list(policy.sources)
            if policy.raised:
                fields["requested_mode"] = policy.requested_mode
                fields["raised_by_floor"] = True
            log = structlog.wrap_logger(
                _LineWriter(fd),
                processors=[_add_context, structlog.processors.JSONRenderer(default=str)],
                wrapper_class=structlog.BoundLogger,
                context_class=dict,
                cache_logger_on_first_use=False,
            )
            log.info("ledger.write", **fields)
        except Exception as exc:  # the audit must never break the caller's write
            sys.stderr.write(f"ledger: could not write the audit event: {exc}\n")


_TRAIL = AuditTrail()


def trail() -> AuditTrail:
    """Return the process's audit trail."""
    return _TRAIL
