"""The escalation commands, call for call with the hook that came before."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, audit_events, default_audit_file, run_cli
from ledger import escalation
from ledger.escalation import signal_hash

CASES = json.loads((FIXTURES / "signal-hashes.json").read_text(encoding="utf-8"))
FIXTURE_LEDGER = FIXTURES / "escalation-history.json"


@pytest.mark.parametrize("case", CASES, ids=[f"{c['categories']!r}/{c['stage']}" for c in CASES])
def test_signal_hash_matches_the_old_hook(case: dict) -> None:
    """Every fixture input hashes to the exact hash the old hook produced."""
    assert signal_hash(case["categories"], case["stage"]) == case["signal_hash"]


def test_hash_command_matches_every_fixture_case() -> None:
    """``ledgerctl hash [--stage=NAME] CATS`` prints the fixture hash and exits 0."""
    for case in CASES:
        args = ["hash", case["categories"]]
        if case["stage"] is not None:
            args.insert(1, f"--stage={case['stage']}")
        done = run_cli(*args)
        assert (done.returncode, done.stdout, done.stderr) == (0, case["signal_hash"] + "\n", "")


@pytest.fixture
def old_ledger(ledger_dir: Path) -> Path:
    """A writable copy of the ledger written by the old hook."""
    target = ledger_dir / "escalation-history.json"
    shutil.copyfile(FIXTURE_LEDGER, target)
    target.chmod(0o600)
    return target


def test_lookup_on_the_old_ledger_prints_the_newest_entry(old_ledger: Path) -> None:
    """``lookup`` finds the newest entry for a hash in the old hook's file, exactly as stored."""
    entries = json.loads(FIXTURE_LEDGER.read_text(encoding="utf-8"))
    env = {"PF_ESCALATION_LEDGER_DIR": str(old_ledger.parent)}
    for entry in entries:
        newest = [e for e in entries if e["signal_hash"] == entry["signal_hash"]][-1]
        done = run_cli("lookup", entry["signal_hash"], env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == newest
        assert done.stderr == ""
    missing = run_cli("lookup", "0" * 64, env=env)
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", "")


def test_record_extends_the_old_ledger_without_changing_its_format(old_ledger: Path) -> None:
    """``record`` appends one entry; old entries stay byte-for-byte in the same layout."""
    before = old_ledger.read_bytes()
    env = {"PF_ESCALATION_LEDGER_DIR": str(old_ledger.parent)}
    sig = signal_hash("scale,pii")
    done = run_cli("record", sig, "standard", "pro", "forced", "r-new", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    printed = json.loads(done.stdout)
    assert done.stdout.count("\n") == 1
    assert printed["action_taken"] == "force_upgraded"
    assert abs(printed["timestamp"] - time.time()) < 60

    after = json.loads(old_ledger.read_text(encoding="utf-8"))
    assert after[:-1] == json.loads(before)
    assert after[-1] == printed
    assert list(printed) == ["signal_hash", "current_profile", "recommended", "user_response",
                             "timestamp", "run_id", "action_taken"]
    # Same layout as the old hook: a two-space indented array; the old part is unchanged.
    text = old_ledger.read_text(encoding="utf-8")
    assert text == json.dumps(after, indent=2)
    assert text.startswith(before.decode("utf-8")[:-2])


@pytest.mark.parametrize(
    "response, action",
    [("forced", "force_upgraded"), ("accepted", "upgraded"), ("declined", "stayed"),
     ("declined_twice", "stayed"), ("anything", "stayed")],
)
def test_action_taken_follows_the_response(response: str, action: str) -> None:
    """``action_taken`` is derived from the response as the design says."""
    assert escalation.make_entry("s", "a", "b", response, "r")["action_taken"] == action


def test_replay_safe_suppresses_only_a_decline_within_24_hours(ledger_dir: Path) -> None:
    """Exit 1 (suppress) for a decline in the last 24 h; 0 for older, other answers, or none."""
    now = int(time.time())
    sig_recent, sig_old, sig_accepted = "a" * 64, "b" * 64, "c" * 64
    entries = [
        escalation.make_entry(sig_recent, "standard", "pro", "declined", "r1", now=now - 3600),
        escalation.make_entry(sig_old, "standard", "pro", "declined", "r2", now=now - 90000),
        escalation.make_entry(sig_accepted, "standard", "pro", "accepted", "r3", now=now - 60),
    ]
    (ledger_dir / "escalation-history.json").write_text(json.dumps(entries, indent=2))
    (ledger_dir / "escalation-history.json").chmod(0o600)
    env = {"PF_ESCALATION_LEDGER_DIR": str(ledger_dir)}
    for sig, code in [(sig_recent, 1), (sig_old, 0), (sig_accepted, 0), ("d" * 64, 0)]:
        for spelling in ("replay_safe", "replay-safe"):
            done = run_cli(spelling, sig, env=env)
            assert (done.returncode, done.stdout, done.stderr) == (code, "", ""), (sig, spelling)


def test_replay_safe_on_the_fixture_ledger(old_ledger: Path) -> None:
    """Fixture declines are all older than 24 h now, so every hash in it is safe to prompt."""
    entries = json.loads(FIXTURE_LEDGER.read_text(encoding="utf-8"))
    assert max(e["timestamp"] for e in entries) < time.time() - 86400
    env = {"PF_ESCALATION_LEDGER_DIR": str(old_ledger.parent)}
    for sig in {e["signal_hash"] for e in entries}:
        assert run_cli("replay_safe", sig, env=env).returncode == 0


def test_default_folder_is_preview_forge_in_home(isolated_env: dict) -> None:
    """Without the variable the ledger lives in ~/.preview-forge, created 0700."""
    done = run_cli("record", "s" * 64, "standard", "pro", "declined", "r")
    assert done.returncode == 0, done.stderr
    folder = Path(isolated_env["HOME"]) / ".preview-forge"
    assert (folder / "escalation-history.json").is_file()
    if os.name != "nt":  # Windows has no mode bits; its backend checks owners and ACLs
        assert folder.stat().st_mode & 0o777 == 0o700
        assert (folder / "escalation-history.json").stat().st_mode & 0o777 == 0o600


def test_cap_keeps_the_newest_200_and_the_audit_says_what_was_pruned(ledger_dir: Path) -> None:
    """With 200 entries already there, one more record drops the oldest and says so."""
    entries = [escalation.make_entry(f"{i:064x}", "standard", "pro", "accepted", f"r{i}", now=i)
               for i in range(200)]
    path = ledger_dir / "escalation-history.json"
    path.write_text(json.dumps(entries, indent=2))
    path.chmod(0o600)
    done = run_cli("record", "f" * 64, "standard", "pro", "declined", "r-last",
                   env={"PF_ESCALATION_LEDGER_DIR": str(ledger_dir)})
    assert done.returncode == 0, done.stderr
    after = json.loads(path.read_text())
    assert len(after) == 200
    assert after[0] == entries[1] and after[-1]["run_id"] == "r-last"
    events = [e for e in audit_events(default_audit_file()) if e["event"] == "ledger.write"]
    assert events[-1]["outcome"] == "ok" and events[-1]["pruned"] == 1


def test_wrong_usage_exits_64() -> None:
    """Missing arguments or an unknown command are usage errors (64), said on stderr."""
    for args in (["record", "only-one"], ["lookup"], ["no-such-command"], []):
        done = run_cli(*args)
        assert done.returncode == 64, args
        assert done.stdout == ""
        assert "Traceback" not in done.stderr


def test_values_that_start_with_a_dash_are_values(ledger_dir: Path) -> None:
    """As with the old hook, a run id, signal or category that starts with '-' is taken as
    a value (not as an unknown option), wherever the global options stand; '--' makes
    even an option's name a value. The entry holds the values exactly."""
    env = {"PF_ESCALATION_LEDGER_DIR": str(ledger_dir)}
    policy = ledger_dir.parent / "p.toml"
    policy.write_text('mode = "secure"\n', encoding="utf-8")
    policy.chmod(0o600)
    calls = [
        (["record", "-sig", "cur", "rec", "declined", "-run1"], "-sig", "-run1"),
        (["--policy", str(policy), "record", "s2", "-c", "-r", "accepted", "-x"], "s2", "-x"),
        (["record", "s3", "c", "r", "declined", "--traceback", "--", "--help"], "s3", "--help"),
        (["record", f"--policy={policy}", "--", "s4", "c", "r", "forced", "-h"], "s4", "-h"),
    ]
    for args, sig, run_id in calls:
        done = run_cli(*args, env=env)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stderr == ""
        assert (json.loads(done.stdout)["signal_hash"], json.loads(done.stdout)["run_id"]) == (
            sig, run_id)
    stored = json.loads((ledger_dir / "escalation-history.json").read_text(encoding="utf-8"))
    assert [(e["signal_hash"], e["run_id"]) for e in stored] == [(s, r) for _, s, r in calls]
    assert stored[1]["current_profile"] == "-c"

    found = run_cli("lookup", "-sig", env=env)
    assert (found.returncode, json.loads(found.stdout)["run_id"]) == (0, "-run1")
    assert run_cli("replay_safe", "-sig", env=env).returncode == 1
    dashed = run_cli("hash", "--stage=Build", "-pii,scale")
    assert (dashed.returncode, dashed.stdout) == (0, signal_hash("-pii,scale", "Build") + "\n")
    spaced = run_cli("hash", "-pii,scale", "--stage", "Build")
    assert spaced.stdout == dashed.stdout


def test_help_mixed_with_values_records_nothing_and_says_so(ledger_dir: Path) -> None:
    """``record A B C D --help`` (or ``--help``/``--version`` before the command, with
    values) neither prints the usage with exit 0 (a hook would believe it recorded) nor
    records: it is a usage error (64) that says to use '--'. ``record --help`` alone
    still prints the usage."""
    env = {"PF_ESCALATION_LEDGER_DIR": str(ledger_dir)}
    values = ["sig", "cur", "rec", "declined", "run"]
    for args in (["record", *values[:4], "--help"], ["record", *values[:4], "-h"],
                 ["--help", "record", *values], ["--version", "record", *values]):
        done = run_cli(*args, env=env)
        assert (done.returncode, done.stdout) == (64, ""), args
        assert "'--'" in done.stderr and "Traceback" not in done.stderr
    assert not (ledger_dir / "escalation-history.json").exists()

    usage = run_cli("record", "--help", env=env)
    assert usage.returncode == 0 and "RUN_ID" in usage.stdout
    short = run_cli("record", "sig", "cur", "-rec", "declined", env=env)
    assert short.returncode == 64
    assert "takes 5 value(s), SIG CURRENT RECOMMENDED RESPONSE RUN_ID, and got 4" in short.stderr


def test_the_demo_of_the_quick_start_records_and_looks_up(tmp_path: Path) -> None:
    """``ledgerctl demo`` (the README's first command) writes one entry with the fixture
    hash of "compliance,multi_tenant", finds it, says suppress, names every protection
    and leaves one ok audit event; without --dir it says which folder to remove."""
    folder = tmp_path / "demo"
    done = run_cli("demo", "--dir", str(folder))
    assert (done.returncode, done.stderr) == (0, "")
    sig = signal_hash("compliance,multi_tenant")
    stored = json.loads((folder / "escalation-history.json").read_text(encoding="utf-8"))
    assert [(e["signal_hash"], e["user_response"]) for e in stored] == [(sig, "declined")]
    assert "replay_safe suppress" in done.stdout
    assert all(f"\n{name} " in done.stdout for name in ("lock", "no_follow", "durable_rename"))
    events = audit_events(default_audit_file())
    assert [(e["outcome"], e["ledger"]) for e in events] == [
        ("ok", str(folder / "escalation-history.json"))]

    scratch = run_cli("demo")
    assert scratch.returncode == 0, scratch.stderr
    left = scratch.stdout.split("The demo ledger stays in ", 1)[1].split(" for you", 1)[0]
    assert (Path(left) / "ledger" / "escalation-history.json").exists()
    shutil.rmtree(left)
