"""``ledgerctl policy show`` and ``ledgerctl policy check``, as an admin runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

from ledger import _policy_load
from ledger.cli import main

from conftest import REPO

POSIX = pytest.mark.skipif(os.name == "nt", reason="POSIX owners and modes")

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


def run_admin(machine: Path, *args: str, env: Optional[dict[str, str]] = None
              ) -> subprocess.CompletedProcess[str]:
    """Run ``ledgerctl ARGS`` in a fresh process whose machine policy is ``machine``."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", CHILD, str(machine), *args],
                          capture_output=True, text=True, env=full_env, timeout=60)


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    """Write a policy file with an exact mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The machine policy path of this test, for in-process and child runs alike."""
    path = tmp_path / "machine" / "policy.toml"
    path.parent.mkdir(mode=0o755)
    monkeypatch.setattr(_policy_load, "MACHINE_POLICY_PATH", str(path))
    if hasattr(os, "geteuid"):
        monkeypatch.setattr(_policy_load, "MACHINE_OWNER_UIDS", (0, os.geteuid()))
    return path


@pytest.fixture
def user() -> Path:
    """The user's policy path in the isolated config folder."""
    return Path(_policy_load.user_policy_path())


@POSIX
class TestShow:
    def test_json_lists_values_origins_and_both_locations(
        self, machine: Path, user: Path, tmp_path: Path
    ) -> None:
        """--json gives each value with the file that set it, and where each file is looked for."""
        write(machine, "lock_timeout = 3\n")
        write(user, 'mode = "strict"\nescalation_cap = 20\n', 0o600)
        done = run_admin(machine, "policy", "show", "--json")
        assert (done.returncode, done.stderr) == (0, "")
        info = json.loads(done.stdout)
        assert info["mode"] == "strict" and info["raised_by_floor"] is False
        assert info["values"]["lock_timeout"] == 3 and info["values"]["escalation_cap"] == 20
        assert info["origins"]["lock_timeout"] == str(machine)
        assert info["origins"]["mode"] == str(user)
        assert info["origins"]["audit_stderr"] == "default"
        assert info["sources"] == [str(machine), str(user)]
        kinds = [(f["kind"], f["path"], f["present"], f["used"]) for f in info["files"]]
        assert kinds == [("machine", str(machine), True, True),
                         ("explicit", None, False, False),
                         ("user", str(user), True, True)]

    def test_absent_files_are_still_listed(self, machine: Path, user: Path) -> None:
        """With no policy files, show still says where the machine and user files would be."""
        done = run_admin(machine, "policy", "show", "--json")
        info = json.loads(done.stdout)
        assert info["mode"] == "secure" and info["sources"] == []
        assert [(f["kind"], f["path"], f["present"]) for f in info["files"]] == [
            ("machine", str(machine), False), ("explicit", None, False),
            ("user", str(user), False)]

    def test_table_for_people(self, machine: Path, tmp_path: Path) -> None:
        """The table names the mode, each key's origin and the state of each location."""
        explicit = write(tmp_path / "team.toml", 'mode = "strict"\n')
        done = run_admin(machine, "policy", "show", env={"LEDGER_POLICY": str(explicit)})
        assert (done.returncode, done.stderr) == (0, "")
        lines = done.stdout.splitlines()
        assert lines[0] == "Effective policy: mode strict"
        mode_row = next(line.split() for line in lines if line.strip().startswith("mode "))
        assert mode_row == ["mode", '"strict"', str(explicit)]
        assert f"  machine   {machine}: absent" in lines
        assert f"  explicit  {explicit} [named by LEDGER_POLICY]: present, used" in lines
        assert any(line.startswith("  user      ") and line.endswith(": absent") for line in lines)

    def test_table_explains_a_raise(self, machine: Path, user: Path) -> None:
        """When the floor raised the mode, the table says who asked for what."""
        write(machine, 'minimum_mode = "strict"\n')
        write(user, 'mode = "legacy"\n', 0o600)
        done = run_admin(machine, "policy", "show")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[:2] == [
            "Effective policy: mode strict",
            f'  ({user} asked for "legacy"; the machine floor minimum_mode = "strict" raised it)',
        ]

    def test_table_explains_a_machine_mode_over_a_weaker_choice(
        self, machine: Path, user: Path
    ) -> None:
        """When the machine's mode (no floor) overrides a weaker user mode, the table says so."""
        write(machine, 'mode = "secure"\n')
        write(user, 'mode = "legacy"\n', 0o600)
        done = run_admin(machine, "policy", "show")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[:2] == [
            "Effective policy: mode secure",
            f'  ({user} asked for "legacy"; the machine policy\'s mode = "secure" overrides it)',
        ]

    def test_broken_policy_is_78(self, machine: Path, user: Path) -> None:
        """show refuses to guess: an invalid user policy gives 78 naming the file."""
        write(user, "mode = \n", 0o600)
        done = run_admin(machine, "policy", "show")
        assert done.returncode == 78 and str(user) in done.stderr
        assert done.stdout == ""


CHECK_INVALID = [
    ('mode = "fast"\n', ["'mode'", '"strict", "secure", "legacy"']),
    ("lock_timeout = 0\n", ["'lock_timeout'", "more than 0"]),
    ("oops = 1\n", ["unknown key 'oops'", "mode, minimum_mode"]),
    ('mode = "secure"\nlock_timeout = = 1\n', ["TOML syntax error", "line 2"]),
    ('audit_stderr = "no"\n', ["'audit_stderr'", "true or false"]),
]


@POSIX
class TestCheck:
    def test_valid_file_is_0_and_says_what_it_sets(
        self, machine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A valid file exits 0 and prints what it sets, on stdout only."""
        path = write(tmp_path / "ok.toml", 'mode = "strict"\nlock_timeout = 2\n')
        assert main(["policy", "check", str(path)]) == 0
        out, err = capsys.readouterr()
        assert out == f'{path}: valid as a policy; it sets mode = "strict", lock_timeout = 2.\n'
        assert err == ""

    @pytest.mark.parametrize("text,words", CHECK_INVALID)
    def test_invalid_file_is_78_with_reasons(
        self, machine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        text: str, words: list[str]
    ) -> None:
        """An invalid file exits 78 and lists each reason, naming the file."""
        path = write(tmp_path / "bad.toml", text)
        assert main(["policy", "check", str(path)]) == 78
        out, err = capsys.readouterr()
        assert out == "" and str(path) in err
        for word in words:
            assert word in err, (word, err)

    def test_all_reasons_are_listed(
        self, machine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Three mistakes give three reason lines."""
        path = write(tmp_path / "bad.toml", 'mode = "x"\ncolour = 1\nescalation_cap = 0\n')
        assert main(["policy", "check", str(path)]) == 78
        reasons = [line for line in capsys.readouterr().err.splitlines()
                   if line.startswith("  - ")]
        assert len(reasons) == 3

    def test_floor_is_valid_only_as_machine_policy(
        self, machine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """minimum_mode passes with --machine and is an error without it."""
        path = write(tmp_path / "floor.toml", 'minimum_mode = "secure"\n')
        assert main(["policy", "check", "--machine", str(path)]) == 0
        assert "valid as a machine policy" in capsys.readouterr().out
        assert main(["policy", "check", str(path)]) == 78
        assert "only in the machine policy" in capsys.readouterr().err

    def test_machine_check_applies_the_owner_rule(
        self, machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--machine refuses a file that root does not own (or that sits in a folder of a user)."""
        path = write(tmp_path / "floor.toml", 'minimum_mode = "secure"\n')
        monkeypatch.setattr(_policy_load, "MACHINE_OWNER_UIDS", (0,))
        if os.geteuid() == 0:
            os.chown(path, 65534, -1)
        assert main(["policy", "check", "--machine", str(path)]) == 78
        err = capsys.readouterr().err
        assert f"Refusing the machine policy {path}" in err and "root" in err
        if os.geteuid() == 0:
            assert "it belongs to uid 65534; it must belong to root" in err

    def test_missing_file_is_78(
        self, machine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Checking a file that does not exist is 78, for either kind."""
        for extra in ([], ["--machine"]):
            assert main(["policy", "check", *extra, str(tmp_path / "none.toml")]) == 78
            assert "does not exist" in capsys.readouterr().err

    def test_deeply_nested_file_is_78_in_a_real_process(
        self, machine: Path, tmp_path: Path
    ) -> None:
        """check, show and a write each give 78 naming a deeply nested file, never a traceback."""
        path = write(tmp_path / "deep.toml", "mode = " + "[\n" * 50000 + "]\n" * 50000)
        ledger_file = tmp_path / "book.json"
        for args in (["policy", "check", str(path)], ["--policy", str(path), "policy", "show"],
                     ["--policy", str(path), "append", str(ledger_file), "{}"]):
            done = run_admin(machine, *args)
            assert done.returncode == 78, (args, done.stderr)
            assert str(path) in done.stderr and "nested too deeply" in done.stderr
            assert "Traceback" not in done.stderr and done.stdout == ""
        assert not ledger_file.exists()

    def test_link_is_78(self, machine: Path, tmp_path: Path) -> None:
        """A link given to check is refused like any policy link, in a real process."""
        target = write(tmp_path / "real.toml", 'mode = "strict"\n')
        (tmp_path / "link.toml").symlink_to(target)
        done = run_admin(machine, "policy", "check", str(tmp_path / "link.toml"))
        assert done.returncode == 78 and "symbolic link" in done.stderr

    @pytest.mark.parametrize("name", ["strict", "secure", "legacy"])
    def test_example_policies_pass(self, machine: Path, tmp_path: Path, name: str) -> None:
        """Each example in policies/ passes the check in a real process, and as a machine policy."""
        path = REPO / "policies" / f"{name}.toml"
        done = run_admin(machine, "policy", "check", str(path))
        assert done.returncode == 0, done.stderr
        assert f'mode = "{name}"' in done.stdout

        # Installed as a machine policy: a copy with the owner and mode an admin would give it.
        installed = write(tmp_path / "etc" / "policy.toml", path.read_text(encoding="utf-8"))
        done = run_admin(machine, "policy", "check", "--machine", str(installed))
        assert done.returncode == 0, done.stderr
        assert "valid as a machine policy" in done.stdout


def test_policy_without_action_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`ledgerctl policy` alone is wrong usage (64) and says which actions exist."""
    assert main(["policy"]) == 64
    err = capsys.readouterr().err
    assert "policy show" in err and "policy check" in err
