"""A local JSON ledger that stays valid and private under many processes and users.

Quick use::

    from ledger import Ledger
    result = Ledger("~/.my-tool/history.json").append({"event": "declined"})
    print(result.protections)

The escalation ledger of the prompt hooks lives in :mod:`ledger.escalation`.
Names are imported lazily, so ``import ledger`` costs almost nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CorruptLedgerError,
    LedgerError,
    LedgerIOError,
    LockTimeoutError,
    PolicyError,
    ProtectionUnavailableError,
    UnsafePathError,
    UsageError,
)

if TYPE_CHECKING:
    from .policy import Policy, load_policy
    from .store import Ledger, WriteResult

__version__ = "0.1.0"

__all__ = [
    "Ledger",
    "WriteResult",
    "Policy",
    "load_policy",
    "LedgerError",
    "UsageError",
    "CorruptLedgerError",
    "ProtectionUnavailableError",
    "LedgerIOError",
    "LockTimeoutError",
    "UnsafePathError",
    "PolicyError",
]

_LAZY = {
    "Ledger": ".store",
    "WriteResult": ".store",
    "Policy": ".policy",
    "load_policy": ".policy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
