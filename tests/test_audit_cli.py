"""``ledgerctl audit``: exact counts from real writes, malformed lines, --since, rotated files."""

from __future__ import annotations

import datetime
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LEDGERCTL, REPO, audit_events, default_audit_file, run_cli

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX links and modes")

NOW = datetime.datetime.now(datetime.timezone.utc)


def stamp(when: datetime.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def event(**fields: Any) -> dict[str, Any]:
    """A ledger.write event as the trail writes it, with ``fields`` changed."""
    base: dict[str, Any] = {
        "timestamp": stamp(NOW), "event": "ledger.write", "outcome": "ok",
        "ledger": "/home/a/.preview-forge/escalation-history.json", "mode": "secure",
        "raised_by_floor": False, "policy": [],
        "protections": {"lock": "fcntl.flock", "no_follow": "O_NOFOLLOW", "local_fs": "mountinfo"},
        "missing": [], "pruned": 0, "duration_ms": 3.2, "pid": 10, "user": "a", "host": "alpha",
        "platform": "linux", "version": "0.1.0",
    }
    base.update(fields)
    return base


def write_lines(path: Path, *items: Any) -> Path:
    """Write events (dicts) and raw lines (bytes) to ``path``, one per line."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = b"".join((item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n"
                    for item in items)
    path.write_bytes(data)
    return path


def summary(*args: str, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    done = run_cli("audit", "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def group(result: dict[str, Any], ledger: str, host: Optional[str] = None) -> dict[str, Any]:
    [found] = [g for g in result["groups"] if g["ledger"] == ledger
               and (host is None or g["host"] == host)]
    return found


@posix_only
@pytest.mark.slow
def test_known_mix_from_many_processes(tmp_path: Path, ledger_dir: Path) -> None:
    """Ok, refused (planted link) and legacy writes from real processes: exact counts."""
    good, bad, old = ledger_dir / "good.json", ledger_dir / "bad" / "book.json", \
        ledger_dir / "old" / "book.json"
    victim = tmp_path / "victim.json"
    victim.write_text("[]")
    bad.parent.mkdir(mode=0o700)
    bad.symlink_to(victim)
    legacy = tmp_path / "legacy.toml"
    legacy.write_text('mode = "legacy"\n')
    legacy.chmod(0o600)

    calls = (
        [["append", str(good), json.dumps({"i": i})] for i in range(10)]
        + [["append", str(bad), json.dumps({"i": i})] for i in range(6)]
        + [["--policy", str(legacy), "append", str(old), json.dumps({"i": i})]
           for i in range(4)]
    )
    children = [subprocess.Popen(LEDGERCTL + call, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True) for call in calls]
    codes = []
    for child in children:
        child.communicate(timeout=120)
        codes.append(child.returncode)
    assert codes == [0] * 10 + [77] * 6 + [0] * 4
    assert victim.read_text() == "[]"

    events = audit_events(default_audit_file())
    assert len(events) == 20
    assert {e["pid"] for e in events} == {child.pid for child in children}
    result = summary()
    assert result["writes"] == 20 and result["malformed"]["lines"] == 0
    assert result["totals"]["outcomes"] == {"ok": 14, "refused": 6}

    ok = group(result, str(good))
    assert (ok["writes"], ok["outcomes"], ok["modes"]) == (10, {"ok": 10}, {"secure": 10})
    assert ok["refusals"] == {} and ok["ran_without"] == {"writes": 0, "protections": {}}
    refused = group(result, str(bad))
    assert refused["outcomes"] == {"refused": 6} and refused["refusals"] == {"symlink": 6}
    weak = group(result, str(old))
    assert weak["outcomes"] == {"ok": 4} and weak["modes"] == {"legacy": 4}
    assert weak["ran_without"]["writes"] == 4
    assert weak["ran_without"]["protections"]["lock"] == 4
    assert weak["ran_without"]["protections"]["no_follow"] == 4
    assert weak["missed"] == {"writes": 0, "protections": {}}
    assert isinstance(json.loads(old.read_text()), list)


@posix_only
def test_strict_policy_with_a_linked_audit_folder_writes_nothing(
    tmp_path: Path, ledger_dir: Path
) -> None:
    """A strict policy whose audit folder is a link: exit 77, no ledger, no audit line."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "logs").symlink_to(real)
    policy = tmp_path / "strict.toml"
    policy.write_text(f'mode = "strict"\naudit_log = "{tmp_path / "logs" / "audit.jsonl"}"\n')
    policy.chmod(0o600)
    done = run_cli("--policy", str(policy), "append", str(ledger_dir / "book.json"), "{}")
    assert done.returncode == 77, done.stderr
    assert "audit file" in done.stderr and len(done.stderr.splitlines()) == 1
    assert list(ledger_dir.iterdir()) == [] and list(real.iterdir()) == []


def test_counts_by_host_ledger_outcome_mode_floor_and_missing(tmp_path: Path) -> None:
    """Each host and ledger gets its own counts; missed protections and floors are counted."""
    log = write_lines(
        tmp_path / "audit.jsonl",
        event(),
        event(host="beta"),
        event(outcome="refused", reason="symlink"),
        event(outcome="refused", reason="lock_timeout"),
        event(outcome="error", reason="io_error:enospc"),
        event(missing=["local_fs"], protections={"lock": "fcntl.flock", "local_fs": None}),
        event(mode="secure", requested_mode="legacy", raised_by_floor=True),
        event(ledger="/srv/other.json", mode="legacy", protections={"lock": None}),
        {"timestamp": stamp(NOW), "event": "ledger.other", "detail": 1},
    )
    result = summary(str(log))
    assert result["writes"] == 8 and result["other_events"] == {"ledger.other": 1}
    alpha = group(result, event()["ledger"], "alpha")
    assert alpha["writes"] == 6
    assert alpha["outcomes"] == {"ok": 3, "refused": 2, "error": 1}
    assert alpha["refusals"] == {"symlink": 1, "lock_timeout": 1}
    assert alpha["errors"] == {"io_error:enospc": 1}
    assert alpha["missed"] == {"writes": 1, "protections": {"local_fs": 1}}
    assert alpha["raised_by_floor"] == {"writes": 1, "from": {"legacy->secure": 1}}
    assert group(result, event()["ledger"], "beta")["writes"] == 1
    other = group(result, "/srv/other.json")
    assert other["modes"] == {"legacy": 1}
    assert other["ran_without"] == {"writes": 1, "protections": {"lock": 1}}

    table = run_cli("audit", str(log))
    assert table.returncode == 0 and table.stderr == ""
    assert "! host alpha" in table.stdout and "  host beta" in table.stdout
    assert "missed       1 write: local_fs" in table.stdout
    assert "legacy->secure 1" in table.stdout and "symlink 1" in table.stdout


def test_malformed_lines_are_counted_and_shown(tmp_path: Path) -> None:
    """Lines that are not audit events are counted, listed with their place, never fatal."""
    log = write_lines(
        tmp_path / "audit.jsonl",
        event(),
        b"not json at all",
        b"[1, 2, 3]",
        b'{"event": "ledger.write", "outcome": "ok"}',
        b'{"timestamp": "yesterday", "event": "ledger.write", "outcome": "ok"}',
        b'{"timestamp": "2026-01-01T00:00:00Z", "event": "ledger.write"}',
        b'{"timestamp": "2026-01-01T00:00:00Z", "event": "ledger.wr',
        b"\xff\xfe not utf-8",
        b"x" * 70_000,
        b"",
        b"   ",
        event(outcome="refused", reason="symlink", missing="not-a-list", protections=[1]),
    )
    result = summary(str(log))
    assert result["writes"] == 2
    assert result["malformed"]["lines"] == 8
    assert [s["line"] for s in result["malformed"]["samples"]] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert result["files"] == [{"path": str(log), "lines": 10, "writes": 2, "malformed": 8}]

    table = run_cli("audit", str(log))
    assert table.returncode == 0 and table.stderr == ""
    assert "malformed    8 lines" in table.stdout
    assert f"{log}:2  not JSON" in table.stdout and f"{log}:9  longer than" in table.stdout


def test_since_takes_spans_and_iso_times(tmp_path: Path) -> None:
    """--since keeps events at or after WHEN, given as 24h / 7d or an ISO 8601 time."""
    log = write_lines(
        tmp_path / "audit.jsonl",
        event(timestamp=stamp(NOW - datetime.timedelta(days=10))),
        event(timestamp=stamp(NOW - datetime.timedelta(days=3))),
        event(timestamp=stamp(NOW - datetime.timedelta(hours=2))),
        event(timestamp=(NOW - datetime.timedelta(minutes=5)).isoformat()),
    )
    assert summary(str(log))["writes"] == 4
    assert summary(str(log), "--since", "24h")["writes"] == 2
    assert summary(str(log), "--since", "7d")["writes"] == 3
    assert summary(str(log), "--since", "7d")["before_since"] == 1
    iso = stamp(NOW - datetime.timedelta(days=4))
    assert summary(str(log), "--since", iso)["writes"] == 3
    day = (NOW - datetime.timedelta(days=5)).date().isoformat()
    assert summary(str(log), "--since", day)["writes"] == 3
    bad = run_cli("audit", str(log), "--since", "last tuesday")
    assert bad.returncode == 64 and "--since" in bad.stderr and bad.stdout == ""


def test_default_reads_the_configured_file_and_its_rotations(tmp_path: Path) -> None:
    """Without FILE the configured audit file and its rotated siblings are read, oldest first."""
    log = default_audit_file()
    write_lines(Path(f"{log}.2"), event(pid=1))
    write_lines(Path(f"{log}.1"), event(pid=2), event(pid=3))
    write_lines(log, event(pid=4))
    result = summary()
    assert [f["path"] for f in result["files"]] == [f"{log}.2", f"{log}.1", str(log)]
    assert result["writes"] == 4


def test_policy_audit_log_is_the_default_file(tmp_path: Path) -> None:
    """The audit file a policy names is the one read when no FILE is given."""
    log = write_lines(tmp_path / "elsewhere" / "audit.jsonl", event(), event())
    policy = tmp_path / "policy.toml"
    policy.write_text(f'audit_log = "{log}"\n')
    policy.chmod(0o600)
    result = summary("--policy", str(policy))
    assert [f["path"] for f in result["files"]] == [str(log)] and result["writes"] == 2


def test_a_folder_of_collected_files_with_gzip(tmp_path: Path) -> None:
    """A FILE that is a folder reads the audit files in it, gzipped rotations included."""
    folder = tmp_path / "collected"
    write_lines(folder / "audit.jsonl", event())
    write_lines(folder / "audit.jsonl.1", event(), event())
    with gzip.open(folder / "audit.jsonl.2.gz", "wb") as handle:
        handle.write(json.dumps(event()).encode() + b"\n")
    (folder / "notes.txt").write_text("not an audit file\n")
    result = summary(str(folder))
    assert [Path(f["path"]).name for f in result["files"]] == [
        "audit.jsonl.2.gz", "audit.jsonl.1", "audit.jsonl"]
    assert result["writes"] == 4


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A named file that does not exist: exit 74, one plain line, no traceback."""
    done = run_cli("audit", str(tmp_path / "nope.jsonl"))
    assert done.returncode == 74
    assert done.stderr.count("\n") == 1 and "nope.jsonl" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_audit_file_yet(tmp_path: Path) -> None:
    """Before any write, the summary says there is no audit file yet, and exits 0."""
    done = run_cli("audit")
    assert done.returncode == 0 and done.stderr == ""
    assert str(default_audit_file()) in done.stdout
    assert summary()["writes"] == 0


@posix_only
def test_real_writes_summarised_after_rotation(tmp_path: Path, ledger_dir: Path) -> None:
    """Events written by the library and rotated are all found by the default summary."""
    script = (
        "import sys; from ledger import Ledger, audit\n"
        "audit.trail().max_bytes = 4000\n"
        "book = Ledger(sys.argv[1])\n"
        "for i in range(12): book.append({'i': i})\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(ledger_dir / "book.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = summary()
    assert len(result["files"]) > 1
    assert result["writes"] == 12 and result["totals"]["outcomes"] == {"ok": 12}


RSYSLOG_OUTPUT = """
template(name="ledgerLine" type="string" string="%msg%\\n")
ruleset(name="ledgerAudit") {
  action(type="omfile" File="OUT" Template="ledgerLine")
}
"""

USER_WRITES = (
    "import sys; from ledger import Ledger, audit\n"
    "trail = audit.trail(); trail.max_bytes, trail.keep = 20000, 50\n"
    "book = Ledger(sys.argv[1])\n"
    "for i in range(int(sys.argv[2])): book.append({'i': i})\n"
)


@posix_only
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslogd is not installed")
def test_documented_rsyslog_input_delivers_every_line(tmp_path: Path) -> None:
    """The rsyslog input of docs/audit-log.md follows rotations and delivers every line whole."""
    doc = (REPO / "docs" / "audit-log.md").read_text(encoding="utf-8")
    block = doc.split("<!-- rsyslog-input -->", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    homes, work, merged = tmp_path / "homes", tmp_path / "work", tmp_path / "merged.jsonl"
    assert 'File="/home/*/.local/state/ledger/log/audit.jsonl"' in block
    block = block.replace('File="/home/*/', f'File="{homes}/*/')
    work.mkdir()
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(f'global(workDirectory="{work}")\n' + block
                    + RSYSLOG_OUTPUT.replace("OUT", str(merged)))

    def writes(user: str, count: int) -> None:
        home = homes / user
        env = {"HOME": str(home), "XDG_STATE_HOME": str(home / ".local" / "state")}
        done = subprocess.run([sys.executable, "-c", USER_WRITES, str(home / "book.json"),
                               str(count)], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, **env))
        assert done.returncode == 0, done.stderr

    homes.mkdir(mode=0o700)
    for user in ("ana", "bo"):
        (homes / user).mkdir(mode=0o700)
        writes(user, 1)
    daemon = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(tmp_path / "pid")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        writes("ana", 150)
        writes("bo", 40)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if merged.exists() and len(merged.read_bytes().splitlines()) >= 192:
                break
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()

    assert len(list((homes / "ana" / ".local/state/ledger/log").glob("audit.jsonl.*"))) > 2
    lines = merged.read_bytes().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == 192
    result = summary(str(merged))
    assert result["malformed"]["lines"] == 0
    assert group(result, str(homes / "ana" / "book.json"))["outcomes"] == {"ok": 151}
    assert group(result, str(homes / "bo" / "book.json"))["outcomes"] == {"ok": 41}


def test_timestamps_beyond_the_calendar_are_malformed_lines(tmp_path: Path) -> None:
    """Valid ISO 8601 times that leave years 1-9999 once in UTC are counted, not fatal."""
    log = write_lines(
        tmp_path / "audit.jsonl",
        event(),
        event(timestamp="9999-12-31T23:59:59-01:00"),
        event(timestamp="0001-01-01T00:00:00+01:00"),
        event(timestamp="9999-12-31T23:59:59Z"),
    )
    result = summary(str(log))
    assert result["writes"] == 2 and result["malformed"]["lines"] == 2
    assert [s["line"] for s in result["malformed"]["samples"]] == [2, 3]
    assert all("out of range" in s["problem"] for s in result["malformed"]["samples"])
    assert result["totals"]["last"] == "9999-12-31T23:59:59Z"

    table = run_cli("audit", str(log))
    assert table.returncode == 0 and table.stderr == ""
    assert "malformed    2 lines" in table.stdout


def test_deeply_nested_lines_are_malformed_lines(tmp_path: Path) -> None:
    """Lines nested past the depth bound, up to 30,000 levels, are counted, not fatal."""
    deep_host = json.dumps(event())[:-1] + ', "extra": ' + "[" * 70 + "]" * 70 + "}"
    log = write_lines(
        tmp_path / "audit.jsonl",
        event(),
        b"[" * 30_000 + b"]" * 30_000,
        b'{"a": ' * 9_000 + b"1" + b"}" * 9_000,
        deep_host.encode(),
        event(host=[[["alpha"]]]),
    )
    result = summary(str(log))
    assert result["writes"] == 2 and result["malformed"]["lines"] == 3
    samples = result["malformed"]["samples"]
    assert [s["line"] for s in samples] == [2, 3, 4]
    assert all("nested deeper than" in s["problem"] for s in samples)

    table = run_cli("audit", str(log))
    assert table.returncode == 0 and table.stderr == ""
    assert "malformed    3 lines" in table.stdout


@pytest.mark.parametrize("since", ["99999999999d", "800000d", "9" * 400 + "w",
                                   "0001-01-01T00:00:00+01:00"])
def test_since_beyond_the_calendar_is_a_usage_error(tmp_path: Path, since: str) -> None:
    """A --since span or time that leaves years 1-9999: exit 64 saying what it takes."""
    log = write_lines(tmp_path / "audit.jsonl", event())
    done = run_cli("audit", str(log), "--since", since)
    assert done.returncode == 64 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "--since takes" in done.stderr and "24h" in done.stderr


def test_a_corrupt_gzip_file_counts_its_unreadable_rest(tmp_path: Path) -> None:
    """A .gz file whose compressed data is damaged: the lines before count, the rest is one
    malformed entry, and the summary goes on to the next file."""
    good = gzip.compress(b"".join(json.dumps(event(pid=i)).encode() + b"\n" for i in range(3)))
    # A second gzip member whose first deflate block has the reserved type 11.
    bad_member = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\x07" + b"\x00" * 16
    folder = tmp_path / "collected"
    folder.mkdir()
    (folder / "audit.jsonl.1.gz").write_bytes(good + bad_member)
    write_lines(folder / "audit.jsonl", event())
    result = summary(str(folder))
    damaged, current = result["files"]
    assert (damaged["lines"], damaged["writes"], damaged["malformed"]) == (4, 3, 1)
    assert current == {"path": str(folder / "audit.jsonl"), "lines": 1, "writes": 1,
                       "malformed": 0}
    [sample] = result["malformed"]["samples"]
    assert sample["problem"].startswith("the rest of the file cannot be read")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_named_or_collected_is_refused_without_waiting(tmp_path: Path) -> None:
    """A FIFO named as FILE is refused (77) at once, with no writer on its other end; one in a
    folder of collected files is left out."""
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo)
    done = run_cli("audit", str(fifo), timeout=30)
    assert done.returncode == 77 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert str(fifo) in done.stderr and "not a regular file" in done.stderr

    folder = tmp_path / "collected"
    write_lines(folder / "audit.jsonl", event())
    os.mkfifo(folder / "audit.jsonl.1")
    result = summary(str(folder))
    assert [f["path"] for f in result["files"]] == [str(folder / "audit.jsonl")]
    assert result["writes"] == 1


@posix_only
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_named_as_file_is_refused(device: str) -> None:
    """A character device named as FILE is refused (77) before anything is read from it."""
    # Standard input is a pipe here: the device is not the command's own stdin.
    done = run_cli("audit", device, input="", timeout=30)
    assert done.returncode == 77 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert device in done.stderr and "not a regular file" in done.stderr


@posix_only
@pytest.mark.skipif(not os.path.exists("/dev/stdin"), reason="no /dev/stdin")
def test_standard_input_named_as_dev_stdin_is_read(tmp_path: Path) -> None:
    """``... | ledgerctl audit /dev/stdin`` reads the pipe it was given, as the docs show."""
    lines = json.dumps(event()) + "\n" + "a journal line that is not an event\n"
    done = run_cli("audit", "--json", "/dev/stdin", input=lines, timeout=30)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["writes"] == 1 and result["malformed"]["lines"] == 1


def test_reading_stops_at_the_bound_of_each_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file, plain or decompressed, is read up to MAX_READ bytes; the unread rest is one
    malformed entry, so an endless or inflating file cannot hold the command."""
    from ledger import _cmd_audit

    monkeypatch.setattr(_cmd_audit, "MAX_READ", 4000)
    line = json.dumps(event()).encode() + b"\n"
    plain = tmp_path / "audit.jsonl"
    plain.write_bytes(line * 50)
    packed = tmp_path / "audit.jsonl.1.gz"
    packed.write_bytes(gzip.compress(line * 50))
    exact = tmp_path / "exact.jsonl"
    exact.write_bytes(line * (4000 // len(line)))
    zeros = tmp_path / "zeros.jsonl.gz"
    zeros.write_bytes(gzip.compress(b"\0" * 1_000_000))

    result = _cmd_audit.summarise([str(plain), str(packed), str(exact), str(zeros)])
    read = -(-4000 // len(line))
    assert [(f["lines"], f["writes"], f["malformed"]) for f in result["files"]] == [
        (read + 1, read, 1), (read + 1, read, 1), (4000 // len(line), 4000 // len(line), 0),
        (2, 0, 2)]
    problems = [s["problem"] for s in result["malformed"]["samples"]]
    assert problems == ["the rest of the file was not read: only the first 4000 bytes of a "
                        "file are read"] * 2 + [f"longer than {_cmd_audit.MAX_LINE} bytes",
                                                problems[0]]


def test_hostile_text_in_fields_is_shown_escaped(tmp_path: Path) -> None:
    """Lone surrogates, terminal escapes, carriage returns and bidi controls in logged values
    neither crash the output nor reach the terminal raw; --json stays valid UTF-8 JSON."""
    log = write_lines(
        tmp_path / "audit.jsonl",
        b'{"timestamp": "2026-01-01T00:00:00Z", "event": "ledger.write", "outcome": "ok",'
        b' "host": "\\ud800x", "ledger": "/l\\u001b[2J\\rfake", "mode": "\\u202esecure"}',
        b'{"timestamp": "2026-01-01T00:00:00Z", "event": "ledger.\\udfff", "x": 1}',
        event(host="h\u00e9te"),
    )
    done = run_cli("audit", "--json", str(log))
    assert done.returncode == 0 and done.stderr == ""
    result = json.loads(done.stdout)
    assert sorted(g["host"] for g in result["groups"]) == ["\\ud800x", "h\u00e9te"]
    assert result["other_events"] == {"ledger.\\udfff": 1}

    table = run_cli("audit", str(log))
    assert table.returncode == 0 and table.stderr == ""
    for raw in ("\x1b", "\r", "\u202e", "\ud800"):
        assert raw not in table.stdout
    assert "ledger /l\\x1b[2J\\rfake" in table.stdout and "\\u202esecure 1" in table.stdout

    narrow = run_cli("audit", str(log), env={"PYTHONIOENCODING": "ascii"})
    assert narrow.returncode == 0 and narrow.stderr == ""
    assert "host h\\xe9te" in narrow.stdout
    narrow_json = run_cli("audit", "--json", str(log), env={"PYTHONIOENCODING": "ascii"})
    assert narrow_json.returncode == 0 and narrow_json.stderr == ""
    assert json.loads(narrow_json.stdout)["groups"] == result["groups"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=12,
)
FIELDS = ("timestamp", "event", "outcome", "reason", "ledger", "host", "mode", "requested_mode",
          "raised_by_floor", "protections", "missing", "platform", "user")
EXTREME = (datetime.datetime.max, datetime.datetime.min)
OFFSETS = st.integers(min_value=-1439, max_value=1439).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes)))
TIMES = (
    st.builds(lambda when, zone: when.replace(tzinfo=zone).isoformat(),
              st.datetimes() | st.sampled_from(EXTREME), OFFSETS)
    | st.sampled_from(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
                       "2026-01-01T00:00:00.1234567890Z", "2026-02-30T00:00:00Z", "", "Z"])
)
EVENTS = st.builds(
    lambda changes, when: dict(event(timestamp=when), **changes),
    st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES | st.text(max_size=8), max_size=4),
    TIMES,
)
LINES = st.one_of(
    EVENTS.map(lambda value: json.dumps(value).encode()),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=60),
    st.integers(min_value=1, max_value=40_000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(LINES, max_size=12),
       since=st.none() | st.datetimes(timezones=st.just(datetime.timezone.utc)))
def test_any_lines_are_counted_once_and_never_crash(
    tmp_path: Path, lines: list[bytes], since: Optional[datetime.datetime]
) -> None:
    """Whatever the lines hold, the summary neither raises nor loses a line: every non-blank
    line is a write, another event, one before --since or malformed; the counts agree; the
    table and the JSON render as valid UTF-8, and the table has no unprintable character."""
    import io

    from ledger import _cmd_audit

    log = tmp_path / "any.jsonl"
    data = b"\n".join(lines) + b"\n"
    log.write_bytes(data)
    result = _cmd_audit.summarise([str(log)], since)

    non_blank = sum(1 for piece in data.split(b"\n") if piece.strip() or len(piece) > 65536)
    [stats] = result["files"]
    assert stats["lines"] == non_blank
    assert stats["lines"] == (result["writes"] + sum(result["other_events"].values())
                              + result["before_since"] + result["malformed"]["lines"])
    assert (stats["writes"], stats["malformed"]) == (result["writes"],
                                                     result["malformed"]["lines"])
    totals = result["totals"]
    assert totals["writes"] == result["writes"] == sum(g["writes"] for g in result["groups"])
    for part in [totals] + result["groups"]:
        outcomes = part["outcomes"]
        for name in ("outcomes", "modes", "platforms", "users"):
            assert sum(part[name].values()) == part["writes"]
        assert sum(part["refusals"].values()) == outcomes.get("refused", 0)
        assert sum(part["errors"].values()) == part["writes"] - outcomes.get("ok", 0) \
            - outcomes.get("refused", 0)

    json.dumps(result, ensure_ascii=False).encode("utf-8")
    table = io.StringIO()
    _cmd_audit._table(result, table, None)
    table.getvalue().encode("utf-8")
    assert all(char.isprintable() or char == "\n" for char in table.getvalue())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_is_refused_when_standard_input_is_closed(tmp_path: Path) -> None:
    """With stdin closed the FIFO opens as descriptor 0; it is still not taken for stdin."""
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo)
    script = ("import os, sys; os.close(0); from ledger.cli import main; "
              "sys.exit(main(['audit', sys.argv[1]]))")
    done = subprocess.run([sys.executable, "-c", script, str(fifo)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 77 and "not a regular file" in done.stderr


@pytest.mark.skipif(os.name == "nt", reason="POSIX symbolic links")
def test_links_in_a_folder_of_collected_files_are_not_followed(tmp_path: Path) -> None:
    """A link planted among collected files is skipped: its target's lines are never shown."""
    folder = tmp_path / "collected"
    folder.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("root:SECRET-HASH:19000:0:99999:7:::\n")
    (folder / "audit.jsonl.9").symlink_to(secret)
    (folder / "audit.jsonl").write_text("")
    done = run_cli("audit", "--json", str(folder))
    assert done.returncode == 0, done.stderr
    assert "SECRET-HASH" not in done.stdout and "SECRET-HASH" not in done.stderr


@pytest.mark.skipif(os.name == "nt", reason="POSIX links")
def test_a_collected_file_swapped_for_a_link_after_listing_is_not_read(tmp_path: Path) -> None:
    """The file listed is opened without following links: a swap after the listing is refused."""
    from ledger import _cmd_audit
    from ledger.errors import UnsafePathError

    folder = tmp_path / "collected"
    folder.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-LINE\n")
    (folder / "audit.jsonl").write_text("")
    paths = _cmd_audit.audit_files_in(str(folder))
    (folder / "audit.jsonl").unlink()
    (folder / "audit.jsonl").symlink_to(secret)
    with pytest.raises(UnsafePathError) as refused:
        _cmd_audit.summarise(paths, None)
    assert refused.value.reason == "symlink"


@pytest.mark.skipif(os.name == "nt", reason="POSIX hard links")
def test_a_collected_file_with_a_second_hard_link_is_not_read(tmp_path: Path) -> None:
    """A hard link planted among collected files (another file's inode) is refused unread."""
    folder = tmp_path / "collected"
    folder.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-LINE\n")
    os.link(secret, folder / "audit.jsonl.2")
    done = run_cli("audit", "--json", str(folder))
    assert done.returncode == 77, done.stderr
    assert "SECRET-LINE" not in done.stdout + done.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="making a link another uid owns needs root")
def test_a_named_link_another_user_planted_is_not_followed(tmp_path: Path) -> None:
    """Ops (root) name a user's audit file, which that user turned into a link to a file
    only root may read: 77, and not a byte of the target is shown, whether the link is the
    file, the folder named (with or without a trailing slash) or a folder on the way. A
    link root made in a folder only root controls is followed."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root-only SECRET-LINE\n")
    secret.chmod(0o600)
    home = tmp_path / "alice"
    (home / "log").mkdir(parents=True)
    (home / "log" / "audit.jsonl").symlink_to(secret)
    (home / "collected").symlink_to(tmp_path / "root-logs")
    (tmp_path / "root-logs").mkdir()
    shutil.copyfile(secret, tmp_path / "root-logs" / "audit.jsonl")
    for path in (home / "log", home / "log" / "audit.jsonl", home / "collected", home):
        os.lchown(path, 61001, 61001)

    collected = str(home / "collected")
    # "collected/../x" is x beside the link's target for the kernel, not beside the link.
    (home / "x.jsonl").write_text(json.dumps(event(host="FAKE")) + "\n")
    for named in (home / "log" / "audit.jsonl", collected, collected + "/", collected + "/.",
                  home / "collected" / "audit.jsonl", home / "collected" / "." / "audit.jsonl",
                  collected + "/../x.jsonl"):
        for args in (["audit", str(named)], ["audit", "--json", str(named)]):
            done = run_cli(*args)
            assert done.returncode == 77, (args, done.stdout, done.stderr)
            assert "SECRET-LINE" not in done.stdout + done.stderr
            assert "symbolic link" in done.stderr

    own = tmp_path / "root-link.jsonl"
    write_lines(tmp_path / "real.jsonl", event(pid=7))
    own.symlink_to(tmp_path / "real.jsonl")
    followed = run_cli("audit", "--json", str(own))
    assert followed.returncode == 0, followed.stderr
    assert json.loads(followed.stdout)["writes"] == 1


@posix_only
def test_the_configured_audit_file_is_not_read_through_a_link(tmp_path: Path) -> None:
    """The default files (the configured one and its rotations) are the writer's, which
    never writes through a link: a link there is refused (77), its target not shown."""
    log = default_audit_file()
    log.parent.mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-LINE\n")
    write_lines(log, event(pid=1))
    Path(f"{log}.1").symlink_to(secret)
    done = run_cli("audit", "--json")
    assert done.returncode == 77, done.stderr
    assert "SECRET-LINE" not in done.stdout + done.stderr


def test_a_dash_reads_standard_input(tmp_path: Path) -> None:
    """``... | ledgerctl audit -`` reads the pipe, like ``/dev/stdin``."""
    lines = json.dumps(event(pid=1)) + "\n" + json.dumps(event(pid=2)) + "\n"
    done = run_cli("audit", "--json", "-", input=lines, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["writes"] == 2
