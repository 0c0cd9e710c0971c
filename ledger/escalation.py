"""The escalation ledger: which upgrade prompts a person declined, and when.

Compatible with the hook that came before: the same file
(``escalation-history.json`` in ``$PF_ESCALATION_LEDGER_DIR``, default
``~/.preview-forge``), the same entry keys and the same signal hashes.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Union

from .policy import Policy
from .records import Record

if TYPE_CHECKING:
    from .store import Ledger

__all__ = [
    "LEDGER_NAME",
    "DIR_ENV",
    "REPLAY_WINDOW",
    "signal_hash",
    "action_for",
    "make_entry",
    "ledger_dir",
    "open_ledger",
    "lookup",
    "replay_safe",
    "validate_entry",
]

LEDGER_NAME = "escalation-history.json"
DIR_ENV = "PF_ESCALATION_LEDGER_DIR"
DEFAULT_DIR = "~/.preview-forge"
REPLAY_WINDOW = 24 * 60 * 60
_SEPARATOR = "\x1f"
_ACTIONS = {"forced": "force_upgraded", "accepted": "upgraded"}
_OTHER_TEXT_KEYS = ("current_profile", "recommended", "run_id", "action_taken")
# Beyond 2**53 seconds a float no longer holds a timestamp exactly (and 1e400 reads as inf).
_MAX_TIMESTAMP = 2.0**53


def signal_hash(categories: Union[Iterable[str], str], stage: Optional[str] = None) -> str:
    """Hash a set of signal categories (and an optional stage) as the old hook did.

    Categories are trimmed and lowercased; empty ones and duplicates are dropped;
    the rest are sorted, the stage marker goes first, and the parts are joined
    with U+001F before SHA-256.
    """
    import hashlib  # loads OpenSSL: only the hash command needs it

    if isinstance(categories, str):
        categories = categories.split(",")
    parts = sorted({item.strip().lower() for item in categories if item.strip()})
    if stage is not None:
        parts.insert(0, f"__stage:{stage.lower()}__")
    return hashlib.sha256(_SEPARATOR.join(parts).encode("utf-8")).hexdigest()


def action_for(response: str) -> str:
    """Return ``action_taken`` for a user response."""
    return _ACTIONS.get(response, "stayed")


def make_entry(
    sig: str, current: str, recommended: str, response: str, run_id: str,
    *, now: Optional[float] = None,
) -> Record:
    """Build one ledger entry with the old hook's keys, in its order."""
    return {
        "signal_hash": sig,
        "current_profile": current,
        "recommended": recommended,
        "user_response": response,
        "timestamp": int(time.time() if now is None else now),
        "run_id": run_id,
        "action_taken": action_for(response),
    }


def validate_entry(entry: Record, index: int) -> Optional[str]:
    """Return what is wrong with an escalation entry, or ``None``."""
    # This runs for every entry of every read: the entry's place is spelled out only on a problem.
    problem = _entry_problem(entry)
    if problem is None:
        return None
    where = "the new entry" if index < 0 else f"entry {index}"
    return f"{where} {problem}"


def _entry_problem(entry: Record) -> Optional[str]:
    for key in ("signal_hash", "user_response"):
        if not isinstance(entry.get(key), str):
            return f"has no text {key!r}"
    stamp = entry.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        return "has no numeric 'timestamp'"
    if not -_MAX_TIMESTAMP <= stamp <= _MAX_TIMESTAMP:
        return "has a 'timestamp' out of range"
    for key in _OTHER_TEXT_KEYS:
        if not isinstance(entry.get(key, ""), str):
            return f"has a {key!r} that is not text"
    return None


def ledger_dir(policy: Policy, environ: Optional[Mapping[str, str]] = None) -> str:
    """Return the escalation ledger's folder: the variable, the policy, or the default."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(DIR_ENV) or policy.escalation_dir or DEFAULT_DIR
    return os.path.abspath(os.path.expanduser(chosen))


def open_ledger(policy: Optional[Policy] = None, *, directory: Optional[str] = None) -> Ledger:
    """Open the escalation ledger at its default place (or in ``directory``)."""
    from .policy import load_policy
    from .store import Ledger

    policy = policy if policy is not None else load_policy()
    folder = directory if directory is not None else ledger_dir(policy)
    return Ledger(
        os.path.join(folder, LEDGER_NAME),
        policy=policy,
        cap=policy.escalation_cap,
        validate=validate_entry,
    )


def lookup(records: list[Record], sig: str) -> Optional[Record]:
    """Return the newest entry for ``sig``, or ``None``."""
    for entry in reversed(records):
        if entry.get("signal_hash") == sig:
            return entry
    return None


def replay_safe(records: list[Record], sig: str, *, now: Optional[float] = None) -> bool:
    """Tell whether prompting for ``sig`` is fine: ``False`` if it was declined within 24 h."""
    now = time.time() if now is None else now
    for entry in records:
        if (
            entry.get("signal_hash") == sig
            and entry.get("user_response") == "declined"
            and now - float(entry["timestamp"]) < REPLAY_WINDOW
        ):
            return False
    return True

