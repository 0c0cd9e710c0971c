"""``ledgerctl doctor``: which protections this machine gives the configured ledger.

The doctor opens the ledger's folder read-only through the backend that
``secure`` and ``strict`` use, exactly as a write would check it, but creates
nothing: for a folder that does not exist yet it checks the nearest folder that
does. It then says whether ``strict`` would pass and what to change. It always
exits 0 once it could make its report; the findings are in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, TextIO

from . import _netfs
from ._backend import Backend, Folder, backend_for
from .errors import EXIT_OK, LedgerError
from .policy import Policy, load_policy
from .protections import DESCRIPTIONS, PROTECTIONS, Report

__all__ = ["run", "diagnose"]

# Which protection a refused folder check stands for, by the error's reason.
_CHECK_OF_REASON = {
    "symlink": "folder_check",
    "not_a_folder": "folder_check",
    "reparse_point": "folder_check",
    "foreign_owner": "owner_check",
    "loose_permissions": "permission_check",
    "permission_denied": "permission_check",
}


@dataclass
class _FolderLook:
    """What opening one folder (or its nearest existing parent) showed."""

    path: str
    checked: str
    exists: bool
    report: Report = field(default_factory=Report)
    error: Optional[LedgerError] = None
    folder: Optional[Folder] = None
    note: Optional[str] = None
    filesystem: Optional[dict[str, Any]] = None


def _nearest_existing(path: str) -> str:
    # Whatever stands at a name (a link, a file, a FIFO) is what a write would meet there.
    here = path
    while not os.path.lexists(here):
        above = os.path.dirname(here)
        if above == here:
            break
        here = above
    return here


def _where_written(backend: Backend, path: str) -> str:
    """Return the folder a write to ``path`` would use: on POSIX, the folders above it are
    resolved through the user's own links, as the write resolves them; the folder itself
    is never followed."""
    if backend.name != "posix":
        return path
    from ._posix import _trusted_realpath

    absolute = os.path.abspath(os.path.expanduser(path))
    parent, leaf = os.path.split(absolute)
    return os.path.join(_trusted_realpath(parent), leaf) if leaf else absolute


def _look(backend: Backend, path: str) -> _FolderLook:
    """Open ``path`` (or its nearest existing parent) read-only through ``backend``."""
    try:
        where = _where_written(backend, path)
    except LedgerError as exc:
        look = _FolderLook(path=path, checked=path, exists=os.path.lexists(path))
        look.error = exc
        return look
    exists = os.path.lexists(where)
    look = _FolderLook(path=path, checked=where if exists else _nearest_existing(where),
                       exists=exists)
    try:
        look.folder = backend.open_folder(look.checked, create=False, report=look.report)
    except LedgerError as exc:
        look.error = exc
    except OSError as exc:
        look.error = LedgerError(
            f"Could not open {look.checked}: {exc.strerror or exc}.", path=look.checked,
            reason="unreadable_folder",
        )

    # A missing folder is created 0700 inside its parent, which is then only checked
    # as a folder on the way: a sticky shared folder such as /tmp is fine there.
    if not exists and look.error is not None and look.error.reason == "loose_permissions":
        try:
            sticky = bool(os.stat(look.checked).st_mode & stat.S_ISVTX)
        except OSError:
            sticky = False
        if sticky:
            look.error = None
            look.note = (f"{look.checked} is a shared sticky folder; the ledger folder will "
                         "be created inside it, private to you")
            _probe_filesystem(look)
    return look


def _probe_filesystem(look: _FolderLook) -> None:
    """Tell local from network for a folder the backend did not keep open."""
    if sys.platform == "win32":
        return
    try:
        fd = os.open(look.checked, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fs_type, remote = _netfs.filesystem_of(fd)
    finally:
        os.close(fd)
    look.filesystem = {"type": fs_type, "remote": remote}
    if remote is None:
        look.report.lack("local_fs", f"could not tell whether {look.checked} is local")
    elif remote:
        look.report.lack("local_fs", f"{look.checked} is on a network filesystem ({fs_type})")
    else:
        look.report.apply("local_fs", f"{_netfs.MECHANISM}:{fs_type}")


def _filesystem(look: _FolderLook) -> dict[str, Any]:
    if look.filesystem is not None:
        return look.filesystem
    fd = getattr(look.folder, "fd", None)
    if isinstance(fd, int) and fd >= 0:
        fs_type, remote = _netfs.filesystem_of(fd)
        return {"type": fs_type, "remote": remote}
    applied = look.report.applied.get("local_fs")
    if applied and ":" in applied:
        return {"type": applied.split(":", 1)[1], "remote": False}
    return {"type": "unknown", "remote": None}


def _file_check(look: _FolderLook, name: str, what: str, *, parse: bool) -> dict[str, Any]:
    """Open one file of the folder as a write would (checked, no links) and describe it."""
    entry: dict[str, Any] = {"name": what, "path": os.path.join(look.path, name)}
    if look.folder is None or not look.exists:
        entry.update(ok=True, detail="absent (it will be created on the first write)")
        return entry
    from .records import MAX_LEDGER_BYTES, parse as parse_records

    try:
        data = look.folder.read(name, MAX_LEDGER_BYTES)
        if data is None:
            entry.update(ok=True, detail="absent (it will be created on the first write)")
        elif parse:
            from .escalation import validate_entry

            records = parse_records(data, entry["path"], validate_entry)
            entry.update(ok=True, detail=f"valid, {len(records)} entries")
        else:
            entry.update(ok=True, detail="a regular file of yours with one link")
    except LedgerError as exc:
        entry.update(ok=False, detail=exc.message, reason=exc.reason, exit_code=exc.exit_code)
    except OSError as exc:
        entry.update(ok=False, detail=f"cannot be read: {exc.strerror or exc}", reason="io_error")
    return entry


def diagnose(folder: str, policy: Policy, *, ledger_name: str) -> dict[str, Any]:
    """Examine ``folder`` as the ledger's folder; return the findings as plain data."""
    folder = os.path.abspath(os.path.expanduser(folder))
    result: dict[str, Any] = {
        "folder": folder,
        "ledger": os.path.join(folder, ledger_name),
        "platform": sys.platform,
        "mode": policy.mode,
        "policy": list(policy.sources),
    }
    try:
        backend = backend_for("secure")
        offered = backend.capabilities()
    except ImportError:
        result.update(backend=None, exists=os.path.isdir(folder), checked_folder=None,
                      filesystem={"type": "unknown", "remote": None}, protections={},
                      checks=[], missing=list(PROTECTIONS), strict_would_pass=False,
                      secure_would_pass=False,
                      advice=[f"No secure backend exists for {sys.platform} in this version; "
                              "only legacy mode can run here."])
        return result

    look = _look(backend, folder)
    try:
        result.update(backend=backend.name, exists=look.exists, checked_folder=look.checked,
                      filesystem=_filesystem(look))
        checks = [_folder_check(look)]
        checks.append(_file_check(look, ledger_name, "ledger file", parse=True))
        checks.append(_file_check(look, f"{ledger_name}.lock", "lock file", parse=False))
    finally:
        if look.folder is not None:
            look.folder.close()
    checks.append(_audit_check(backend, policy))

    failed = {_CHECK_OF_REASON.get(look.error.reason, "folder_check")} if look.error else set()
    protections: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for name in PROTECTIONS:
        mechanism = offered.get(name)
        status, note = "ok", None
        if mechanism is None:
            status, note = "missing", f"not available on {sys.platform}"
        elif name in look.report.missing:
            status = "missing"
            note = next((text for text in look.report.notes if "filesystem" in text or
                         "local" in text), None)
        elif name in failed:
            status, note = "failed", look.error.message if look.error else None
        if status == "missing":
            missing.append(name)
        protections[name] = {"mechanism": mechanism, "status": status, "note": note,
                             "what": DESCRIPTIONS[name]}

    secure_ok = all(check["ok"] for check in checks)
    result.update(
        protections=protections,
        checks=checks,
        missing=missing,
        secure_would_pass=secure_ok,
        strict_would_pass=secure_ok and not missing,
        advice=_advice(policy, look, checks, missing),
    )
    return result


def _folder_check(look: _FolderLook) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "ledger folder", "path": look.path}
    if look.error is not None:
        entry.update(ok=False, detail=look.error.message, reason=look.error.reason,
                     exit_code=look.error.exit_code)
        return entry
    if look.exists:
        detail = "not a link, yours (or the admin's), not writable by others"
    else:
        detail = f"absent; {look.checked}, where it will be created, passes the checks"
    if look.note:
        detail = f"absent; {look.note}"
    entry.update(ok=True, detail=detail)
    return entry


def _audit_check(backend: Backend, policy: Policy) -> dict[str, Any]:
    """Check the audit log's folder the way strict mode opens it."""
    from .audit import default_audit_path

    path = os.path.abspath(os.path.expanduser(policy.audit_log or default_audit_path()))
    look = _look(backend, os.path.dirname(path))
    if look.folder is not None:
        look.folder.close()
    entry: dict[str, Any] = {"name": "audit log folder", "path": os.path.dirname(path)}
    if look.error is not None:
        entry.update(ok=False, detail=look.error.message, reason=look.error.reason,
                     exit_code=look.error.exit_code)
    else:
        entry.update(ok=True, detail="usable" if look.exists else "absent; can be created")
    return entry


def _advice(
    policy: Policy, look: _FolderLook, checks: list[dict[str, Any]], missing: list[str]
) -> list[str]:
    advice = []
    for check in checks:
        if not check["ok"]:
            advice.append(f"{check['name']}: {check['detail']}")
    if "local_fs" in missing:
        advice.append(
            "The folder is not known to be on a local filesystem, where locks are real: put "
            "the ledger on a local disk (PF_ESCALATION_LEDGER_DIR or the policy's "
            "escalation_dir); until then strict refuses and secure records local_fs as missing."
        )
    others = [name for name in missing if name != "local_fs"]
    if others:
        advice.append(
            f"This platform cannot give {', '.join(others)}: strict mode cannot run here; "
            "secure records them as missing on every write."
        )
    if policy.mode == "legacy":
        advice.append(
            "The policy in force is legacy: no lock and no checks. Choose secure (the default) "
            "unless this is a known single-user machine."
        )
    if not advice:
        advice.append("Nothing to change: strict mode would pass here.")
    return advice


def _print_table(info: dict[str, Any], out: TextIO) -> None:
    state = "exists" if info["exists"] else f"absent; checked {info['checked_folder']}"
    out.write(f"Ledger folder: {info['folder']} ({state})\n")
    fs = info["filesystem"]
    where = {True: "network", False: "local", None: "not known"}[fs["remote"]]
    out.write(f"Platform: {info['platform']}, backend {info['backend']}, "
              f"filesystem {fs['type']} ({where})\n")
    sources = ", ".join(info["policy"]) or "built-in default"
    out.write(f"Policy in force: mode {info['mode']} (from {sources})\n\n")

    width = max(len(name) for name in PROTECTIONS) + 2
    mech_width = max([len(str(p["mechanism"])) for p in info["protections"].values()] + [8]) + 2
    out.write(f"  {'protection':<{width}}{'mechanism':<{mech_width}}status\n")
    for name, entry in info["protections"].items():
        status = entry["status"] + (f" ({entry['note']})" if entry["note"] else "")
        mechanism = entry["mechanism"] or "-"
        out.write(f"  {name:<{width}}{mechanism:<{mech_width}}{status}\n")

    out.write("\nChecks:\n")
    for check in info["checks"]:
        mark = "ok" if check["ok"] else "FAILED"
        out.write(f"  {check['name']}: {mark}: {check['detail']}\n")
    verdict = "would pass" if info["strict_would_pass"] else "would refuse"
    out.write(f"\nStrict mode {verdict}; secure mode "
              f"{'would write' if info['secure_would_pass'] else 'would refuse'}.\n")
    out.write("What to change:\n")
    for line in info["advice"]:
        out.write(f"  - {line}\n")


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Handle ``ledgerctl doctor [--json] [--dir FOLDER]``; exit 0 once the report is made."""
    from .escalation import LEDGER_NAME, ledger_dir

    policy = load_policy(getattr(args, "policy", None))
    folder = args.dir if args.dir else ledger_dir(policy)
    info = diagnose(folder, policy, ledger_name=LEDGER_NAME)
    if args.json:
        out.write(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    else:
        _print_table(info, out)
    return EXIT_OK
