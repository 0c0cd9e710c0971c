"""The three modes with real processes, the machine floor, and network filesystems."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from ledger import _netfs, _policy_load
from ledger.cli import main

from conftest import audit_events, default_audit_file

POSIX = pytest.mark.skipif(os.name == "nt", reason="POSIX backend and flock")

LEGACY_WARNING = (
    "ledger: legacy mode: there is no concurrency lock and no link checks; "
    "several users sharing one home is not supported."
)

# A hook process whose machine policy lives in the test's folder: the module
# attributes are set in the child itself, then the CLI runs as usual.
CHILD = textwrap.dedent(
    """
    import os, sys
    from ledger import _policy_load
    _policy_load.MACHINE_POLICY_PATH = sys.argv[1]
    if hasattr(os, "geteuid"):
        _policy_load.MACHINE_OWNER_UIDS = (0, os.geteuid())
    from ledger.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def run_hook(machine: Path, *args: str, env: Optional[dict[str, str]] = None
             ) -> subprocess.CompletedProcess[str]:
    """Run ``ledgerctl ARGS`` in a fresh process with the test's machine policy path."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", CHILD, str(machine), *args],
                          capture_output=True, text=True, env=full_env, timeout=60)


def write_policy(path: Path, text: str) -> Path:
    """Write a policy file, private to the user."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def last_write_event() -> dict[str, Any]:
    """The newest ``ledger.write`` event of the isolated default audit file."""
    events = [e for e in audit_events(default_audit_file()) if e.get("event") == "ledger.write"]
    assert events, "no ledger.write event was written"
    return events[-1]


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    """Where the child processes look for the machine policy (absent until a test writes it)."""
    folder = tmp_path / "machine"
    folder.mkdir(mode=0o755)
    return folder / "policy.toml"


@pytest.fixture
def held_lock(ledger_dir: Path) -> Iterator[Path]:
    """Hold the flock of ``ledger.json.lock`` in the test process for the test's duration."""
    import fcntl

    lock = ledger_dir / "ledger.json.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield lock
    finally:
        os.close(fd)


@POSIX
class TestModesInProcesses:
    def test_strict_by_flag_writes_with_every_protection(
        self, machine: Path, ledger_dir: Path, tmp_path: Path
    ) -> None:
        """strict (from --policy) writes on a local folder with all protections and no warning."""
        policy = write_policy(tmp_path / "strict.toml", 'mode = "strict"\n')
        ledger = ledger_dir / "ledger.json"
        done = run_hook(machine, "--policy", str(policy), "append", str(ledger), '{"n": 1}')
        assert (done.returncode, done.stderr) == (0, "")
        event = last_write_event()
        assert (event["mode"], event["outcome"], event["missing"]) == ("strict", "ok", [])
        assert event["protections"]["lock"] == "fcntl.flock"
        assert event["policy"] == [str(policy)]
        assert json.loads(ledger.read_text(encoding="utf-8")) == [{"n": 1}]

    def test_secure_by_variable(self, machine: Path, ledger_dir: Path, tmp_path: Path) -> None:
        """secure named by LEDGER_POLICY writes with the lock and says which file made it."""
        policy = write_policy(tmp_path / "secure.toml", 'mode = "secure"\nlock_timeout = 4\n')
        ledger = ledger_dir / "ledger.json"
        done = run_hook(machine, "append", str(ledger), '{"n": 2}',
                        env={"LEDGER_POLICY": str(policy)})
        assert (done.returncode, done.stderr) == (0, "")
        event = last_write_event()
        assert (event["mode"], event["policy"]) == ("secure", [str(policy)])
        assert event["protections"]["lock"] == "fcntl.flock"

    def test_legacy_warns_once_and_records_no_lock(
        self, machine: Path, ledger_dir: Path, tmp_path: Path
    ) -> None:
        """legacy prints exactly the one warning line on stderr and its audit shows no lock."""
        policy = write_policy(tmp_path / "legacy.toml", 'mode = "legacy"\n')
        ledger = ledger_dir / "ledger.json"
        done = run_hook(machine, "--policy", str(policy), "append", str(ledger), '{"n": 3}')
        assert done.returncode == 0
        assert done.stderr.splitlines() == [LEGACY_WARNING]
        event = last_write_event()
        assert (event["mode"], event["protections"]["lock"]) == ("legacy", None)
        assert event["protections"]["atomic_replace"] is not None

    def test_legacy_warns_once_per_process_however_many_writes(
        self, ledger_dir: Path, tmp_path: Path
    ) -> None:
        """Three writes and a read in one legacy process give one warning line, not four."""
        policy = write_policy(tmp_path / "legacy.toml", 'mode = "legacy"\n')
        code = textwrap.dedent(
            """
            import sys
            from ledger import Ledger, load_policy
            ledger = Ledger(sys.argv[1], policy=load_policy(sys.argv[2]))
            for n in range(3):
                ledger.append({"n": n})
            print(len(ledger.records()))
            """
        )
        done = subprocess.run([sys.executable, "-c", code, str(ledger_dir / "l.json"),
                               str(policy)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "3"
        assert done.stderr.splitlines() == [LEGACY_WARNING]

    def test_legacy_takes_no_lock_while_secure_waits_and_gives_up(
        self, machine: Path, ledger_dir: Path, tmp_path: Path, held_lock: Path
    ) -> None:
        """With the lock held elsewhere, legacy still writes; secure exits 75 and changes nothing."""
        ledger = ledger_dir / "ledger.json"
        legacy = write_policy(tmp_path / "legacy.toml", 'mode = "legacy"\n')
        secure = write_policy(tmp_path / "secure.toml", 'mode = "secure"\nlock_timeout = 0.3\n')

        done = run_hook(machine, "--policy", str(legacy), "append", str(ledger), '{"by": "legacy"}')
        assert done.returncode == 0, done.stderr
        before = ledger.read_bytes()
        assert json.loads(before) == [{"by": "legacy"}]

        done = run_hook(machine, "--policy", str(secure), "append", str(ledger), '{"by": "secure"}')
        assert done.returncode == 75, done.stderr
        assert "lock" in done.stderr
        assert ledger.read_bytes() == before
        assert last_write_event()["reason"] == "lock_timeout"


@POSIX
class TestFloorInProcesses:
    @pytest.fixture
    def floor(self, machine: Path) -> Path:
        """Machine floor secure; the user's own policy asks for legacy with a short timeout."""
        write_policy(machine, 'minimum_mode = "secure"\n')
        os.chmod(machine, 0o644)
        from ledger._policy_load import user_policy_path

        write_policy(Path(user_policy_path()), 'mode = "legacy"\nlock_timeout = 0.3\n')
        return machine

    def test_user_legacy_under_secure_floor_writes_with_the_lock(
        self, floor: Path, ledger_dir: Path
    ) -> None:
        """The write runs secure with flock, prints no legacy warning, and the audit says so."""
        ledger = ledger_dir / "ledger.json"
        done = run_hook(floor, "append", str(ledger), '{"n": 1}')
        assert (done.returncode, done.stderr) == (0, "")
        event = last_write_event()
        assert event["mode"] == "secure"
        assert event["requested_mode"] == "legacy"
        assert event["raised_by_floor"] is True
        assert event["protections"]["lock"] == "fcntl.flock"
        assert event["policy"][0] == str(floor)

    def test_raised_write_waits_for_the_lock(
        self, floor: Path, ledger_dir: Path, held_lock: Path
    ) -> None:
        """Proof that the lock is taken: with it held elsewhere the raised write exits 75."""
        ledger = ledger_dir / "ledger.json"
        done = run_hook(floor, "append", str(ledger), '{"n": 1}')
        assert done.returncode == 75, done.stderr
        assert LEGACY_WARNING not in done.stderr
        assert not ledger.exists()
        event = last_write_event()
        assert (event["outcome"], event["requested_mode"]) == ("refused", "legacy")

    def test_policy_show_reports_the_raise(self, floor: Path) -> None:
        """policy show --json says which mode was asked for and that the floor raised it."""
        done = run_hook(floor, "policy", "show", "--json")
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        assert (info["mode"], info["requested_mode"], info["raised_by_floor"]) == (
            "secure", "legacy", True)
        assert info["origins"]["mode"] == str(floor)


@POSIX
class TestMachineModeInProcesses:
    @pytest.fixture
    def strict_machine(self, machine: Path) -> Path:
        """The worked example: machine mode and floor strict; the user's own policy says legacy."""
        write_policy(machine, 'mode = "strict"\nminimum_mode = "strict"\nlock_timeout = 10\n')
        os.chmod(machine, 0o644)
        from ledger._policy_load import user_policy_path

        write_policy(Path(user_policy_path()), 'mode = "legacy"\n')
        return machine

    def test_write_and_show_say_the_user_asked_for_legacy(
        self, strict_machine: Path, ledger_dir: Path
    ) -> None:
        """The write runs strict; its audit event and policy show say legacy was asked."""
        from ledger._policy_load import user_policy_path

        ledger = ledger_dir / "ledger.json"
        done = run_hook(strict_machine, "append", str(ledger), '{"n": 1}')
        assert (done.returncode, done.stderr) == (0, "")
        event = last_write_event()
        assert (event["mode"], event["outcome"]) == ("strict", "ok")
        assert (event["requested_mode"], event["raised_by_floor"]) == ("legacy", True)
        assert event["protections"]["lock"] == "fcntl.flock"

        done = run_hook(strict_machine, "policy", "show", "--json")
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        assert (info["mode"], info["requested_mode"], info["raised_by_floor"]) == (
            "strict", "legacy", True)
        assert info["origins"]["requested_mode"] == user_policy_path()


@POSIX
class TestBrokenPolicyStopsTheWrite:
    def test_invalid_named_policy_writes_nothing(
        self, machine: Path, ledger_dir: Path, tmp_path: Path
    ) -> None:
        """A write under an invalid policy exits 78, names the file, and creates no ledger."""
        bad = write_policy(tmp_path / "bad.toml", 'mode = "relaxed"\n')
        ledger = ledger_dir / "ledger.json"
        done = run_hook(machine, "--policy", str(bad), "append", str(ledger), '{"n": 1}')
        assert done.returncode == 78
        assert str(bad) in done.stderr and "relaxed" in done.stderr
        assert "Traceback" not in done.stderr
        assert not ledger.exists()

    def test_untrusted_machine_policy_is_not_skipped(
        self, machine: Path, ledger_dir: Path
    ) -> None:
        """A machine policy others may write stops the hook with 78; it is never ignored."""
        write_policy(machine, 'mode = "secure"\n')
        os.chmod(machine, 0o666)
        done = run_hook(machine, "record", "sig", "a", "b", "declined", "run1")
        assert done.returncode == 78
        assert str(machine) in done.stderr


def _nfs(fd: int) -> tuple[str, Optional[bool]]:
    return "nfs", True


@POSIX
class TestNetworkFilesystem:
    def test_strict_refuses_with_69(
        self, monkeypatch: pytest.MonkeyPatch, ledger_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]
    ) -> None:
        """On a folder reported as NFS, strict exits 69 naming local_fs, and writes nothing."""
        monkeypatch.setattr(_policy_load, "MACHINE_POLICY_PATH", str(tmp_path / "none.toml"))
        monkeypatch.setattr(_netfs, "filesystem_of", _nfs)
        policy = write_policy(tmp_path / "strict.toml", 'mode = "strict"\n')
        ledger = ledger_dir / "ledger.json"
        code = main(["--policy", str(policy), "append", str(ledger), '{"n": 1}'])
        assert code == 69
        assert "local_fs" in capsys.readouterr().err
        assert not ledger.exists()
        event = last_write_event()
        assert (event["outcome"], event["reason"]) == ("refused", "protection_unavailable")
        assert "local_fs" in event["missing"]

    def test_secure_writes_and_records_local_fs_missing(
        self, monkeypatch: pytest.MonkeyPatch, ledger_dir: Path, tmp_path: Path
    ) -> None:
        """On a folder reported as NFS, secure writes and its audit lists local_fs as missing."""
        monkeypatch.setattr(_policy_load, "MACHINE_POLICY_PATH", str(tmp_path / "none.toml"))
        monkeypatch.setattr(_netfs, "filesystem_of", _nfs)
        ledger = ledger_dir / "ledger.json"
        assert main(["append", str(ledger), '{"n": 1}']) == 0
        assert json.loads(ledger.read_text(encoding="utf-8")) == [{"n": 1}]
        event = last_write_event()
        assert (event["mode"], event["outcome"]) == ("secure", "ok")
        assert "local_fs" in event["missing"]
        assert event["protections"]["local_fs"] is None
        assert event["protections"]["lock"] == "fcntl.flock"
