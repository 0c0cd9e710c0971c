"""Full disks and I/O errors: a clear exit code, the old ledger byte-identical, no temp left.

Each fault is real or injected in a fresh ``ledgerctl`` process: a small
``RLIMIT_FSIZE`` (the kernel answers ``EFBIG``), a read-only folder (for an
unprivileged uid, since root ignores mode bits), and ``ENOSPC``/``EDQUOT``/``EIO``
raised by ``fsync`` or ``write``. The audit event of the failed write is still written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from conftest import audit_events, default_audit_file
from ledger.escalation import LEDGER_NAME
from privdrop import VICTIM, Runtime, runtime  # noqa: F401

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX faults")

SIG = "c" * 64
RECORD = ["record", SIG, "cur", "rec", "declined", "new-run"]


def _old_ledger(folder: Path, count: int = 40) -> bytes:
    """Write an escalation ledger of ``count`` entries (mode 0600) and return its bytes."""
    entries = [{"signal_hash": SIG, "current_profile": "cur", "recommended": "rec",
                "user_response": "declined", "timestamp": 1_700_000_000 + n,
                "run_id": f"old-{n}", "action_taken": "stayed"} for n in range(count)]
    path = folder / LEDGER_NAME
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    path.chmod(0o600)
    return path.read_bytes()


def _temps(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder)
            if name.startswith(f".{LEDGER_NAME}.") and name.endswith(".tmp")]


def _run(script_or_args: Any, folder: Path, *args: str,
         preexec: Optional[Callable[[], None]] = None) -> subprocess.CompletedProcess[str]:
    """Run ``ledgerctl`` (a list of args) or ``python -c script args`` with the ledger in
    ``folder``."""
    env = dict(os.environ, PF_ESCALATION_LEDGER_DIR=str(folder))
    if isinstance(script_or_args, str):
        command = [sys.executable, "-c", textwrap.dedent(script_or_args), *args]
    else:
        command = [sys.executable, "-m", "ledger", *script_or_args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60,
                          preexec_fn=preexec)


def _assert_clean_failure(done: subprocess.CompletedProcess[str], folder: Path, old: bytes,
                          reason: str, code: int = 74, outcome: str = "error") -> None:
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert str(folder) in done.stderr
    assert (folder / LEDGER_NAME).read_bytes() == old
    assert _temps(folder) == []
    events = audit_events(default_audit_file())
    assert [e["outcome"] for e in events] == [outcome]
    assert events[0]["reason"] == reason and events[0]["event"] == "ledger.write"


def test_file_size_limit_reached_while_writing_the_temp_file(ledger_dir: Path) -> None:
    """Under ``RLIMIT_FSIZE`` just above the old ledger's size the new one cannot be
    written (``EFBIG``, like a full quota): exit 74, the old ledger intact, no temp."""
    import resource

    old = _old_ledger(ledger_dir)
    limit = len(old) + 64

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = _run(RECORD, ledger_dir, preexec=small_files)

    _assert_clean_failure(done, ledger_dir, old, "io_error:efbig")
    assert "free some space" in done.stderr


INJECT = """
import errno, os, sys
real_write, real_fsync = os.write, os.fsync
where, code = sys.argv[1], getattr(errno, sys.argv[2])

def fail():
    raise OSError(code, os.strerror(code))

def fsync(fd):
    if where == "fsync":
        fail()
    return real_fsync(fd)

def write(fd, data):
    # Only the new ledger's bytes (a JSON array), not the audit line (an object).
    if where == "write" and bytes(data[:1]) == b"[":
        fail()
    return real_write(fd, data)

os.fsync, os.write = fsync, write
from ledger.cli import main
sys.exit(main(["record", "%s", "cur", "rec", "declined", "new-run"]))
""" % SIG


@pytest.mark.parametrize("where", ["fsync", "write"])
@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EIO"])
def test_disk_error_while_writing_the_temp_file(ledger_dir: Path, where: str, code: str) -> None:
    """``ENOSPC``, ``EDQUOT`` or ``EIO`` from the temp file's ``write`` or ``fsync``:
    exit 74 naming the file, the old ledger byte-identical, the temp file removed,
    and an audit event with outcome "error"."""
    old = _old_ledger(ledger_dir)

    done = _run(INJECT, ledger_dir, where, code)

    _assert_clean_failure(done, ledger_dir, old, f"io_error:{code.lower()}")


FOLDER_FSYNC_FAILS = """
import errno, os, sys
real_fsync, calls = os.fsync, []

def fsync(fd):
    calls.append(fd)
    if len(calls) == 2:
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    return real_fsync(fd)

os.fsync = fsync
from ledger.cli import main
sys.exit(main(["record", "%s", "cur", "rec", "declined", "new-run"]))
""" % SIG


def test_folder_fsync_failing_after_the_replace_says_so(ledger_dir: Path) -> None:
    """If only the folder's fsync fails, the replace already happened: exit 74 with a
    message that says the ledger was replaced (not that the old one is intact)."""
    _old_ledger(ledger_dir)

    done = _run(FOLDER_FSYNC_FAILS, ledger_dir)

    assert done.returncode == 74, done.stderr
    assert "was replaced" in done.stderr and "intact" not in done.stderr
    records = json.loads((ledger_dir / LEDGER_NAME).read_text(encoding="utf-8"))
    assert [r["run_id"] for r in records][-2:] == ["old-39", "new-run"]
    assert _temps(ledger_dir) == []
    assert audit_events(default_audit_file())[-1]["reason"] == "folder_fsync_failed"


VICTIM_RECORD = """
import sys
from ledger.cli import main
sys.exit(main(["record", "%s", "cur", "rec", "declined", "new-run"]))
""" % SIG


@pytest.mark.parametrize("with_lock", [True, False], ids=["lock exists", "no lock yet"])
def test_read_only_folder(request: pytest.FixtureRequest, tmp_path: Path,
                          with_lock: bool) -> None:
    """The user's own ledger folder is read-only (0500): the temp file (or the lock file)
    cannot be created, so the write is refused with 77 (permission denied), the old
    ledger byte-identical, nothing created, and the refusal audited. As root (who ignores
    mode bits) the writer runs as an unprivileged uid; otherwise as the current user."""
    as_root = os.geteuid() == 0
    rt: Optional[Runtime] = request.getfixturevalue("runtime") if as_root else None
    uid = VICTIM if as_root else os.geteuid()
    base = rt.scratch("read-only") if rt else tmp_path / "read-only"
    base.mkdir(exist_ok=True)
    home = base / "home"
    home.mkdir()
    folder = base / "ledger"
    folder.mkdir()
    old = _old_ledger(folder)
    if with_lock:
        (folder / (LEDGER_NAME + ".lock")).write_text("")
    for path in [home, folder, *folder.iterdir()]:
        os.chown(path, uid, uid if as_root else os.getegid())
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    os.chmod(folder, 0o500)
    entries = sorted(os.listdir(folder))

    try:
        if rt:
            done = rt.run(VICTIM, VICTIM_RECORD, [],
                          rt.env(VICTIM, home, PF_ESCALATION_LEDGER_DIR=str(folder)))
        else:
            done = subprocess.run(
                [sys.executable, "-c", VICTIM_RECORD], capture_output=True, text=True,
                timeout=60, env=dict(os.environ, PF_ESCALATION_LEDGER_DIR=str(folder),
                                     XDG_STATE_HOME=str(home / ".local" / "state")))
    finally:
        os.chmod(folder, 0o700)

    assert done.returncode == 77, done.stderr
    assert "Permission denied" in done.stderr and str(folder) in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert (folder / LEDGER_NAME).read_bytes() == old
    assert sorted(os.listdir(folder)) == entries
    audit = home / ".local" / "state" / "ledger" / "log" / "audit.jsonl"
    events = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    assert [(e["outcome"], e["reason"]) for e in events] == [("refused", "permission_denied")]
