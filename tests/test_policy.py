"""The policy loader: precedence, the machine floor, validation, trust and fixed locations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pytest

import ledger
from ledger import _policy_load
from ledger._policy_load import Location, load, policy_problems
from ledger.errors import PolicyError
from ledger.policy import load_policy

from conftest import REPO

if TYPE_CHECKING:
    from fake_winapi import FakeWinApi

POSIX = pytest.mark.skipif(os.name == "nt", reason="POSIX owners and modes")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
POLICIES = REPO / "policies"


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the machine policy at a folder of the test, trusted as if owned by root."""
    folder = tmp_path / "machine" / "ledger"
    folder.mkdir(parents=True, mode=0o755)
    path = folder / "policy.toml"
    monkeypatch.setattr(_policy_load, "MACHINE_POLICY_PATH", str(path))
    if hasattr(os, "geteuid"):
        monkeypatch.setattr(_policy_load, "MACHINE_OWNER_UIDS", (0, os.geteuid()))
    return path


@pytest.fixture
def user() -> Path:
    """The user's policy path in the isolated config folder (its folder created 0700)."""
    path = Path(_policy_load.user_policy_path())
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    return path


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    """Write a policy file with an exact mode."""
    path.write_bytes(text.encode("utf-8"))
    os.chmod(path, mode)
    return path


def load_error(explicit: Optional[str] = None) -> PolicyError:
    """Load the effective policy and return the PolicyError it must raise."""
    with pytest.raises(PolicyError) as caught:
        load_policy(explicit)
    assert caught.value.exit_code == 78
    return caught.value


class TestPrecedence:
    def test_no_file_gives_the_secure_default(self, machine: Path) -> None:
        """With no policy file anywhere the mode is secure and every value comes from the default."""
        policy = load_policy()
        assert policy.mode == "secure"
        assert policy.lock_timeout == 10.0
        assert policy.sources == ()
        assert set(policy.origins.values()) == {"default"}
        assert policy.requested_mode is None and not policy.raised

    def test_keys_merge_strongest_first(self, machine: Path, user: Path, tmp_path: Path) -> None:
        """Each key comes from the strongest file that sets it: machine, explicit, then user."""
        write(machine, "lock_timeout = 3\n")
        explicit = write(tmp_path / "explicit.toml",
                         'mode = "strict"\nlock_timeout = 5\nescalation_cap = 50\n')
        write(user, 'mode = "legacy"\nescalation_cap = 10\naudit_stderr = true\n')
        policy = load_policy(str(explicit))
        assert (policy.mode, policy.lock_timeout, policy.escalation_cap, policy.audit_stderr) == (
            "strict", 3.0, 50, True)
        assert policy.sources == (str(machine), str(explicit), str(user))
        assert policy.origins["lock_timeout"] == str(machine)
        assert policy.origins["mode"] == str(explicit)
        assert policy.origins["escalation_cap"] == str(explicit)
        assert policy.origins["audit_stderr"] == str(user)
        assert policy.origins["audit_log"] == "default"

    def test_variable_names_the_explicit_file(
        self, machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """LEDGER_POLICY names the explicit file when no --policy is given."""
        explicit = write(tmp_path / "env.toml", 'mode = "strict"\n')
        monkeypatch.setenv("LEDGER_POLICY", str(explicit))
        policy = load_policy()
        assert policy.mode == "strict" and policy.sources == (str(explicit),)

    def test_flag_wins_over_variable(
        self, machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--policy replaces LEDGER_POLICY: the variable's (broken) file is not even read."""
        broken = write(tmp_path / "broken.toml", "mode = \n")
        flag = write(tmp_path / "flag.toml", 'mode = "legacy"\n')
        monkeypatch.setenv("LEDGER_POLICY", str(broken))
        assert load_policy(str(flag)).mode == "legacy"

    def test_same_file_named_twice_counts_once(self, machine: Path, user: Path) -> None:
        """The user's own policy named with --policy is read once, at its stronger place."""
        write(user, 'mode = "strict"\n')
        policy = load_policy(str(user))
        assert policy.sources == (str(user),)

    def test_paths_expand_the_home_folder(self, machine: Path, user: Path) -> None:
        """~ in escalation_dir and audit_log becomes the user's home folder."""
        write(user, 'escalation_dir = "~/esc"\naudit_log = "~/logs/a.jsonl"\n')
        policy = load_policy()
        home = os.path.expanduser("~")
        assert policy.escalation_dir == os.path.join(home, "esc")
        assert policy.audit_log == os.path.join(home, "logs", "a.jsonl")


class TestFloor:
    def test_user_legacy_is_raised_to_the_machine_floor(self, machine: Path, user: Path) -> None:
        """A user policy asking for legacy under a secure floor runs secure and records it."""
        write(machine, 'minimum_mode = "secure"\n')
        write(user, 'mode = "legacy"\n')
        policy = load_policy()
        assert policy.mode == "secure"
        assert policy.requested_mode == "legacy" and policy.raised
        assert policy.origins["mode"] == str(machine)
        assert policy.origins["requested_mode"] == str(user)

    def test_stronger_choice_is_kept(self, machine: Path, user: Path) -> None:
        """A mode at or above the floor is left as chosen, with nothing recorded as raised."""
        write(machine, 'minimum_mode = "secure"\n')
        write(user, 'mode = "strict"\n')
        policy = load_policy()
        assert policy.mode == "strict" and policy.requested_mode is None

    def test_default_is_raised_to_a_strict_floor(self, machine: Path) -> None:
        """With a strict floor and no mode chosen, the default secure is raised to strict."""
        write(machine, 'minimum_mode = "strict"\n')
        policy = load_policy()
        assert (policy.mode, policy.requested_mode, policy.minimum_mode) == (
            "strict", "secure", "strict")

    def test_machine_mode_and_floor_over_a_user_legacy_record_the_request(
        self, machine: Path, user: Path
    ) -> None:
        """Machine mode and floor strict, user legacy: strict, and the user's ask is recorded."""
        write(machine, 'mode = "strict"\nminimum_mode = "strict"\n')
        write(user, 'mode = "legacy"\n')
        policy = load_policy()
        assert (policy.mode, policy.requested_mode, policy.raised) == ("strict", "legacy", True)
        assert policy.origins["mode"] == str(machine)
        assert policy.origins["requested_mode"] == str(user)

    def test_machine_mode_without_a_floor_also_records_the_request(
        self, machine: Path, user: Path
    ) -> None:
        """A machine mode stronger than the user's wins, and the user's choice is recorded."""
        write(machine, 'mode = "secure"\n')
        write(user, 'mode = "legacy"\n')
        policy = load_policy()
        assert (policy.mode, policy.requested_mode, policy.raised) == ("secure", "legacy", True)
        assert policy.origins["requested_mode"] == str(user)

    def test_machine_mode_wins_over_a_stricter_user_choice(
        self, machine: Path, user: Path
    ) -> None:
        """A machine mode wins even over a stricter user mode; nothing is recorded as raised."""
        write(machine, 'mode = "secure"\n')
        write(user, 'mode = "strict"\n')
        policy = load_policy()
        assert (policy.mode, policy.requested_mode, policy.raised) == ("secure", None, False)
        assert policy.origins["mode"] == str(machine)

    def test_floor_without_machine_mode_lets_a_user_go_stricter(
        self, machine: Path, user: Path
    ) -> None:
        """With minimum_mode alone in the machine policy, a user may choose a stricter mode."""
        write(machine, 'minimum_mode = "secure"\n')
        write(user, 'mode = "strict"\n')
        policy = load_policy()
        assert (policy.mode, policy.requested_mode) == ("strict", None)
        assert policy.origins["mode"] == str(user)

    def test_the_request_is_the_strongest_weaker_files(
        self, machine: Path, user: Path, tmp_path: Path
    ) -> None:
        """The recorded request is what the explicit file asked, since it wins over the user's."""
        write(machine, 'mode = "strict"\n')
        explicit = write(tmp_path / "explicit.toml", 'mode = "secure"\n')
        write(user, 'mode = "legacy"\n')
        policy = load_policy(str(explicit))
        assert (policy.mode, policy.requested_mode) == ("strict", "secure")
        assert policy.origins["requested_mode"] == str(explicit)

    def test_no_request_when_the_weaker_files_asked_for_enough(
        self, machine: Path, user: Path, tmp_path: Path
    ) -> None:
        """Explicit strict, user legacy, machine secure: the files asked for more; no raise."""
        write(machine, 'mode = "secure"\n')
        explicit = write(tmp_path / "explicit.toml", 'mode = "strict"\n')
        write(user, 'mode = "legacy"\n')
        policy = load_policy(str(explicit))
        assert (policy.mode, policy.requested_mode, policy.raised) == ("secure", None, False)
        assert "requested_mode" not in policy.origins

    @pytest.mark.parametrize("where", ["user", "explicit"])
    def test_floor_outside_the_machine_policy_is_an_error(
        self, machine: Path, user: Path, tmp_path: Path, where: str
    ) -> None:
        """minimum_mode anywhere but the machine policy stops with 78, naming file and key."""
        path = user if where == "user" else tmp_path / "explicit.toml"
        write(path, 'minimum_mode = "legacy"\n')
        error = load_error(str(path) if where == "explicit" else None)
        assert str(path) in error.message and "minimum_mode" in error.message

    def test_machine_mode_below_its_own_floor_is_an_error(self, machine: Path) -> None:
        """A machine policy whose mode is weaker than its own floor is refused as inconsistent."""
        write(machine, 'mode = "legacy"\nminimum_mode = "secure"\n')
        error = load_error()
        assert str(machine) in error.message and "minimum_mode" in error.message


class TestApplyMachineFloor:
    """apply_machine_floor(): the floor for a Policy that a program built itself."""

    def test_a_built_policy_below_the_floor_is_raised(self, machine: Path) -> None:
        """Policy(mode="legacy") under a secure floor becomes secure, recording the request."""
        from ledger.policy import Policy

        write(machine, 'minimum_mode = "secure"\n')
        built = Policy(mode="legacy", lock_timeout=2.0, sources=("/app/own.toml",))
        policy = _policy_load.apply_machine_floor(built)
        assert (policy.mode, policy.requested_mode, policy.minimum_mode) == (
            "secure", "legacy", "secure")
        assert policy.raised and policy.lock_timeout == 2.0
        assert policy.sources == (str(machine), "/app/own.toml")
        assert policy.origins["mode"] == str(machine)
        assert policy.origins["requested_mode"] == "caller"
        assert built.mode == "legacy"

    def test_a_policy_at_or_above_the_floor_is_returned_unchanged(self, machine: Path) -> None:
        """At or above the machine's mode, the very same object comes back (never lowered)."""
        from ledger.policy import Policy

        write(machine, 'minimum_mode = "secure"\n')
        for mode in ("secure", "strict"):
            built = Policy(mode=mode)
            assert _policy_load.apply_machine_floor(built) is built
        write(machine, 'mode = "secure"\n')
        built = Policy(mode="strict")
        assert _policy_load.apply_machine_floor(built) is built

    def test_the_machine_mode_binds_a_built_policy_too(self, machine: Path) -> None:
        """A machine ``mode`` without ``minimum_mode`` still raises a weaker built policy."""
        from ledger.policy import Policy

        write(machine, 'mode = "strict"\n')
        policy = _policy_load.apply_machine_floor(Policy(mode="legacy"))
        assert (policy.mode, policy.requested_mode, policy.minimum_mode) == (
            "strict", "legacy", None)
        assert policy.origins["mode"] == str(machine)

    def test_a_loaded_policy_passes_through(self, machine: Path, user: Path) -> None:
        """A policy from load_policy already honours the floor, so it is returned as it is."""
        write(machine, 'minimum_mode = "secure"\n')
        write(user, 'mode = "legacy"\n')
        loaded = load_policy()
        assert _policy_load.apply_machine_floor(loaded) is loaded

    @POSIX
    def test_an_untrusted_machine_policy_is_78(self, machine: Path) -> None:
        """A machine policy that may not be trusted stops the caller too; it is never skipped."""
        from ledger.policy import Policy

        write(machine, 'minimum_mode = "secure"\n', 0o666)
        with pytest.raises(PolicyError) as caught:
            _policy_load.apply_machine_floor(Policy(mode="legacy"))
        assert caught.value.exit_code == 78 and str(machine) in caught.value.message

    def test_no_machine_policy_costs_one_stat(
        self, machine: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a machine policy the function makes one failed stat and opens nothing."""
        from ledger.policy import Policy

        calls: list[str] = []
        built = Policy(mode="legacy")
        with monkeypatch.context() as patch:
            for name in ("stat", "lstat", "open"):
                real = getattr(os, name)

                def spy(*args: object, _real: object = real, _name: str = name,
                        **kwargs: object) -> object:
                    calls.append(_name)
                    return _real(*args, **kwargs)  # type: ignore[operator]

                patch.setattr(os, name, spy)
            assert _policy_load.apply_machine_floor(built) is built
        assert calls == ["lstat"]


INVALID = [
    ("syntax", 'mode = "secure"\nlock_timeout = \n', ["line 2", "TOML syntax error"]),
    ("unknown key", 'mode = "secure"\ncolour = "blue"\n', ["line 2", "'colour'", "the keys are"]),
    ("unknown mode", 'mode = "fast"\n', ["'mode'", '"strict", "secure", "legacy"', '"fast"']),
    ("mode not text", "mode = 3\n", ["'mode'", '"strict"', "not a number"]),
    ("timeout text", 'lock_timeout = "10"\n', ["'lock_timeout'", "more than 0", "not text"]),
    ("timeout zero", "lock_timeout = 0\n", ["'lock_timeout'", "at most 600"]),
    ("timeout negative", "lock_timeout = -1.5\n", ["'lock_timeout'", "-1.5"]),
    ("timeout huge", "lock_timeout = 86400\n", ["'lock_timeout'", "at most 600"]),
    ("timeout nan", "lock_timeout = nan\n", ["'lock_timeout'", "nan"]),
    ("timeout inf", "lock_timeout = inf\n", ["'lock_timeout'", "inf"]),
    ("timeout bool", "lock_timeout = true\n", ["'lock_timeout'", "true/false"]),
    ("cap zero", "escalation_cap = 0\n", ["'escalation_cap'", "from 1 to"]),
    ("cap float", "escalation_cap = 2.5\n", ["'escalation_cap'", "whole number"]),
    ("cap bool", "escalation_cap = false\n", ["'escalation_cap'", "true/false"]),
    ("dir relative", 'escalation_dir = "ledgers"\n', ["'escalation_dir'", "absolute", "~"]),
    ("dir table", "[escalation_dir]\npath = 1\n", ["line 1", "'escalation_dir'", "a table"]),
    ("audit empty", 'audit_log = ""\n', ["'audit_log'", "absolute"]),
    ("audit array", 'audit_log = ["/a"]\n', ["'audit_log'", "an array"]),
    ("audit rc file", 'audit_log = "~/.bashrc"\n', ["'audit_log'", ".jsonl", '"~/.bashrc"']),
    ("audit not jsonl", 'audit_log = "/tmp/audit.json"\n', ["'audit_log'", "name ends in .jsonl"]),
    ("audit folder", 'audit_log = "/tmp/.jsonl/"\n', ["'audit_log'", "name ends in .jsonl"]),
    ("stderr text", 'audit_stderr = "yes"\n', ["'audit_stderr'", "true or false"]),
]


class TestValidation:
    @pytest.mark.parametrize("name,text,words", INVALID, ids=[row[0] for row in INVALID])
    def test_invalid_policy_is_78_naming_file_key_and_allowed_values(
        self, machine: Path, tmp_path: Path, name: str, text: str, words: list[str]
    ) -> None:
        """Every kind of invalid policy stops with 78; the message names the file and the fix."""
        path = write(tmp_path / "bad.toml", text)
        error = load_error(str(path))
        assert str(path) in error.message
        for word in words:
            assert word in error.message, (word, error.message)
        assert error.reason == "invalid_policy"

    def test_audit_log_cannot_aim_a_write_at_another_file(
        self, machine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A policy whose audit_log names a shell rc file stops the write with 78: rc untouched."""
        from ledger.cli import main

        home = Path(os.path.expanduser("~"))
        bashrc = home / ".bashrc"
        bashrc.write_bytes(b"alias ll='ls -l'\n")
        before = bashrc.read_bytes()
        path = write(tmp_path / "team.toml", 'audit_log = "~/.bashrc"\n')
        ledger_file = tmp_path / "book.json"
        assert main(["--policy", str(path), "append", str(ledger_file), "{}"]) == 78
        assert str(path) in capsys.readouterr().err
        assert bashrc.read_bytes() == before
        assert sorted(p.name for p in home.iterdir() if p.name.startswith(".bashrc")) == [
            ".bashrc"]
        assert not ledger_file.exists()

    @pytest.mark.parametrize("nested, problem", [
        ("[\n" * 50000 + "]\n" * 50000, "nested too deeply"),
        ("[" * 50000 + "]" * 50000, "longer than 4096 characters"),
        ("{a = " * 20000 + "1" + "}" * 20000, "longer than 4096 characters"),
    ], ids=["arrays over many lines", "arrays on one line", "inline tables"])
    def test_deep_nesting_is_78_not_a_traceback(
        self, machine: Path, tmp_path: Path, nested: str, problem: str
    ) -> None:
        """A value nested deeper than the parser can follow is refused with 78 naming the file
        (on one line, the line-length bound refuses it before the parser runs)."""
        path = write(tmp_path / "deep.toml", f"mode = {nested}\n")
        error = load_error(str(path))
        assert str(path) in error.message and problem in error.message
        assert error.reason == "invalid_policy"

    def test_every_problem_is_reported_at_once(self) -> None:
        """Several mistakes in one file are all listed, each with its line."""
        values, problems = policy_problems(
            b'mode = "x"\nlock_timeout = -1\ncolour = 1\naudit_stderr = true\n', "user")
        assert [problem.split(":")[0] for problem in problems] == ["line 1", "line 2", "line 3"]
        assert values == {"audit_stderr": True}

    def test_windows_editor_files_are_accepted(self, machine: Path, tmp_path: Path) -> None:
        """A UTF-8 byte-order mark with CRLF line ends, and BOM-marked UTF-16, both load."""
        text = '# saved by Notepad\r\nmode = "strict"\r\nlock_timeout = 2.5\r\n'
        utf8 = tmp_path / "utf8.toml"
        utf8.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
        utf16 = tmp_path / "utf16.toml"
        utf16.write_bytes(text.encode("utf-16"))
        for path in (utf8, utf16):
            os.chmod(path, 0o644)
            policy = load_policy(str(path))
            assert (policy.mode, policy.lock_timeout) == ("strict", 2.5)

    def test_bytes_that_are_not_text_are_an_error(self, machine: Path, tmp_path: Path) -> None:
        """A file that is not UTF-8 is refused with 78, not read as garbage."""
        path = tmp_path / "latin1.toml"
        path.write_bytes('mode = "s\xe9cure"\n'.encode("latin-1"))
        assert "not UTF-8" in load_error(str(path)).message

    def test_a_huge_file_is_refused(self, machine: Path, tmp_path: Path) -> None:
        """A policy file far larger than any policy is refused instead of parsed."""
        path = write(tmp_path / "huge.toml", "# " + "x" * (300 * 1024) + "\n")
        assert "larger than" in load_error(str(path)).message

    def test_empty_file_sets_nothing(self, machine: Path, tmp_path: Path) -> None:
        """An empty policy is valid, is listed as a source and changes no value."""
        path = write(tmp_path / "empty.toml", "")
        policy = load_policy(str(path))
        assert policy.sources == (str(path),) and policy.mode == "secure"

    @pytest.mark.parametrize("name", ["strict", "secure", "legacy"])
    def test_example_policies_load(self, machine: Path, name: str) -> None:
        """Each commented example in policies/ loads as an explicit policy and sets its mode."""
        path = POLICIES / f"{name}.toml"
        text = path.read_text(encoding="utf-8")
        assert text.lstrip().startswith("#"), "the example must open with comments"
        if os.name == "nt":
            values, problems = policy_problems(path.read_bytes(), "explicit")
            assert problems == [] and values["mode"] == name
            return
        assert load(str(path), {}).mode == name

    def test_strict_example_with_its_floor_is_a_valid_machine_policy(self, machine: Path) -> None:
        """Uncommenting minimum_mode in policies/strict.toml gives a valid machine floor."""
        text = (POLICIES / "strict.toml").read_text(encoding="utf-8")
        assert '# minimum_mode = "strict"' in text
        write(machine, text.replace('# minimum_mode = "strict"', 'minimum_mode = "strict"'))
        policy = load_policy()
        assert (policy.mode, policy.minimum_mode) == ("strict", "strict")


class TestMissingFiles:
    def test_missing_explicit_file_is_78(self, machine: Path, tmp_path: Path) -> None:
        """A file named with --policy that does not exist stops with 78."""
        error = load_error(str(tmp_path / "nope.toml"))
        assert "does not exist" in error.message and "--policy" in error.message

    def test_missing_variable_file_is_78(
        self, machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file named by LEDGER_POLICY that does not exist stops with 78, naming the variable."""
        monkeypatch.setenv("LEDGER_POLICY", str(tmp_path / "nope.toml"))
        assert "LEDGER_POLICY" in load_error().message

    def test_policy_path_that_is_a_folder_is_78(self, machine: Path, user: Path) -> None:
        """A folder where the user policy should be is not skipped: 78."""
        user.mkdir()
        assert "not a regular file" in load_error().message


@POSIX
class TestTrust:
    def test_machine_policy_of_another_owner_is_refused(
        self, machine: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A machine policy not owned by root is refused (78), never skipped."""
        write(machine, 'mode = "legacy"\n')
        monkeypatch.setattr(_policy_load, "MACHINE_OWNER_UIDS", (0,))
        if IS_ROOT:
            os.chown(machine, 65534, -1)
        error = load_error()
        assert str(machine) in error.message and "root" in error.message
        assert error.reason == "untrusted_policy"

    def test_machine_policy_group_writable_is_refused(self, machine: Path) -> None:
        """A machine policy its group may write is refused."""
        write(machine, 'mode = "legacy"\n', 0o664)
        assert "chmod go-w" in load_error().message

    def test_machine_folder_writable_by_others_is_refused(self, machine: Path) -> None:
        """A machine policy in a folder others may write (not sticky) is refused."""
        write(machine, 'mode = "legacy"\n')
        os.chmod(machine.parent, 0o777)
        try:
            error = load_error()
        finally:
            os.chmod(machine.parent, 0o755)
        assert str(machine.parent) in error.message

    def test_user_policy_group_writable_is_refused(self, machine: Path, user: Path) -> None:
        """The user's policy must not be writable by its group or others."""
        write(user, 'mode = "legacy"\n', 0o660)
        assert str(user) in load_error().message

    @pytest.mark.skipif(not IS_ROOT, reason="needs root to give a file to another user")
    def test_user_policy_of_another_owner_is_refused(self, machine: Path, user: Path) -> None:
        """A user policy that belongs to someone else is refused."""
        write(user, 'mode = "legacy"\n')
        os.chown(user, 65534, -1)
        assert "uid 65534" in load_error().message

    @pytest.mark.skipif(not IS_ROOT, reason="needs root to give a file to another user")
    def test_explicit_policy_of_another_owner_is_refused(
        self, machine: Path, tmp_path: Path
    ) -> None:
        """An explicit policy must belong to the user or root."""
        path = write(tmp_path / "theirs.toml", 'mode = "legacy"\n')
        os.chown(path, 65534, -1)
        assert "uid 65534" in load_error(str(path)).message

    @pytest.mark.parametrize("mode", [0o664, 0o646, 0o620])
    def test_explicit_policy_writable_by_group_or_others_is_refused(
        self, machine: Path, tmp_path: Path, mode: int
    ) -> None:
        """An explicit file that its group or others may write is refused, like a user policy."""
        path = write(tmp_path / "team.toml", 'mode = "strict"\n', 0o644)
        assert load_policy(str(path)).mode == "strict"
        os.chmod(path, mode)
        error = load_error(str(path))
        assert f"chmod go-w {path}" in error.message and error.reason == "untrusted_policy"

    def test_explicit_policy_in_a_group_writable_folder_is_refused(
        self, machine: Path, tmp_path: Path
    ) -> None:
        """A folder above an explicit policy that its group may write is refused; sticky is not."""
        team = tmp_path / "team"
        team.mkdir()
        path = write(team / "policy.toml", 'mode = "strict"\n')
        os.chmod(team, 0o775)
        error = load_error(str(path))
        assert f"the folder {team}" in error.message and "chmod go-w" in error.message
        os.chmod(team, 0o1775)
        assert load_policy(str(path)).mode == "strict"

    def test_symlinked_policy_is_refused(self, machine: Path, user: Path, tmp_path: Path) -> None:
        """A link where the user policy should be is refused, not followed."""
        target = write(tmp_path / "target.toml", 'mode = "legacy"\n')
        user.symlink_to(target)
        error = load_error()
        assert "symbolic link" in error.message and str(user) in error.message

    def test_fifo_policy_is_refused_without_hanging(self, machine: Path, tmp_path: Path) -> None:
        """A FIFO named as the policy is refused at once (opened non-blocking, then checked)."""
        path = tmp_path / "fifo.toml"
        os.mkfifo(path, 0o600)
        assert "not a regular file" in load_error(str(path)).message

    def test_folder_link_to_a_checked_folder_is_followed(
        self, machine: Path, tmp_path: Path
    ) -> None:
        """A folder link (as dotfile managers make) is followed, and its target is checked."""
        real = tmp_path / "dotfiles"
        real.mkdir(mode=0o700)
        write(real / "policy.toml", 'mode = "strict"\n')
        (tmp_path / "cfg").symlink_to(real)
        assert load_policy(str(tmp_path / "cfg" / "policy.toml")).mode == "strict"

    def test_folder_link_to_an_open_folder_is_refused(
        self, machine: Path, tmp_path: Path
    ) -> None:
        """A folder link leading to a folder everyone may write is refused: the target is checked."""
        shared = tmp_path / "shared"
        shared.mkdir()
        write(shared / "policy.toml", 'mode = "legacy"\n')
        os.chmod(shared, 0o777)
        (tmp_path / "cfg").symlink_to(shared)
        error = load_error(str(tmp_path / "cfg" / "policy.toml"))
        assert str(shared) in error.message

    @pytest.mark.skipif(not IS_ROOT, reason="needs root to give a link to another user")
    def test_folder_link_planted_by_another_user_is_refused(
        self, machine: Path, tmp_path: Path
    ) -> None:
        """A folder link in a sticky shared folder is followed only if it is the user's or root's."""
        real = tmp_path / "rootowned"
        real.mkdir(mode=0o755)
        write(real / "policy.toml", 'mode = "legacy"\n')
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chmod(shared, 0o1777)
        link = shared / "teampol"
        link.symlink_to(real)
        path = link / "policy.toml"
        assert load_policy(str(path)).mode == "legacy"

        os.chown(link, 65534, 65534, follow_symlinks=False)
        error = load_error(str(path))
        assert f"{link} is a symbolic link of uid 65534" in error.message
        assert error.reason == "untrusted_policy"

    @pytest.mark.skipif(IS_ROOT, reason="root reads any file")
    def test_unreadable_policy_is_78(self, machine: Path, user: Path) -> None:
        """A user policy that cannot be read stops with 78 instead of being skipped."""
        write(user, 'mode = "legacy"\n', 0o000)
        assert "Cannot read" in load_error().message


class TestMachineLocation:
    # Variables that could name a system folder; the user's own (HOME, XDG_CONFIG_HOME,
    # APPDATA...) legitimately move the user policy and are tested in-process only.
    SYSTEM = ("XDG_CONFIG_DIRS", "XDG_DATA_DIRS", "ProgramData", "PROGRAMDATA",
              "ALLUSERSPROFILE", "SystemDrive", "PUBLIC")
    HOSTILE = SYSTEM + ("XDG_CONFIG_HOME", "HOME", "APPDATA", "LOCALAPPDATA", "USERPROFILE")

    def test_fixed_path_ignores_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Computing the machine path under hostile variables gives the OS's fixed path."""
        for name in self.HOSTILE:
            monkeypatch.setenv(name, str(tmp_path / "evil"))
        expected = {"linux": "/etc/ledger/policy.toml",
                    "darwin": "/Library/Application Support/ledger/policy.toml"}
        fixed = _policy_load._fixed_machine_path()
        if sys.platform == "win32":
            assert fixed is None
            assert not _policy_load._program_data().startswith(str(tmp_path))
        else:
            assert fixed == expected.get(sys.platform, "/etc/ledger/policy.toml")

    def test_program_data_falls_back_to_the_literal_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the Windows seam the machine folder is C:\\ProgramData, never %ProgramData%."""
        monkeypatch.setenv("ProgramData", str(tmp_path / "evil"))
        monkeypatch.setenv("PROGRAMDATA", str(tmp_path / "evil"))
        fake = types.ModuleType("ledger._winapi")
        monkeypatch.setitem(sys.modules, "ledger._winapi", fake)
        monkeypatch.setattr(ledger, "_winapi", fake, raising=False)
        assert _policy_load._program_data() == "C:\\ProgramData"
        monkeypatch.setattr(_policy_load, "MACHINE_POLICY_PATH", None)
        path = _policy_load.machine_policy_path()
        assert path.startswith("C:\\ProgramData") and path.endswith("policy.toml")
        assert _policy_load.MACHINE_POLICY_PATH == path

    def test_program_data_comes_from_the_seam(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """On Windows the known folder is asked of the seam's program_data_folder()."""
        fake = types.ModuleType("ledger._winapi")
        setattr(fake, "program_data_folder", lambda: "D:\\Data")
        monkeypatch.setitem(sys.modules, "ledger._winapi", fake)
        monkeypatch.setattr(ledger, "_winapi", fake, raising=False)
        assert _policy_load._program_data() == "D:\\Data"

    def test_environment_cannot_move_the_machine_policy(self, tmp_path: Path) -> None:
        """A fresh process with hostile variables looks at the fixed path and ignores planted files."""
        evil = tmp_path / "evil"
        for sub in ("ledger", "xdg/ledger"):
            (evil / sub).mkdir(parents=True)
            write(evil / sub / "policy.toml", 'mode = "legacy"\n')
        env = dict(os.environ)
        env.update({name: str(evil) for name in self.SYSTEM})
        env["XDG_CONFIG_DIRS"] = str(evil / "xdg")
        code = ("import json, sys; from ledger import _policy_load as p; "
                "print(json.dumps([p.machine_policy_path(), p.MACHINE_POLICY_PATH]))")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout
        machine_path, attribute = json.loads(out)
        assert machine_path == attribute
        assert not machine_path.startswith(str(tmp_path))
        if sys.platform.startswith("linux"):
            assert machine_path == "/etc/ledger/policy.toml"

        shown = subprocess.run([sys.executable, "-m", "ledger", "policy", "show", "--json"],
                               env=env, capture_output=True, text=True)
        if shown.returncode == 0:
            info = json.loads(shown.stdout)
            assert (info["files"][0]["kind"], info["files"][0]["path"]) == (
                "machine", machine_path)
            assert not any(source.startswith(str(tmp_path)) for source in info["sources"])
        else:
            # A real machine policy on this host may refuse; it must still be the fixed one.
            assert machine_path in shown.stderr


@pytest.mark.skipif(os.name == "nt", reason="the fake stands in for Windows on POSIX hosts")
class TestWindowsFiles:
    """Windows trust rules, run against the fake of the Win32 seam over real files."""

    @pytest.fixture
    def fake(self) -> "FakeWinApi":
        from fake_winapi import FakeWinApi

        return FakeWinApi()

    @staticmethod
    def only(fake: "FakeWinApi", path: Path, *grants: tuple[str, int]) -> None:
        """Give ``path`` exactly these DACL entries."""
        fake.set_null_dacl(str(path))
        for sid, mask in grants:
            fake.grant(str(path), sid, mask)

    def read(self, fake: "FakeWinApi", kind: str, path: Path) -> Optional[bytes]:
        data = _policy_load._read_windows(Location(kind, str(path)), fake)
        assert fake.open_handles() == [], "a handle was left open"
        return data

    def refused(self, fake: "FakeWinApi", kind: str, path: Path) -> str:
        with pytest.raises(PolicyError) as caught:
            self.read(fake, kind, path)
        assert caught.value.exit_code == 78 and str(path) in caught.value.message
        return caught.value.message

    def admin_file(self, fake: "FakeWinApi", path: Path) -> Path:
        """A machine policy as an elevated admin leaves it: Administrators own it, Users read."""
        from ledger import _winapi as w

        write(path, 'mode = "strict"\n')
        fake.set_owner(str(path), w.SID_ADMINISTRATORS)
        self.only(fake, path, (w.SID_SYSTEM, 0x1F01FF), (w.SID_ADMINISTRATORS, 0x1F01FF),
                  (w.SID_USERS, 0x1200A9))
        return path

    def test_machine_policy_of_administrators_is_read(
        self, fake: "FakeWinApi", tmp_path: Path
    ) -> None:
        """A machine policy owned by Administrators that only admins may write is read."""
        path = self.admin_file(fake, tmp_path / "policy.toml")
        assert self.read(fake, "machine", path) == b'mode = "strict"\n'

    def test_machine_policy_planted_by_a_user_is_refused(
        self, fake: "FakeWinApi", tmp_path: Path
    ) -> None:
        """A machine policy owned by an ordinary user (as one planted in ProgramData) is refused."""
        path = write(tmp_path / "policy.toml", 'mode = "legacy"\n')
        assert "must belong to Administrators" in self.refused(fake, "machine", path)

    def test_machine_policy_users_may_write_is_refused(
        self, fake: "FakeWinApi", tmp_path: Path
    ) -> None:
        """Write rights for Users on the machine policy make it untrusted, naming the account."""
        from ledger import _winapi as w

        path = self.admin_file(fake, tmp_path / "policy.toml")
        fake.grant(str(path), w.SID_USERS, w.FILE_WRITE_DATA)
        assert w.SID_USERS in self.refused(fake, "machine", path)

    def test_machine_policy_without_owners_is_refused(
        self, fake: "FakeWinApi", tmp_path: Path
    ) -> None:
        """Where owners cannot be known (no security calls, or FAT), a machine policy is refused."""
        path = self.admin_file(fake, tmp_path / "policy.toml")
        fake.features.discard("security")
        assert "cannot be checked" in self.refused(fake, "machine", path)
        assert self.read(fake, "user", path) is not None
        fake.features.add("security")
        fake.forget_acls(str(path))
        assert "records no owners" in self.refused(fake, "machine", path)
        assert self.read(fake, "user", path) is not None

    def test_user_policy_rules(self, fake: "FakeWinApi", tmp_path: Path) -> None:
        """A user policy must be the user's (or Administrators' when the user is an admin)."""
        from fake_winapi import OTHER_SID
        from ledger import _winapi as w

        path = write(tmp_path / "policy.toml", 'mode = "legacy"\n')
        assert self.read(fake, "user", path) == b'mode = "legacy"\n'
        fake.set_owner(str(path), OTHER_SID)
        assert "must belong to you" in self.refused(fake, "user", path)
        assert "must belong to you or Administrators" in self.refused(fake, "explicit", path)
        fake.set_owner(str(path), w.SID_ADMINISTRATORS)
        assert "must belong to you" in self.refused(fake, "user", path)
        assert self.read(fake, "explicit", path) is not None
        fake.admin_member = True
        assert self.read(fake, "user", path) is not None

    def test_user_policy_others_may_write_is_refused(
        self, fake: "FakeWinApi", tmp_path: Path
    ) -> None:
        """Write rights for Everyone on the user policy make it untrusted."""
        from ledger import _winapi as w

        path = write(tmp_path / "policy.toml", 'mode = "legacy"\n')
        fake.grant(str(path), w.SID_EVERYONE, w.GENERIC_WRITE)
        assert w.SID_EVERYONE in self.refused(fake, "user", path)

    def test_link_at_the_file_is_refused(self, fake: "FakeWinApi", tmp_path: Path) -> None:
        """A symbolic link where the policy should be is refused, not followed."""
        target = write(tmp_path / "target.toml", 'mode = "legacy"\n')
        link = tmp_path / "policy.toml"
        fake.make_symlink(str(link), str(target))
        assert "a link or junction" in self.refused(fake, "user", link)

    def test_a_second_hard_link_is_refused(self, fake: "FakeWinApi", tmp_path: Path) -> None:
        """As on POSIX, a policy file with another hard link may be another user's file."""
        path = write(tmp_path / "policy.toml", 'mode = "legacy"\n')
        os.link(path, tmp_path / "elsewhere.toml")
        assert "2 hard links" in self.refused(fake, "user", path)

    def test_junction_on_the_way_is_refused(self, fake: "FakeWinApi", tmp_path: Path) -> None:
        """A junction among the folders above the policy is caught by the final path."""
        real = tmp_path / "real"
        real.mkdir()
        write(real / "policy.toml", 'mode = "legacy"\n')
        fake.make_junction(str(tmp_path / "ledger"), str(real))
        message = self.refused(fake, "user", tmp_path / "ledger" / "policy.toml")
        assert f"the folder {tmp_path / 'ledger'} is a link or junction" in message

    def test_paths_that_do_not_line_up_are_refused(
        self, fake: "FakeWinApi", tmp_path: Path
    ) -> None:
        """A folder or file whose final path is not where the walk expects it is refused."""
        folder = tmp_path / "a" / "cfg"
        folder.mkdir(parents=True)
        path = write(folder / "policy.toml", 'mode = "legacy"\n')
        fake.final_override[str(tmp_path / "a")] = str(tmp_path / "elsewhere")
        assert f"the folder {folder} leads to" in self.refused(fake, "user", path)
        del fake.final_override[str(tmp_path / "a")]
        fake.final_override[str(path)] = str(tmp_path / "elsewhere" / "policy.toml")
        assert "now leads to" in self.refused(fake, "user", path)

    def test_placeholder_and_folder_are_refused(
        self, fake: "FakeWinApi", tmp_path: Path
    ) -> None:
        """A cloud placeholder or a folder at the policy's name is refused with 78."""
        path = write(tmp_path / "policy.toml", 'mode = "legacy"\n')
        fake.set_tag(str(path), 0x9000001A)
        assert "placeholder" in self.refused(fake, "user", path)
        folder = tmp_path / "other.toml"
        folder.mkdir()
        assert "not a regular file" in self.refused(fake, "user", folder)

    def test_missing_file_is_none(self, fake: "FakeWinApi", tmp_path: Path) -> None:
        """No file (or no folder) at the place reads as no policy."""
        assert self.read(fake, "user", tmp_path / "none.toml") is None
        assert self.read(fake, "machine", tmp_path / "no" / "policy.toml") is None


@pytest.mark.skipif(os.name != "nt", reason="the real Win32 calls")
def test_real_windows_reads_a_plain_policy_and_refuses_a_junction(tmp_path: Path) -> None:
    """On real Windows an explicit policy loads, and one reached through a junction is 78."""
    import _winapi as nt  # the standard library's, for CreateJunction

    path = write(tmp_path / "plain.toml", 'mode = "strict"\n')
    assert load(str(path), {}).mode == "strict"
    real = tmp_path / "real"
    real.mkdir()
    write(real / "policy.toml", 'mode = "legacy"\n')
    nt.CreateJunction(str(real), str(tmp_path / "junction"))
    with pytest.raises(PolicyError) as caught:
        load(str(tmp_path / "junction" / "policy.toml"), {})
    assert "link or junction" in caught.value.message


class TestHotPath:
    PROBE = (
        "import sys; from ledger import _policy_load as p; p.MACHINE_POLICY_PATH = sys.argv[1]; "
        "from ledger.policy import load_policy; policy = load_policy(); "
        "print(policy.mode, sorted(m for m in ('tomllib', 'tomli', 'structlog') "
        "if m in sys.modules))"
    )

    def test_no_policy_file_means_no_toml_parser(self, tmp_path: Path) -> None:
        """Without any policy file, loading imports neither the TOML parser nor structlog."""
        done = subprocess.run([sys.executable, "-c", self.PROBE, str(tmp_path / "none.toml")],
                              capture_output=True, text=True, check=True)
        assert done.stdout.split(" ", 1) == ["secure", "[]\n"]

    def test_a_policy_file_brings_the_parser(self, tmp_path: Path) -> None:
        """Control: once a user policy exists, the parser is imported (so the probe can fail)."""
        path = Path(_policy_load.user_policy_path())
        path.parent.mkdir(parents=True, mode=0o700)
        write(path, 'mode = "strict"\n', 0o600)
        done = subprocess.run([sys.executable, "-c", self.PROBE, str(tmp_path / "none.toml")],
                              capture_output=True, text=True, check=True)
        parser = "tomllib" if sys.version_info >= (3, 11) else "tomli"
        assert done.stdout == f"strict ['{parser}']\n"


def test_a_ledger_built_with_its_own_policy_obeys_the_machine_floor(
    machine: Path, tmp_path: Path
) -> None:
    """``Ledger(path, policy=Policy(mode="legacy"))`` under a secure floor writes with the lock."""
    from ledger import Ledger
    from ledger.policy import Policy

    write(machine, 'minimum_mode = "secure"\n')
    folder = tmp_path / "book"
    folder.mkdir(mode=0o700)
    book = Ledger(folder / "book.json", policy=Policy(mode="legacy"))
    assert (book.policy.mode, book.policy.requested_mode) == ("secure", "legacy")
    result = book.append({"n": 1})
    assert result.mode == "secure"
    assert result.protections["lock"] in ("fcntl.flock", "msvcrt.locking")
