"""The lock: a holder that never lets go, and a lock that must not vanish behind our back.

A writer that cannot get the lock within the policy's ``lock_timeout`` exits 75 with a
message naming the lock file and, where it can be known, the process holding it. And
because the lock is a ``flock`` (not a POSIX record lock), opening and closing the lock
file again elsewhere in the holding process does not release it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import audit_events, default_audit_file, run_cli

pytestmark = pytest.mark.skipif(os.name == "nt", reason="flock is POSIX; Windows has its own")

LEDGER_HOLDER = textwrap.dedent(
    """
    import sys, time
    from ledger import Ledger

    def hang(records):
        sys.stdout.write("locked\\n")
        sys.stdout.flush()
        time.sleep(600)
        return records

    Ledger(sys.argv[1]).update(hang)
    """
)

RAW_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    sys.stdout.write("locked\\n")
    sys.stdout.flush()
    time.sleep(600)
    """
)

FLOCK_PROBE = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(1)
    sys.exit(0)
    """
)

OTHER_WRITER = textwrap.dedent(
    """
    import sys
    from ledger import Ledger, LockTimeoutError
    from ledger.policy import Policy
    try:
        Ledger(sys.argv[1], policy=Policy(lock_timeout=0.5)).append({"k": "other"})
    except LockTimeoutError:
        sys.exit(75)
    """
)


@pytest.fixture
def short_timeout(tmp_path: Path) -> Path:
    """A policy file that sets ``lock_timeout = 1``, for ``--policy``."""
    policy = tmp_path / "short.toml"
    policy.write_text("lock_timeout = 1\n", encoding="utf-8")
    policy.chmod(0o600)
    return policy


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by a test; killed at its end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.communicate()


def _hold(holders: list[subprocess.Popen[str]], script: str, path: Path) -> int:
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holders.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n", proc.stderr
    return proc.pid


def _pids_named(message: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"\bpid (\d+)", message)]


def test_ledger_process_that_hangs_holding_the_lock(ledger_dir: Path, short_timeout: Path,
                                                    holders: list[subprocess.Popen[str]]) -> None:
    """A ledger process hangs inside its write: the next writer exits 75 after the
    policy's one-second timeout, naming the lock file and the holder's pid; nothing
    is written and the attempt is audited."""
    path = ledger_dir / "book.json"
    assert run_cli("append", str(path), '{"k": 1}').returncode == 0
    before = path.read_bytes()
    holder = _hold(holders, LEDGER_HOLDER, path)

    done = run_cli("--policy", str(short_timeout), "append", str(path), '{"k": 2}')

    assert done.returncode == 75, done.stderr
    assert f"{path}.lock" in done.stderr and "within 1 s" in done.stderr
    assert _pids_named(done.stderr) == [holder]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert path.read_bytes() == before
    event = audit_events(default_audit_file())[-1]
    assert (event["outcome"], event["reason"]) == ("refused", "lock_timeout")


def test_other_program_holding_the_lock_is_not_mistaken_for_an_old_writer(
    ledger_dir: Path, short_timeout: Path, holders: list[subprocess.Popen[str]]
) -> None:
    """After a ledger write (which leaves its note in the lock file), a program that is
    not a ledger process takes the ``flock`` and keeps it. The next writer exits 75 naming
    the lock file. Where the system lists lock holders (Linux ``/proc/locks``) it names the
    real holder, never the earlier writer, which is long gone; elsewhere only the earlier
    writer's note is there to read (a limit written in docs/threat-model.md)."""
    path = ledger_dir / "escalation-history.json"
    env = {"PF_ESCALATION_LEDGER_DIR": str(ledger_dir)}
    assert run_cli("record", "a" * 64, "c", "r", "declined", "r1", env=env).returncode == 0
    earlier = _pids_named((ledger_dir / "escalation-history.json.lock").read_text())
    holder = _hold(holders, RAW_HOLDER, Path(f"{path}.lock"))

    done = run_cli("record", "--policy", str(short_timeout), "a" * 64, "c", "r", "declined",
                   "r2", env=env)

    assert done.returncode == 75, done.stderr
    assert f"{path}.lock" in done.stderr and "within 1 s" in done.stderr
    if sys.platform.startswith("linux"):
        assert _pids_named(done.stderr) == [holder]
        assert not set(earlier) & {holder}
    assert [r["run_id"] for r in json.loads(path.read_text())] == ["r1"]


FORKING_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    if os.fork() == 0:
        os.close(1)  # the child keeps the lock, not the test's pipe
        time.sleep(600)
        os._exit(0)
    sys.stdout.write("locked\\n")
    sys.stdout.flush()
    os._exit(0)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_lock_passed_on_to_a_child_names_the_child_not_only_the_dead_parent(
        ledger_dir: Path, short_timeout: Path, holders: list[subprocess.Popen[str]]) -> None:
    """A program takes the lock, starts a child and ends: the child holds the lock now.
    The timeout message says that the pid which took it has ended, and names the pid that
    has the lock file open, so that "end the process that holds it" can be followed."""
    path = ledger_dir / "book.json"
    lock = ledger_dir / "book.json.lock"
    lock.touch(mode=0o600)
    parent = _hold(holders, FORKING_HOLDER, lock)
    holders[-1].wait(timeout=60)
    child = _openers(lock)
    try:
        done = run_cli("append", "--policy", str(short_timeout), str(path), "{}")
        assert done.returncode == 75, done.stderr
        assert f"pid {parent}, which has ended" in done.stderr
        assert child and f"open in pid {child[0]}" in done.stderr
    finally:
        for pid in child:
            os.kill(pid, signal.SIGKILL)
    assert not path.exists()


def _openers(path: Path) -> list[int]:
    """Pids (other than this one) with ``path`` open."""
    inode = path.stat().st_ino
    return [int(pid) for pid in os.listdir("/proc") if pid.isdigit()
            and int(pid) != os.getpid() and _has_open_safe(int(pid), inode)]


def _has_open_safe(pid: int, inode: int) -> bool:
    try:
        return _has_open(pid, inode)
    except OSError:
        return False


def test_reopening_the_lock_file_in_the_holding_process_keeps_the_lock(ledger_dir: Path) -> None:
    """While a write holds the lock (inside ``Ledger.update``), the same process opens
    and closes the lock file again in several ways. A child process still finds the
    lock held (``flock`` with ``LOCK_NB`` fails) and another writer times out (75);
    once the write is over, both get it."""
    from ledger import Ledger

    path = ledger_dir / "book.json"
    lock = ledger_dir / "book.json.lock"
    seen: dict[str, int] = {}

    def probe() -> tuple[int, int]:
        flock = subprocess.run([sys.executable, "-c", FLOCK_PROBE, str(lock)], timeout=60)
        writer = subprocess.run([sys.executable, "-c", OTHER_WRITER, str(path)], timeout=60)
        return flock.returncode, writer.returncode

    def meddle(records: list[dict[str, str]]) -> list[dict[str, str]]:
        with open(lock, "rb") as handle:
            handle.read()
        os.close(os.open(lock, os.O_RDWR))
        duplicate = os.dup(os.open(lock, os.O_RDONLY))
        os.close(duplicate)
        seen["flock"], seen["writer"] = probe()
        return records + [{"k": "mine"}]

    Ledger(path).update(meddle)

    assert seen == {"flock": 1, "writer": 75}
    assert probe() == (0, 0)
    assert json.loads(path.read_text()) == [{"k": "mine"}, {"k": "other"}]


PATIENT_WRITER = textwrap.dedent(
    """
    import sys
    from ledger import Ledger
    from ledger.policy import Policy
    Ledger(sys.argv[1], policy=Policy(lock_timeout=60)).append({"k": "patient"})
    """
)


def _has_open(pid: int, inode: int) -> bool:
    """Whether process ``pid`` has a descriptor open on the file with ``inode``."""
    fds = f"/proc/{pid}/fd"
    for entry in os.listdir(fds):
        try:
            if os.stat(os.path.join(fds, entry)).st_ino == inode:
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/fd")
def test_a_lock_file_replaced_while_a_writer_waits_is_locked_again(
        ledger_dir: Path, holders: list[subprocess.Popen[str]]) -> None:
    """A writer waits on the lock file while someone removes it and locks a new file at
    the same name. When the old file's holder goes, the writer must not write: the name
    now leads to a file that another holder has locked. It opens and waits on the new file,
    writes once that is free, and no record is lost."""
    import fcntl

    from ledger import Ledger

    path = ledger_dir / "book.json"
    lock = ledger_dir / "book.json.lock"
    Ledger(path).append({"k": "first"})
    before = path.read_bytes()
    old_holder = _hold(holders, RAW_HOLDER, lock)
    writer = subprocess.Popen([sys.executable, "-c", PATIENT_WRITER, str(path)],
                              stderr=subprocess.PIPE, text=True)
    holders.append(writer)

    old_inode = lock.stat().st_ino
    deadline = time.monotonic() + 60
    while not _has_open(writer.pid, old_inode):
        assert writer.poll() is None and time.monotonic() < deadline, writer.stderr
        time.sleep(0.01)
    lock.unlink()
    new_lock = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(new_lock, fcntl.LOCK_EX)
        new_inode = os.fstat(new_lock).st_ino
        os.kill(old_holder, signal.SIGKILL)
        while writer.poll() is None and not _has_open(writer.pid, new_inode):
            assert time.monotonic() < deadline, "the writer never reached the new lock file"
            time.sleep(0.01)

        assert writer.poll() is None, "the writer wrote while the new lock file was held"
        assert path.read_bytes() == before
    finally:
        os.close(new_lock)

    assert writer.wait(timeout=60) == 0, writer.stderr
    assert json.loads(path.read_text()) == [{"k": "first"}, {"k": "patient"}]


def test_a_holder_note_the_lock_table_cannot_confirm_is_shown_as_it_is(
        ledger_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the lock table shows no holder (another pid namespace, say), the note is shown
    as written, odd digits and all: never a crash, never a guess that its pid has ended."""
    from ledger import _posix

    lock = ledger_dir / "book.json.lock"
    lock.write_text("pid \u00b2 on host\n", encoding="utf-8")
    monkeypatch.setattr(_posix, "_flock_holders", lambda fd: [])
    fd = os.open(lock, os.O_RDWR)
    try:
        assert _posix._read_holder(fd) == "pid \u00b2 on host"
        lock.write_text("pid 4194999 on elsewhere\n", encoding="utf-8")
        assert _posix._read_holder(fd) == "pid 4194999 on elsewhere"
    finally:
        os.close(fd)


def test_a_lock_file_removed_while_held_makes_the_holder_write_nothing(
        ledger_dir: Path) -> None:
    """Someone removes the lock file while a write holds it, and another writer, finding
    no lock file, makes a new one and writes at once. The first write must not replace the
    ledger with content read before: it writes nothing and is refused (77, naming the lock
    file). Both outcomes are known to their callers; no record is lost without a word."""
    from ledger import Ledger
    from ledger.errors import UnsafePathError

    path = ledger_dir / "book.json"
    lock = ledger_dir / "book.json.lock"
    Ledger(path).append({"k": "first"})
    other: dict[str, int] = {}

    def meanwhile(records: list[dict[str, str]]) -> list[dict[str, str]]:
        lock.unlink()
        done = subprocess.run([sys.executable, "-m", "ledger", "append", str(path),
                               '{"k": "other"}'], capture_output=True, text=True, timeout=60)
        other["code"] = done.returncode
        return records + [{"k": "mine"}]

    with pytest.raises(UnsafePathError) as refused:
        Ledger(path).update(meanwhile)

    assert other == {"code": 0}
    assert refused.value.reason == "lock_replaced" and str(lock) in refused.value.message
    assert json.loads(path.read_text()) == [{"k": "first"}, {"k": "other"}]
    assert [name for name in os.listdir(ledger_dir) if name.endswith(".tmp")] == []


def test_a_lock_file_removed_just_before_the_rename_is_still_lock_replaced(
        ledger_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock file goes in the instant after the holder's last check, and a writer let
    in by that writes at once, clearing the holder's temp file as a dead writer's. The
    holder's rename then fails: that is the same refusal (77, lock_replaced), not an I/O
    error telling the user to free disk space; the other writer's record is kept."""
    from ledger import Ledger, _posix
    from ledger.errors import UnsafePathError

    path = ledger_dir / "book.json"
    lock = ledger_dir / "book.json.lock"
    Ledger(path).append({"k": "first"})
    real = _posix.PosixFolder._check_still_locked
    other: list[int] = []

    def removed_right_after(self: _posix.PosixFolder) -> None:
        real(self)
        if not other:
            lock.unlink()
            done = subprocess.run([sys.executable, "-m", "ledger", "append", str(path),
                                   '{"k": "other"}'], capture_output=True, text=True, timeout=60)
            other.append(done.returncode)

    monkeypatch.setattr(_posix.PosixFolder, "_check_still_locked", removed_right_after)
    with pytest.raises(UnsafePathError) as refused:
        Ledger(path).append({"k": "mine"})

    assert other == [0]
    assert refused.value.reason == "lock_replaced"
    assert json.loads(path.read_text()) == [{"k": "first"}, {"k": "other"}]
