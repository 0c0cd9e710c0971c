"""The audit trail: one parsed JSON line per write attempt, kept safe, whole and bounded."""

from __future__ import annotations

import datetime
import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger
from ledger import _netfs, _posix, audit
from ledger.errors import (
    CorruptLedgerError,
    LedgerIOError,
    LockTimeoutError,
    ProtectionUnavailableError,
    UnsafePathError,
)
from ledger.policy import Policy
from ledger.protections import PROTECTIONS

from conftest import audit_events, default_audit_file

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX mechanisms and modes")

FIELDS = {"timestamp", "event", "outcome", "ledger", "mode", "policy", "protections", "missing",
          "pid", "user", "host", "platform", "version", "duration_ms", "raised_by_floor"}


@pytest.fixture(autouse=True)
def fresh_trail() -> Any:
    """Each test starts with no audit file held open by the process's trail."""
    audit.trail().close()
    yield
    audit.trail().close()


def parse_utc(text: str) -> datetime.datetime:
    assert text.endswith("Z"), text
    return datetime.datetime.fromisoformat(text[:-1] + "+00:00")


class TestOneEventPerWrite:
    def test_ok_write_has_every_field_at_the_default_place(self, ledger_dir: Path) -> None:
        """An ok write gives one line with every field of the design, in the default file."""
        before = datetime.datetime.now(datetime.timezone.utc)
        result = ledger.Ledger(ledger_dir / "book.json", policy=Policy()).append({"n": 1})

        [event] = audit_events(default_audit_file())
        assert FIELDS <= set(event)
        assert "reason" not in event and "requested_mode" not in event
        assert event["event"] == "ledger.write" and event["outcome"] == "ok"
        assert before - datetime.timedelta(seconds=1) <= parse_utc(event["timestamp"])
        assert event["ledger"] == str(ledger_dir / "book.json")
        assert event["mode"] == "secure" and event["policy"] == []
        assert event["protections"] == result.protections
        assert set(event["protections"]) == set(PROTECTIONS)
        assert event["missing"] == result.missing
        assert event["pid"] == os.getpid() and event["platform"] == sys.platform
        assert event["version"] == ledger.__version__
        assert isinstance(event["user"], str) and event["user"]
        assert isinstance(event["host"], str) and event["host"]
        assert isinstance(event["duration_ms"], (int, float)) and event["duration_ms"] >= 0
        assert event["pruned"] == 0 and event["raised_by_floor"] is False

    @posix_only
    def test_posix_mechanisms_are_named(self, ledger_dir: Path, tmp_path: Path) -> None:
        """On POSIX the event names flock, O_NOFOLLOW, renameat and the folder fsync."""
        log = tmp_path / "audit.jsonl"
        ledger.Ledger(ledger_dir / "book.json", policy=Policy(audit_log=str(log))).append({})
        [event] = audit_events(log)
        assert event["protections"]["lock"] == "fcntl.flock"
        assert event["protections"]["no_follow"] == "O_NOFOLLOW"
        assert event["protections"]["atomic_replace"] == "renameat"
        assert event["protections"]["durable_rename"] == "fsync(dir)"

    def test_the_audit_file_and_its_folder_are_private(self, ledger_dir: Path) -> None:
        """The default audit file is created 0600 in folders created 0700."""
        ledger.Ledger(ledger_dir / "book.json", policy=Policy()).append({})
        log = default_audit_file()
        if os.name != "nt":
            assert stat.S_IMODE(log.stat().st_mode) == 0o600
            assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700

    def test_pruned_and_floor_are_recorded(self, ledger_dir: Path, tmp_path: Path) -> None:
        """The event counts pruned records and says when a machine floor raised the mode."""
        log = tmp_path / "audit.jsonl"
        policy = Policy(mode="secure", requested_mode="legacy", minimum_mode="secure",
                        sources=("/etc/ledger/policy.toml", str(tmp_path / "user.toml")),
                        audit_log=str(log))
        book = ledger.Ledger(ledger_dir / "book.json", policy=policy, cap=2)
        for n in range(3):
            book.append({"n": n})
        events = audit_events(log)
        assert [e["pruned"] for e in events] == [0, 0, 1]
        assert all(e["raised_by_floor"] is True and e["requested_mode"] == "legacy"
                   and e["mode"] == "secure" for e in events)
        assert events[0]["policy"] == ["/etc/ledger/policy.toml", str(tmp_path / "user.toml")]


@posix_only
class TestRefusalsAndErrorsAreEvents:
    @pytest.fixture
    def log(self, tmp_path: Path) -> Path:
        return tmp_path / "audit.jsonl"

    def attempt(self, book: ledger.Ledger, error: type, log: Path) -> dict[str, Any]:
        before = len(audit_events(log))
        with pytest.raises(error):
            book.append({"n": 1})
        events = audit_events(log)
        assert len(events) == before + 1
        return events[-1]

    def test_planted_link_is_refused_77(self, ledger_dir: Path, tmp_path: Path, log: Path) -> None:
        """A link at the ledger path is one refused event with reason symlink; the victim stays."""
        victim = tmp_path / "victim.json"
        victim.write_text("[]")
        (ledger_dir / "book.json").symlink_to(victim)
        book = ledger.Ledger(ledger_dir / "book.json", policy=Policy(audit_log=str(log)))
        event = self.attempt(book, UnsafePathError, log)
        assert (event["outcome"], event["reason"]) == ("refused", "symlink")
        assert "message" in event and victim.read_text() == "[]"

    def test_corrupt_ledger_is_an_error_65(self, ledger_dir: Path, log: Path) -> None:
        """A ledger that does not parse is an error event; it is left as it was."""
        (ledger_dir / "book.json").write_text("[{")
        book = ledger.Ledger(ledger_dir / "book.json", policy=Policy(audit_log=str(log)))
        event = self.attempt(book, CorruptLedgerError, log)
        assert (event["outcome"], event["reason"]) == ("error", "bad_json")
        assert (ledger_dir / "book.json").read_text() == "[{"

    def test_lock_timeout_is_refused_75(self, ledger_dir: Path, log: Path) -> None:
        """A lock held elsewhere past the timeout is a refused event with reason lock_timeout."""
        import fcntl

        holder = os.open(ledger_dir / "book.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(holder, fcntl.LOCK_EX)
            policy = Policy(lock_timeout=0.1, audit_log=str(log))
            event = self.attempt(ledger.Ledger(ledger_dir / "book.json", policy=policy),
                                 LockTimeoutError, log)
        finally:
            os.close(holder)
        assert (event["outcome"], event["reason"]) == ("refused", "lock_timeout")

    def test_strict_on_a_network_folder_is_refused_69(
        self, ledger_dir: Path, log: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Strict mode without a local filesystem is refused, and the event names it missing."""
        monkeypatch.setattr(_netfs, "filesystem_of", lambda fd: ("nfs4", True))
        book = ledger.Ledger(ledger_dir / "book.json", policy=Policy(mode="strict",
                                                                     audit_log=str(log)))
        event = self.attempt(book, ProtectionUnavailableError, log)
        assert (event["outcome"], event["reason"]) == ("refused", "protection_unavailable")
        assert event["missing"] == ["local_fs"] and event["protections"]["local_fs"] is None
        assert not (ledger_dir / "book.json").exists()

    def test_disk_full_is_an_error_74(
        self, ledger_dir: Path, log: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An I/O failure is an error event with the errno in its reason; the ledger is intact."""
        book = ledger.Ledger(ledger_dir / "book.json", policy=Policy(audit_log=str(log)))
        book.append({"n": 0})

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(_posix, "_fsync_file", full)
        event = self.attempt(book, LedgerIOError, log)
        assert (event["outcome"], event["reason"]) == ("error", "io_error:enospc")
        assert book.records() == [{"n": 0}]

    def test_a_failing_callback_is_an_error_not_ok(self, ledger_dir: Path, log: Path) -> None:
        """An exception from the caller's own update function is logged as an error."""
        book = ledger.Ledger(ledger_dir / "book.json", policy=Policy(audit_log=str(log)))

        def broken(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            raise KeyError("oops")

        with pytest.raises(KeyError):
            book.update(broken)
        [event] = audit_events(log)
        assert event["outcome"] == "error" and event["reason"].endswith("KeyError")


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


ODD_FIELDS: dict[Any, Any] = {
    "path": Path("/tmp") / "x",
    "bytes": b"\xff\x00ok",
    "uuid": uuid.UUID(int=7),
    "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "set": {3, 1, 2},
    ("tuple", "key"): "value",
    7: "int key",
    "nan": float("nan"),
    "inf": float("-inf"),
    "surrogate": "bad \udcff text",
    "unprintable": Unprintable(),
    "deep": [[[[[[[[["bottom"]]]]]]]]],
    "event": "not the event name",
    "timestamp": "not the time",
}


class TestOddValues:
    def test_odd_values_become_strings_in_one_parsable_line(self, tmp_path: Path) -> None:
        """Paths, bytes, UUIDs, times, sets, odd keys, NaN and broken objects do not break it."""
        log = tmp_path / "audit.jsonl"
        audit.trail().write_event(Policy(audit_log=str(log)), dict(ODD_FIELDS, outcome="ok"))

        [line] = log.read_text(encoding="utf-8").splitlines()
        event = json.loads(line)
        assert event["event"] == "ledger.write"
        parse_utc(event["timestamp"])
        assert event["path"] == str(Path("/tmp") / "x")
        assert event["bytes"] == "\\xff\x00ok"
        assert event["uuid"] == str(uuid.UUID(int=7))
        assert event["when"] == "2026-01-02T03:04:05+00:00"
        assert event["set"] == "{1, 2, 3}"
        assert event["('tuple', 'key')"] == "value" and event["7"] == "int key"
        assert (event["nan"], event["inf"]) == ("nan", "-inf")
        assert event["surrogate"] == "bad \\udcff text"
        assert event["unprintable"] == "<unprintable Unprintable>"
        assert isinstance(json.dumps(event["deep"]), str)

    @posix_only
    def test_odd_path_and_record_do_not_break_the_write(
        self, ledger_dir: Path, tmp_path: Path
    ) -> None:
        """A ledger name that is not UTF-8 and a record with odd text are written and audited."""
        log = tmp_path / "audit.jsonl"
        name = os.fsdecode(b"book-\xff.json")
        record = {"text": "line\u2028sep\x00nul \U0001f600", "big": 2 ** 70, "x": -0.0}
        book = ledger.Ledger(ledger_dir / name, policy=Policy(audit_log=str(log)))
        book.append(record)
        assert book.records() == [record]
        [event] = audit_events(log)
        assert event["outcome"] == "ok"
        assert event["ledger"] == str(ledger_dir) + "/book-\\udcff.json"

    def test_huge_values_are_cut_to_one_bounded_line(self, tmp_path: Path) -> None:
        """However large the fields, the line stays under the atomic size and says truncated."""
        log = tmp_path / "audit.jsonl"
        fields = {"outcome": "error", "reason": "r" * 10_000, "ledger": "/l/" + "p" * 9000,
                  "notes": ["n" * 3000] * 40,
                  "protections": {f"k{i}": "v" * 50 for i in range(400)}}
        audit.trail().write_event(Policy(audit_log=str(log)), fields)
        [line] = log.read_bytes().splitlines()
        assert len(line) + 1 <= audit.MAX_LINE_BYTES
        event = json.loads(line)
        assert event["truncated"] is True and event["outcome"] == "error"
        assert event["ledger"].startswith("/l/ppp") and event["event"] == "ledger.write"

    @settings(max_examples=150, deadline=None)
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
            | st.datetimes() | st.uuids(),
            lambda inner: st.lists(inner, max_size=5) | st.frozensets(st.integers(), max_size=4)
            | st.dictionaries(st.text() | st.integers() | st.tuples(st.integers()), inner,
                              max_size=5),
            max_leaves=40,
        )
    )
    def test_any_value_renders_as_one_json_object(self, value: Any) -> None:
        """Whatever value a field holds, the rendered line is one JSON object within the limit."""
        line = audit._serialize({"event": "ledger.write", "outcome": "ok", "value": value})
        assert "\n" not in line
        assert len(line.encode("utf-8")) < audit.MAX_LINE_BYTES
        assert json.loads(line)["event"] == "ledger.write"


class TestAuditFileSafety:
    def test_unsafe_audit_file_in_secure_mode_keeps_the_write(
        self, ledger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """In secure mode a linked audit folder costs the event (one stderr line), not the write."""
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        (tmp_path / "logs").symlink_to(real)
        policy = Policy(audit_log=str(tmp_path / "logs" / "audit.jsonl"))
        ledger.Ledger(ledger_dir / "book.json", policy=policy).append({"n": 1})

        assert ledger.Ledger(ledger_dir / "book.json", policy=policy).records() == [{"n": 1}]
        assert list(real.iterdir()) == []
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "could not write the audit event" in err[0]
        assert "symbolic link" in err[0] and "write stands" in err[0]

    @pytest.mark.parametrize("outcome", ["error", "refused"])
    def test_unsafe_audit_file_after_a_failed_write_does_not_say_it_stands(
        self, outcome: str, ledger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """When the write itself failed, the stderr line about the lost event does not claim
        that the write stands."""
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        (tmp_path / "logs").symlink_to(real)
        policy = Policy(audit_log=str(tmp_path / "logs" / "audit.jsonl"))
        book = ledger_dir / "book.json"
        if outcome == "error":
            book.write_text("[{")
            expected: type[Exception] = CorruptLedgerError
        else:
            book.symlink_to(tmp_path / "victim.json")
            expected = UnsafePathError
        with pytest.raises(expected):
            ledger.Ledger(book, policy=policy).append({"n": 1})

        assert list(real.iterdir()) == []
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "could not write the audit event" in err[0]
        assert "symbolic link" in err[0] and "stands" not in err[0]

    @posix_only
    @pytest.mark.parametrize("plant", ["symlink", "hardlink"])
    def test_linked_audit_file_is_not_written_through(
        self, plant: str, ledger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A link at the audit file's name is refused; the file it points at is untouched."""
        victim = tmp_path / "victim.txt"
        victim.write_text("precious\n")
        logs = tmp_path / "logs"
        logs.mkdir(mode=0o700)
        if plant == "symlink":
            (logs / "audit.jsonl").symlink_to(victim)
        else:
            os.link(victim, logs / "audit.jsonl")
        policy = Policy(audit_log=str(logs / "audit.jsonl"))
        ledger.Ledger(ledger_dir / "book.json", policy=policy).append({"n": 1})
        assert victim.read_text() == "precious\n"
        assert len(capsys.readouterr().err.splitlines()) == 1

    @posix_only
    def test_strict_with_a_linked_audit_folder_writes_nothing(
        self, ledger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Strict mode refuses (77) before touching the ledger when the audit file is unsafe."""
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        (tmp_path / "logs").symlink_to(real)
        policy = Policy(mode="strict", audit_log=str(tmp_path / "logs" / "audit.jsonl"))
        with pytest.raises(UnsafePathError) as caught:
            ledger.Ledger(ledger_dir / "sub" / "book.json", policy=policy).append({"n": 1})
        assert caught.value.exit_code == 77 and caught.value.reason == "audit_unsafe"
        assert "audit file" in caught.value.message and "symbolic link" in caught.value.message
        assert list(ledger_dir.iterdir()) == [] and list(real.iterdir()) == []
        assert capsys.readouterr().err == ""

    @posix_only
    def test_strict_with_an_unopenable_audit_file_writes_nothing(
        self, ledger_dir: Path, tmp_path: Path
    ) -> None:
        """Strict mode refuses (74) when the audit file cannot be opened at all."""
        policy = Policy(mode="strict", audit_log=str(tmp_path / ("n" * 300) / "audit.jsonl"))
        with pytest.raises(LedgerIOError) as caught:
            ledger.Ledger(ledger_dir / "book.json", policy=policy).append({"n": 1})
        assert caught.value.exit_code == 74 and caught.value.reason == "audit_unavailable"
        assert list(ledger_dir.iterdir()) == []

    def test_strict_with_a_good_audit_file_writes_and_audits(
        self, ledger_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Strict mode opens the audit file first, then writes, then logs to that same file."""
        monkeypatch.setattr(_netfs, "filesystem_of", lambda fd: ("ext4", False))
        log = tmp_path / "audit.jsonl"
        policy = Policy(mode="strict", audit_log=str(log))
        ledger.Ledger(ledger_dir / "book.json", policy=policy).append({"n": 1})
        [event] = audit_events(log)
        assert (event["outcome"], event["mode"], event["missing"]) == ("ok", "strict", [])

    def test_stderr_copy_is_the_same_line(
        self, ledger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With audit_stderr the same line also goes to stderr, for hook runners."""
        log = tmp_path / "audit.jsonl"
        policy = Policy(audit_log=str(log), audit_stderr=True)
        ledger.Ledger(ledger_dir / "book.json", policy=policy).append({"n": 1})
        assert capsys.readouterr().err.splitlines() == log.read_text().splitlines()


class TestOpenOncePerProcess:
    def test_the_descriptor_is_cached_per_path(
        self, ledger_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Several events to one path open its folder once; another path gets its own file."""
        opened: list[str] = []
        real_open = audit._open_folder

        def counting(path: str, *, create: bool) -> Any:
            opened.append(path)
            return real_open(path, create=create)

        monkeypatch.setattr(audit, "_open_folder", counting)
        one, two = tmp_path / "one" / "audit.jsonl", tmp_path / "two" / "audit.jsonl"
        book = ledger.Ledger(ledger_dir / "book.json", policy=Policy(audit_log=str(one)))
        for n in range(3):
            book.append({"n": n})
        ledger.Ledger(ledger_dir / "book.json", policy=Policy(audit_log=str(two))).append({})
        assert opened == [str(one.parent), str(two.parent)]
        assert len(audit_events(one)) == 3 and len(audit_events(two)) == 1

    def test_a_file_moved_away_is_reopened(self, tmp_path: Path) -> None:
        """When another process rotates or removes the file, the next event goes to a new one."""
        log = tmp_path / "audit.jsonl"
        policy = Policy(audit_log=str(log))
        audit.trail().write_event(policy, {"outcome": "ok", "n": 1})
        log.rename(tmp_path / "audit.jsonl.1")
        audit.trail().write_event(policy, {"outcome": "ok", "n": 2})
        log.unlink()
        audit.trail().write_event(policy, {"outcome": "ok", "n": 3})
        assert [e["n"] for e in audit_events(tmp_path / "audit.jsonl.1")] == [1]
        assert [e["n"] for e in audit_events(log)] == [3]

    def test_rotation_keeps_a_bounded_number_of_files(self, tmp_path: Path) -> None:
        """Past max_bytes the file is rotated; only `keep` old files stay, every line whole."""
        log = tmp_path / "logs" / "audit.jsonl"
        writer = audit.AuditTrail(max_bytes=3000, keep=3)
        policy = Policy(audit_log=str(log))
        for n in range(60):
            writer.write_event(policy, {"outcome": "ok", "n": n, "pad": "x" * 200})
        writer.close()
        names = sorted(p.name for p in log.parent.iterdir() if not p.name.endswith(".lock"))
        assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
        kept = [e["n"] for p in audit.rotated_paths(str(log)) for e in audit_events(Path(p))]
        assert kept == list(range(60 - len(kept), 60))
        for index in (1, 2, 3):
            assert os.path.getsize(f"{log}.{index}") >= 3000


def test_threads_of_one_process_share_the_file_safely(tmp_path: Path) -> None:
    """8 threads writing at once through one trail, across rotations: every event kept, whole."""
    import threading

    log = tmp_path / "logs" / "audit.jsonl"
    writer = audit.AuditTrail(max_bytes=20_000, keep=1000)
    policy = Policy(audit_log=str(log))

    def work(thread: int) -> None:
        for seq in range(50):
            writer.write_event(policy, {"outcome": "ok", "thread": thread, "seq": seq,
                                        "pad": "t" * 300})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    events = [e for p in audit.rotated_paths(str(log)) for e in audit_events(Path(p))]
    assert sorted((e["thread"], e["seq"]) for e in events) == [
        (t, s) for t in range(8) for s in range(50)]
    assert len(audit.rotated_paths(str(log))) > 3


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from ledger import audit
    from ledger.policy import Policy

    log, gate, count, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    trail = audit.trail()
    trail.max_bytes, trail.keep = max_bytes, 1000
    policy = Policy(audit_log=log)
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)
    for seq in range(count):
        trail.write_event(policy, {"outcome": "ok", "writer": os.getpid(), "seq": seq,
                                   "pad": "y" * 900})
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("max_bytes", [audit.MAX_BYTES, 40_000])
def test_many_processes_write_whole_lines(tmp_path: Path, max_bytes: int) -> None:
    """12 processes x 40 events at once, with and without rotation: every line whole, none lost."""
    log, gate = tmp_path / "logs" / "audit.jsonl", tmp_path / "go"
    procs, count = 12, 40
    children = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(gate), str(count),
                          str(max_bytes)], stderr=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    time.sleep(0.3)
    gate.touch()
    try:
        errors = [child.communicate(timeout=120)[1] for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [child.returncode for child in children] == [0] * procs
    assert errors == [""] * procs

    files = audit.rotated_paths(str(log))
    events = [event for path in files for event in audit_events(Path(path))]
    assert len(events) == procs * count
    seen = {(e["writer"], e["seq"]) for e in events}
    assert len(seen) == procs * count
    assert {pid for pid, _ in seen} == {child.pid for child in children}
    if max_bytes < audit.MAX_BYTES:
        assert len(files) > 3
        for writer in {pid for pid, _ in seen}:
            order = [e["seq"] for e in events if e["writer"] == writer]
            assert order == sorted(order)


def test_structlog_and_platformdirs_load_only_when_needed(tmp_path: Path) -> None:
    """The write path imports structlog only for the event, and no platformdirs with audit_log."""
    script = textwrap.dedent(
        f"""
        import sys
        import ledger, ledger.store, ledger.audit
        from ledger.policy import Policy
        assert "structlog" not in sys.modules
        book = ledger.Ledger({str(tmp_path / 'l' / 'book.json')!r},
                             policy=Policy(audit_log={str(tmp_path / 'audit.jsonl')!r}))
        assert "structlog" not in sys.modules
        book.append({{"n": 1}})
        assert "structlog" in sys.modules
        assert "platformdirs" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "ok\n", done.stderr
    assert len(audit_events(tmp_path / "audit.jsonl")) == 1
