"""Policies: which mode the ledger runs in, and the settings that go with it."""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Mapping, NamedTuple, Optional

__all__ = ["MODES", "Policy", "load_policy", "mode_rank"]

MODES = ("legacy", "secure", "strict")


def mode_rank(mode: str) -> int:
    """Order modes from weakest (0) to strongest."""
    return MODES.index(mode)


class Policy(NamedTuple):
    """The effective policy of one command.

    Attributes:
        mode: ``strict``, ``secure`` or ``legacy``, after the machine floor.
        lock_timeout: Seconds to wait for the lock before giving up (exit 75).
        minimum_mode: The machine's floor, if the machine policy sets one.
        requested_mode: The mode the explicit or user policy (or the default, under a
            floor) asked for, when the machine policy made it stronger; else ``None``.
        escalation_dir: Folder of the escalation ledger, if a policy sets it.
        escalation_cap: How many escalation entries to keep (newest).
        audit_log: Path of the audit file, if a policy sets it.
        audit_stderr: Also write each audit event to stderr.
        sources: The policy files that made this policy, strongest first.
        origins: For each key, the file that set it (``"default"`` if none).
    """

    mode: str = "secure"
    lock_timeout: float = 10.0
    minimum_mode: Optional[str] = None
    requested_mode: Optional[str] = None
    escalation_dir: Optional[str] = None
    escalation_cap: int = 200
    audit_log: Optional[str] = None
    audit_stderr: bool = False
    sources: tuple[str, ...] = ()
    origins: Mapping[str, str] = MappingProxyType({})

    @property
    def raised(self) -> bool:
        """Tell whether the machine policy (floor or mode) raised the mode asked for."""
        return self.requested_mode is not None and self.requested_mode != self.mode


def load_policy(
    explicit: Optional[str] = None, *, environ: Optional[Mapping[str, str]] = None
) -> Policy:
    """Load the effective policy (machine, explicit, user, default)."""
    from ._policy_load import load

    return load(explicit, os.environ if environ is None else environ)
