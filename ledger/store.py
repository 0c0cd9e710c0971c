"""The platform-neutral ledger: one write is six steps, each through a backend.

1. the effective policy is loaded (a broken one stops everything);
2. the folder is opened and checked, and kept open;
3. the side lock ``<name>.lock`` is opened without following links, checked and locked;
4. the ledger is read and validated under the lock;
5. the new content goes to a fresh temp file, fsynced, then replaces the ledger
   atomically, and the rename is made durable;
6. the lock is released and one audit event names what was applied and what was not.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Iterator, NamedTuple, Optional, Union

from ._backend import Backend, backend_for, temp_owner
from .errors import LedgerError, LedgerIOError, ProtectionUnavailableError, UsageError
from .policy import Policy, load_policy
from .protections import PROTECTIONS, Report
from .records import MAX_LEDGER_BYTES, Record, Validator, parse, serialize

__all__ = ["Ledger", "WriteResult"]

PathLike = Union[str, "os.PathLike[str]"]
Mutation = Callable[[list[Record]], list[Record]]

_legacy_warned = False


def _warn_legacy() -> None:
    global _legacy_warned
    if _legacy_warned:
        return
    _legacy_warned = True
    if sys.stderr is None:  # started with stderr closed: nobody to warn, the write goes on
        return
    sys.stderr.write(
        "ledger: legacy mode: there is no concurrency lock and no link checks; "
        "several users sharing one home is not supported.\n"
    )


class WriteResult(NamedTuple):
    """What one write did.

    Attributes:
        records: The ledger's records after the write, newest last.
        pruned: How many of the oldest records were dropped to keep the cap.
        mode: The mode the write ran in.
        protections: Each protection mapped to the mechanism that applied it, or ``None``.
        missing: Protections the mode wanted that this platform or filesystem lacked.
    """

    records: list[Record]
    pruned: int
    mode: str
    protections: dict[str, Optional[str]]
    missing: list[str]


class Ledger:
    """A JSON ledger file: an array of objects, newest last.

    Args:
        path: The ledger file. Its folder is created (mode 0700) on the first write.
        policy: The policy to obey; by default the machine's effective policy. A policy
            given here is still raised to the machine policy's ``minimum_mode``.
        cap: Keep only the newest ``cap`` records (``None``: keep all).
        validate: Extra check for each record; returns a problem, or ``None`` if fine.
        audit: Write an audit event for every write attempt (the default).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        policy: Optional[Policy] = None,
        cap: Optional[int] = None,
        validate: Optional[Validator] = None,
        audit: bool = True,
    ) -> None:
        given = os.fspath(path)
        if not given:
            raise UsageError("The ledger's file name is empty; give the ledger's file name.")
        path = os.path.abspath(os.path.expanduser(given))
        self.folder, self.name = os.path.split(path)
        # abspath turns "." and "a/.." into a folder's own name: judge what was given.
        tail = os.path.split(given)[1]
        if not tail or tail in (".", "..") or not self.name:
            raise UsageError(f"{given} names a folder; give the ledger's file name.", path=path)
        # Compared as case-insensitive filesystems (and Windows' trailing dots) see names.
        folded = self.name.rstrip(". ").casefold()
        if folded.endswith(".lock") or temp_owner(self.name) is not None:
            raise UsageError(
                f"{path} has the name of a ledger's lock or temp file; choose another name.",
                path=path,
            )
        if cap is not None and cap < 1:
            raise UsageError(f"The cap must be at least 1, not {cap}.", path=path)
        self.path = path
        if policy is None:
            policy = load_policy()
        else:
            # A policy built by the caller still obeys the machine's floor.
            from ._policy_load import apply_machine_floor

            policy = apply_machine_floor(policy)
        self.policy = policy
        self.cap = cap
        self.validate = validate
        self.audit = audit

    @property
    def lock_name(self) -> str:
        """Name of the side lock file, in the ledger's folder."""
        return f"{self.name}.lock"

    # Reading.

    def records(self) -> list[Record]:
        """Return every record, oldest first; an absent ledger has none.

        Reads take no lock (the replace is atomic) but refuse links like writes do.
        """
        report = Report()
        backend = self._backend(report)
        try:
            folder = backend.open_folder(self.folder, create=False, report=report)
        except FileNotFoundError:
            return []
        try:
            self._refuse_if_strict(report)
            data = folder.read(self.name, MAX_LEDGER_BYTES)
        finally:
            folder.close()
        return [] if data is None else parse(data, self.path, self.validate)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())

    def latest(self, predicate: Callable[[Record], bool]) -> Optional[Record]:
        """Return the newest record for which ``predicate`` is true, or ``None``."""
        for record in reversed(self.records()):
            if predicate(record):
                return record
        return None

    # Writing.

    def append(self, record: Record) -> WriteResult:
        """Add ``record`` as the newest entry, pruning the oldest beyond the cap."""
        if not isinstance(record, dict):
            raise UsageError("A ledger record must be a JSON object.", path=self.path)
        try:
            json.dumps(record, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise UsageError(
                f"The new record cannot be stored as strict JSON ({exc}); use only objects, "
                "arrays, text, finite numbers, true, false and null.",
                path=self.path,
            ) from None
        if self.validate:
            problem = self.validate(record, -1)
            if problem:
                raise UsageError(f"The new record is not valid: {problem}.", path=self.path)
        return self.update(lambda records: records + [record])

    def update(self, mutate: Mutation) -> WriteResult:
        """Replace the records with ``mutate(records)``, under the lock.

        ``mutate`` sees the records as they are on disk once the lock is held.
        """
        start = time.monotonic()
        report = Report(wanted=() if self.policy.mode == "legacy" else PROTECTIONS)
        trail = self._trail()
        event: dict[str, Any] = {"outcome": "ok"}
        try:
            result = self._write(mutate, report, trail)
            event["pruned"] = result.pruned
            return result
        except LedgerError as exc:
            event.update(outcome=exc.outcome, reason=exc.reason, message=exc.message)
            raise
        except OSError as exc:
            error = LedgerIOError(
                f"Could not write {self.path}: {exc.strerror or exc}. The old ledger is intact.",
                path=self.path,
            )
            event.update(outcome="error", reason=error.reason, message=error.message)
            raise error from exc
        except BaseException as exc:
            event.update(outcome="error", reason=f"unexpected:{type(exc).__name__}")
            raise
        finally:
            if trail is not None:
                event.update(
                    ledger=self.path,
                    mode=self.policy.mode,
                    protections=dict(report.applied),
                    missing=list(report.missing),
                    duration_ms=round((time.monotonic() - start) * 1000, 3),
                )
                if report.notes:
                    event["notes"] = list(report.notes)
                trail.write_event(self.policy, event)

    def _write(self, mutate: Mutation, report: Report, trail: Any) -> WriteResult:
        if self.policy.mode == "strict" and trail is not None:
            trail.require(self.policy)
        backend = self._backend(report)
        folder = backend.open_folder(self.folder, create=True, report=report)
        try:
            self._refuse_if_strict(report)
            with folder.lock(self.lock_name, self.policy.lock_timeout):
                folder.remove_stale_temps(self.name)
                data = folder.read(self.name, MAX_LEDGER_BYTES)
                records = [] if data is None else parse(data, self.path, self.validate)
                updated = mutate(list(records))
                pruned = 0
                if self.cap is not None and len(updated) > self.cap:
                    pruned = len(updated) - self.cap
                    updated = updated[pruned:]
                folder.replace(self.name, self._encode(updated))
        finally:
            folder.close()
        return WriteResult(
            records=updated,
            pruned=pruned,
            mode=self.policy.mode,
            protections=dict(report.applied),
            missing=list(report.missing),
        )

    # Helpers.

    def _encode(self, records: Any) -> bytes:
        """Check what a write is about to store and encode it, refusing what cannot be read back."""
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise UsageError(
                f"The new content of {self.path} must be a list of JSON objects; nothing was "
                "written.",
                path=self.path,
            )
        if self.validate:
            for index, record in enumerate(records):
                problem = self.validate(record, index)
                if problem:
                    raise UsageError(
                        f"The new content of {self.path} is not valid: {problem}; nothing was "
                        "written.",
                        path=self.path,
                    )
        try:
            data = serialize(records)
        except (TypeError, ValueError, RecursionError) as exc:
            raise UsageError(
                f"The new content of {self.path} cannot be stored as strict JSON ({exc}); "
                "nothing was written.",
                path=self.path,
            ) from None
        if len(data) > MAX_LEDGER_BYTES:
            raise LedgerIOError(
                f"{self.path} would grow to {len(data)} bytes, more than the "
                f"{MAX_LEDGER_BYTES} bytes a ledger may have; nothing was written. Lower the "
                "cap, or move the ledger aside and start a new one.",
                path=self.path,
                reason="too_large",
            )
        return data

    def _backend(self, report: Report) -> Backend:
        mode = self.policy.mode
        if mode == "legacy":
            _warn_legacy()
        backend = backend_for(mode)
        for name, mechanism in backend.capabilities().items():
            if mechanism is None:
                report.lack(name, f"{name}: not available on {sys.platform} ({backend.name})")
        self._refuse_if_strict(report)
        return backend

    def _refuse_if_strict(self, report: Report) -> None:
        if self.policy.mode != "strict" or not report.missing:
            return
        names = ", ".join(report.missing)
        raise ProtectionUnavailableError(
            f"Strict mode refused to use {self.path}: this platform or filesystem cannot "
            f"give {names}. Move the ledger to a local folder, or ask the admin to relax "
            "the policy.",
            path=self.path,
            missing=tuple(report.missing),
        )

    def _trail(self) -> Any:
        # Strict mode writes nothing unaudited, whatever the caller asked.
        if not self.audit and self.policy.mode != "strict":
            return None
        from .audit import trail

        return trail()


