"""Exceptions raised by the ledger, each tied to one exit code of ``ledgerctl``.

Every error carries the path it is about and a short reason slug that the audit
trail records. Each subclass also derives from the built-in exception a caller
would naturally catch (``OSError``, ``ValueError``, ``TimeoutError``...).
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "LedgerError",
    "UsageError",
    "CorruptLedgerError",
    "ProtectionUnavailableError",
    "LedgerIOError",
    "LockTimeoutError",
    "UnsafePathError",
    "PolicyError",
    "EXIT_OK",
    "EXIT_NOT_FOUND",
]

EXIT_OK = 0
EXIT_NOT_FOUND = 1


class LedgerError(Exception):
    """Root of every error the ledger raises on purpose.

    Attributes:
        message: One or two plain sentences for a person, naming the file and
            the next step.
        path: The file or folder the error is about, if any.
        reason: A short machine-readable slug, written to the audit trail.
    """

    exit_code = 70
    outcome = "error"
    default_reason = "error"

    def __init__(
        self, message: str, *, path: Optional[str] = None, reason: Optional[str] = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.reason = reason or self.default_reason

    def __str__(self) -> str:
        return self.message


class UsageError(LedgerError, ValueError):
    """The command or call was used the wrong way."""

    exit_code = 64
    default_reason = "usage"


class CorruptLedgerError(LedgerError, ValueError):
    """The ledger file exists but is not a valid ledger; nothing was changed."""

    exit_code = 65
    default_reason = "corrupt_ledger"


class ProtectionUnavailableError(LedgerError, RuntimeError):
    """Strict mode needs a protection that this platform or filesystem lacks."""

    exit_code = 69
    outcome = "refused"
    default_reason = "protection_unavailable"

    def __init__(
        self,
        message: str,
        *,
        path: Optional[str] = None,
        reason: Optional[str] = None,
        missing: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, path=path, reason=reason)
        self.missing = missing


class LedgerIOError(LedgerError, OSError):
    """Reading or writing failed (disk full, read-only folder...); the old ledger is intact."""

    exit_code = 74
    default_reason = "io_error"


class LockTimeoutError(LedgerError, TimeoutError):
    """The lock was not free within the policy's lock timeout."""

    exit_code = 75
    outcome = "refused"
    default_reason = "lock_timeout"


class UnsafePathError(LedgerError, PermissionError):
    """A safety check failed: a link, a reparse point, a foreign owner or loose permissions."""

    exit_code = 77
    outcome = "refused"
    default_reason = "unsafe_path"


class PolicyError(LedgerError, ValueError):
    """A policy file cannot be read, is not trusted, is not valid, or does not exist."""

    exit_code = 78
    outcome = "refused"
    default_reason = "bad_policy"
