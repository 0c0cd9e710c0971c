"""The POSIX write path in secure mode: concurrency, links, corrupt files, killed writers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import audit_events, default_audit_file, run_cli

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX write path")

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from ledger import Ledger
    path, gate, writer, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    while not os.path.exists(gate):
        time.sleep(0.001)
    ledger = Ledger(path, cap=100000)
    for i in range(count):
        ledger.append({"writer": writer, "seq": i})
    """
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_sixteen_writers_fifty_records_each_keep_all_800(ledger_dir: Path) -> None:
    """16 processes released together append 50 records each: exactly 800, no duplicates."""
    path = ledger_dir / "shared.json"
    gate = ledger_dir.parent / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(gate), f"w{n}", "50"],
                         stderr=subprocess.PIPE, text=True)
        for n in range(16)
    ]
    time.sleep(0.5)
    gate.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

    records = json.loads(path.read_text(encoding="utf-8"))
    assert len(records) == 800
    keys = {(r["writer"], r["seq"]) for r in records}
    assert keys == {(f"w{n}", i) for n in range(16) for i in range(50)}
    for n in range(16):
        seqs = [r["seq"] for r in records if r["writer"] == f"w{n}"]
        assert seqs == sorted(seqs), "each writer's records keep their order"
    assert not [p for p in os.listdir(ledger_dir) if p.endswith(".tmp")]


def _append(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("append", str(path), '{"k": 1}', env=env)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file the attacker would like the ledger to overwrite."""
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    return target


@pytest.mark.parametrize("name", ["book.json", "book.json.lock"])
def test_symlink_at_ledger_or_lock_is_refused(ledger_dir: Path, victim: Path, name: str) -> None:
    """A symlink planted at the ledger or its lock file: exit 77, the victim untouched."""
    before = _digest(victim)
    (ledger_dir / name).symlink_to(victim)
    done = _append(ledger_dir / "book.json")
    assert done.returncode == 77, done.stderr
    assert "link" in done.stderr and str(ledger_dir / name) in done.stderr
    assert _digest(victim) == before
    assert (ledger_dir / name).is_symlink()


def test_dangling_symlink_at_lock_is_refused(ledger_dir: Path, tmp_path: Path) -> None:
    """A symlink to a file that does not exist yet is not followed to create it."""
    (ledger_dir / "book.json.lock").symlink_to(tmp_path / "created-by-follow")
    assert _append(ledger_dir / "book.json").returncode == 77
    assert not (tmp_path / "created-by-follow").exists()


def test_symlinked_folder_is_refused(tmp_path: Path, victim: Path) -> None:
    """The ledger's folder replaced by a symlink to another folder: exit 77, nothing written."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / "book.json").write_text("[]")
    before = _digest(elsewhere / "book.json")
    link = tmp_path / "ledgers"
    link.symlink_to(elsewhere, target_is_directory=True)
    done = _append(link / "book.json")
    assert done.returncode == 77, done.stderr
    assert sorted(os.listdir(elsewhere)) == ["book.json"]
    assert _digest(elsewhere / "book.json") == before


@pytest.mark.parametrize("name", ["book.json", "book.json.lock"])
def test_hard_link_at_ledger_or_lock_is_refused(ledger_dir: Path, name: str) -> None:
    """A second hard link to the ledger or lock file: exit 77, the other file untouched."""
    other = ledger_dir / "other-file"
    other.write_text("[]")
    other.chmod(0o600)
    os.link(other, ledger_dir / name)
    before = _digest(other)
    done = _append(ledger_dir / "book.json")
    assert done.returncode == 77, done.stderr
    assert "hard link" in done.stderr
    assert _digest(other) == before


def test_folder_writable_by_others_is_refused(ledger_dir: Path) -> None:
    """A ledger folder that others may write to is refused (77) and left as it was."""
    ledger_dir.chmod(0o777)
    done = _append(ledger_dir / "book.json")
    assert done.returncode == 77
    assert "chmod go-w" in done.stderr
    assert os.listdir(ledger_dir) == []


def test_fifo_at_lock_is_refused_without_hanging(ledger_dir: Path) -> None:
    """A FIFO planted at the lock name is refused promptly, not waited on."""
    os.mkfifo(ledger_dir / "book.json.lock")
    done = _append(ledger_dir / "book.json")
    assert done.returncode == 77


def test_missing_folder_is_created_private(tmp_path: Path) -> None:
    """A missing folder (and its missing parents) is created with mode 0700."""
    path = tmp_path / "a" / "b" / "book.json"
    assert _append(path).returncode == 0
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert folder.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == [{"k": 1}]


def _vanishing_mkdir(monkeypatch: pytest.MonkeyPatch, times: int) -> list[str]:
    """Make ``os.mkdir`` of ``new`` lose ``times`` races: another process made the name and
    removed it again, so mkdir says it exists and the open that follows finds nothing."""
    real = os.mkdir
    lost: list[str] = []

    def mkdir(path: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        if path == "new" and len(lost) < times:
            lost.append(path)
            raise FileExistsError(17, "File exists", path)
        real(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkdir", mkdir)
    return lost


def test_a_folder_made_and_removed_by_someone_else_is_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Losing the race for a new folder's name a few times still ends in a good write."""
    from ledger import Ledger

    lost = _vanishing_mkdir(monkeypatch, times=3)
    result = Ledger(tmp_path / "new" / "book.json").append({"k": 1})

    assert lost == ["new"] * 3
    assert result.protections["folder_check"]
    assert json.loads((tmp_path / "new" / "book.json").read_text()) == [{"k": 1}]


def test_a_folder_that_keeps_vanishing_is_refused_not_an_io_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name someone keeps making and removing is refused (77) with the folder named."""
    from ledger import Ledger
    from ledger.errors import UnsafePathError

    _vanishing_mkdir(monkeypatch, times=10_000)
    with pytest.raises(UnsafePathError) as caught:
        Ledger(tmp_path / "new" / "book.json").append({"k": 1})

    assert caught.value.exit_code == 77
    assert caught.value.reason == "folder_churning"
    assert str(tmp_path / "new") in caught.value.message
    assert not (tmp_path / "new").exists()


CORRUPT = {
    "truncated": b'[\n  {"k": 1},\n  {"k": ',
    "not an array": b'{"k": 1}',
    "entry not an object": b'[{"k": 1}, 2]',
    "NUL byte": b'[{"k": 1}]\x00',
    "garbage": b"\x89PNG\r\n\x1a\n\x00\x00",
    "not UTF-8": b'[{"k": "\xff"}]',
    "empty": b"",
    "NaN": b'[{"k": NaN}]',
}


@pytest.mark.parametrize("variant", sorted(CORRUPT))
def test_corrupt_ledger_is_refused_and_left_byte_identical(ledger_dir: Path, variant: str) -> None:
    """Each kind of invalid ledger: exit 65 naming the file, and the file unchanged."""
    path = ledger_dir / "book.json"
    path.write_bytes(CORRUPT[variant])
    path.chmod(0o600)
    for args in (["append", str(path), '{"k": 2}'], ["show", str(path)]):
        done = run_cli(*args)
        assert done.returncode == 65, (args, done.stderr)
        assert str(path) in done.stderr
        assert "Traceback" not in done.stderr
    assert path.read_bytes() == CORRUPT[variant]


@pytest.mark.parametrize("variant", ["truncated", "NUL byte", "not an array"])
def test_escalation_commands_never_read_a_corrupt_ledger_as_empty(
    ledger_dir: Path, variant: str
) -> None:
    """``replay_safe`` and ``lookup`` exit 65 on a corrupt ledger, never 0 ("safe")."""
    path = ledger_dir / "escalation-history.json"
    path.write_bytes(CORRUPT[variant])
    path.chmod(0o600)
    env = {"PF_ESCALATION_LEDGER_DIR": str(ledger_dir)}
    assert run_cli("replay_safe", "a" * 64, env=env).returncode == 65
    assert run_cli("lookup", "a" * 64, env=env).returncode == 65
    assert run_cli("record", "a" * 64, "s", "p", "declined", "r", env=env).returncode == 65
    assert path.read_bytes() == CORRUPT[variant]


def test_escalation_entry_of_the_wrong_shape_is_refused(ledger_dir: Path) -> None:
    """An escalation entry without a numeric timestamp makes the ledger invalid (65)."""
    path = ledger_dir / "escalation-history.json"
    path.write_text(json.dumps([{"signal_hash": "a" * 64, "user_response": "declined",
                                 "timestamp": "yesterday"}]))
    path.chmod(0o600)
    before = path.read_bytes()
    done = run_cli("replay_safe", "a" * 64, env={"PF_ESCALATION_LEDGER_DIR": str(ledger_dir)})
    assert done.returncode == 65 and "timestamp" in done.stderr
    assert path.read_bytes() == before


def test_byte_order_mark_is_accepted(ledger_dir: Path) -> None:
    """A UTF-8 byte-order mark at the start (as some Windows editors save) is accepted."""
    path = ledger_dir / "book.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"k": 0}]).encode())
    path.chmod(0o600)
    assert _append(path).returncode == 0
    assert json.loads(path.read_text(encoding="utf-8")) == [{"k": 0}, {"k": 1}]


def test_unreadable_ledger_is_an_error_not_empty(ledger_dir: Path) -> None:
    """A ledger that is a folder cannot be read: a clear refusal, nothing replaced."""
    (ledger_dir / "book.json").mkdir()
    done = _append(ledger_dir / "book.json")
    assert done.returncode in (65, 77)
    assert (ledger_dir / "book.json").is_dir()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from ledger import Ledger
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace = die
    Ledger(sys.argv[1]).append({"k": "lost"})
    """
)


def test_writer_killed_before_rename_leaves_old_ledger_and_next_write_cleans(
    ledger_dir: Path,
) -> None:
    """Killed after its temp file is written: old ledger intact; the next writer removes the temp."""
    path = ledger_dir / "book.json"
    assert _append(path).returncode == 0
    before = path.read_bytes()

    done = subprocess.run([sys.executable, "-c", KILLER, str(path)], capture_output=True,
                          timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    temps = [p for p in os.listdir(ledger_dir) if p.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].startswith(".book.json.")

    assert _append(path).returncode == 0
    assert json.loads(path.read_text()) == [{"k": 1}, {"k": 1}]
    assert [p for p in os.listdir(ledger_dir) if p.endswith(".tmp")] == []


def test_refusals_and_successes_are_audited(ledger_dir: Path, victim: Path) -> None:
    """One parsed audit line per write attempt, naming the outcome and the protections."""
    assert _append(ledger_dir / "book.json").returncode == 0
    (ledger_dir / "bad.json").symlink_to(victim)
    assert _append(ledger_dir / "bad.json").returncode == 77
    events = audit_events(default_audit_file())
    assert [e["outcome"] for e in events] == ["ok", "refused"]
    ok, refused = events
    assert ok["protections"]["lock"] == "fcntl.flock"
    assert ok["protections"]["no_follow"] == "O_NOFOLLOW"
    assert ok["missing"] == [] and ok["mode"] == "secure"
    assert refused["reason"] == "symlink"
    assert refused["ledger"] == str(ledger_dir / "bad.json")


def test_a_file_whose_name_was_removed_after_the_open_is_not_taken_for_a_hard_link(
        ledger_dir: Path) -> None:
    """A reader that opened the ledger just before a writer's rename holds a file with no
    name left (0 links): a complete old version, not a hard-link attack. Two links are."""
    from ledger._posix import check_file
    from ledger.errors import UnsafePathError

    path = ledger_dir / "book.json"
    path.write_text("[]", encoding="utf-8")
    path.chmod(0o600)
    with open(path, "rb") as handle:
        path.unlink()
        check_file(os.fstat(handle.fileno()), str(path))
    path.write_text("[]", encoding="utf-8")
    path.chmod(0o600)
    os.link(path, ledger_dir / "second")
    with pytest.raises(UnsafePathError) as refused:
        check_file(os.stat(path), str(path))
    assert refused.value.reason == "hard_link"
