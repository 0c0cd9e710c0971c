"""Inputs found by attacking the product: each once ended in a broken ledger or a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ledger
from conftest import LEDGERCTL, run_cli
from ledger import errors

posix_only = pytest.mark.skipif(os.name == "nt", reason="uses POSIX devices and modes")


def _ledger_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_a_number_too_large_for_a_float_is_refused_not_rewritten_as_infinity(
    ledger_dir: Path,
) -> None:
    """1e400 parses to infinity, which JSON cannot hold: 65, and the file is left as it was."""
    path = _ledger_file(ledger_dir, "l.json", b'[{"t": 1e400}]')
    for args in (["show", str(path)], ["append", str(path), '{"b": 2}']):
        done = run_cli(*args)
        assert done.returncode == 65, done.stderr
        assert "1e400" in done.stderr
    assert path.read_bytes() == b'[{"t": 1e400}]'


def test_update_that_returns_something_unstorable_writes_nothing(ledger_dir: Path) -> None:
    """``update`` results that are not a list of finite JSON objects are refused unwritten."""
    book = ledger.Ledger(ledger_dir / "book.json")
    book.append({"n": 1})
    before = (ledger_dir / "book.json").read_bytes()
    for bad in (None, [1, 2], "abc", [{"x": float("nan")}], [{"x": float("inf")}]):
        with pytest.raises(errors.UsageError):
            book.update(lambda records, bad=bad: bad)
    assert (ledger_dir / "book.json").read_bytes() == before


def test_a_write_that_would_pass_the_size_limit_is_refused(ledger_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The product never writes a ledger larger than it agrees to read back (74, unchanged)."""
    import ledger.store

    monkeypatch.setattr(ledger.store, "MAX_LEDGER_BYTES", 2000)
    book = ledger.Ledger(ledger_dir / "book.json")
    book.append({"pad": "x" * 1000})
    before = (ledger_dir / "book.json").read_bytes()
    with pytest.raises(errors.LedgerIOError) as info:
        book.append({"pad": "y" * 1000})
    assert info.value.reason == "too_large"
    assert (ledger_dir / "book.json").read_bytes() == before


def test_files_that_only_look_like_temp_files_are_kept(ledger_dir: Path) -> None:
    """Stale-temp cleanup removes only the product's own temp names, not a user's files."""
    keep = {".notes.backup.tmp": b"mine", ".notes.json.draft.tmp": b"draft",
            ".notes.12.tmp": b"x", ".notes.12.ABCDEF012345.tmp": b"upper"}
    for name, data in keep.items():
        _ledger_file(ledger_dir, name, data)
    other = ledger.Ledger(ledger_dir / ".log.old.tmp")
    other.append({"other": 1})
    stale = _ledger_file(ledger_dir, ".notes.4242.0123456789ab.tmp", b"stale")

    ledger.Ledger(ledger_dir / "notes").append({"n": 1})
    ledger.Ledger(ledger_dir / "log").append({"n": 1})

    for name, data in keep.items():
        assert (ledger_dir / name).read_bytes() == data
    assert other.records() == [{"other": 1}]
    assert not stale.exists()


WRITER = textwrap.dedent(
    """
    import sys
    from ledger import Ledger
    book = Ledger(sys.argv[1], cap=100000)
    for i in range(int(sys.argv[2])):
        book.append({"i": i, "pad": "x" * 20000})
    """
)


@pytest.mark.slow
def test_ledgers_whose_names_overlap_do_not_remove_each_others_temp_files(
    ledger_dir: Path,
) -> None:
    """Writers of ``h`` and ``h.json`` in one folder at once: every write of both succeeds."""
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(ledger_dir / name), "15"],
                              stderr=subprocess.PIPE, text=True)
             for name in ("h", "h.json", "h", "h.json")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for name in ("h", "h.json"):
        assert len(json.loads((ledger_dir / name).read_text())) == 30


@pytest.mark.parametrize("name", ["book.json.lock", "x.lock", ".book.json.77.0123456789ab.tmp"])
def test_names_of_lock_and_temp_files_cannot_be_ledgers(ledger_dir: Path, name: str) -> None:
    """A ledger named like another ledger's lock or temp file is a usage error (64)."""
    done = run_cli("append", str(ledger_dir / name), "{}")
    assert done.returncode == 64, done.stderr
    assert not (ledger_dir / name).exists()


def test_a_folder_path_is_not_a_ledger(ledger_dir: Path) -> None:
    """``append dir/`` is a usage error, not a file named ``dir`` next to it."""
    done = run_cli("append", str(ledger_dir / "sub") + "/", "{}")
    assert done.returncode == 64, done.stderr
    assert not (ledger_dir / "sub").exists()


@posix_only
def test_hash_of_text_that_is_not_utf8_is_a_usage_error() -> None:
    """Bytes that are not UTF-8 in the arguments: 64 with one sentence, no traceback."""
    for args in ([b"hash", b"a\xffb"], [b"hash", b"--stage=\xff", b"a"]):
        done = subprocess.run([os.fsencode(part) for part in LEDGERCTL] + args,
                              capture_output=True)
        assert done.returncode == 64
        assert b"Traceback" not in done.stderr and b"UTF-8" in done.stderr


@posix_only
def test_output_that_cannot_be_written_is_reported_after_the_work_is_done(
    ledger_dir: Path,
) -> None:
    """stdout on a full device: 74 saying the record was written; stdout closed: 0."""
    path = ledger_dir / "book.json"
    with open("/dev/full", "w") as full:
        done = subprocess.run(LEDGERCTL + ["append", str(path), '{"a": 1}'], stdout=full,
                              stderr=subprocess.PIPE, text=True)
    assert done.returncode == 74
    assert "did its work" in done.stderr and "Traceback" not in done.stderr
    closed = subprocess.run(LEDGERCTL + ["append", str(path), '{"a": 2}'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 0, closed.stderr
    assert json.loads(path.read_text()) == [{"a": 1}, {"a": 2}]


def test_errors_keep_their_exit_codes_with_stderr_closed(ledger_dir: Path) -> None:
    """A hook runner that closes stderr still gets 65 for a corrupt ledger (not 1, "none")."""
    path = _ledger_file(ledger_dir, "escalation-history.json", b"[{")
    env = dict(os.environ, PF_ESCALATION_LEDGER_DIR=str(ledger_dir))
    for args in (["lookup", "a"], ["replay_safe", "a"], ["record", "a", "b", "c", "declined", "r"]):
        done = subprocess.run(LEDGERCTL + args, env=env, stdout=subprocess.PIPE,
                              preexec_fn=(lambda: os.close(2)) if os.name != "nt" else None)
        assert done.returncode == 65, args
    assert path.read_bytes() == b"[{"


@posix_only
def test_legacy_write_with_stderr_closed_still_writes(ledger_dir: Path, tmp_path: Path) -> None:
    """The legacy warning has nowhere to go with stderr closed; the write happens anyway."""
    policy = tmp_path / "legacy.toml"
    policy.write_text('mode = "legacy"\n')
    policy.chmod(0o600)
    done = subprocess.run(LEDGERCTL + ["--policy", str(policy), "append",
                                       str(ledger_dir / "book.json"), '{"a": 1}'],
                          stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2))
    assert done.returncode == 0
    assert json.loads((ledger_dir / "book.json").read_text()) == [{"a": 1}]


@pytest.mark.parametrize("name", ["a.LOCK", "a.Lock.", "a.lock ", "A.LoCk.."])
def test_lock_names_in_any_case_cannot_be_ledgers(ledger_dir: Path, name: str) -> None:
    """On case-insensitive filesystems ``a.LOCK`` is ledger ``a``'s lock: refused everywhere."""
    with pytest.raises(errors.UsageError):
        ledger.Ledger(ledger_dir / name)


def test_a_policy_with_a_huge_dotted_key_is_refused_quickly(tmp_path: Path) -> None:
    """A 120 KB dotted key (quadratic for TOML parsers) is refused up front with 78."""
    policy = tmp_path / "deep.toml"
    policy.write_text("a" + ".a" * 60000 + " = 1\n")
    policy.chmod(0o600)
    done = run_cli("--policy", str(policy), "show", str(tmp_path / "x.json"), timeout=20)
    assert done.returncode == 78
    assert "longer than" in done.stderr and str(policy) in done.stderr


@posix_only
def test_a_ledger_name_longer_than_the_filesystem_allows_is_a_usage_error(
    ledger_dir: Path,
) -> None:
    """A 300-byte file name is wrong usage (64), not a disk problem (74)."""
    done = run_cli("append", str(ledger_dir / ("n" * 300)), "{}")
    assert done.returncode == 64, done.stderr
    assert "shorter" in done.stderr


@posix_only
def test_a_policy_file_with_a_second_hard_link_is_refused(tmp_path: Path) -> None:
    """A policy that is a hard link (maybe to another user's file) is refused with 78."""
    policy = tmp_path / "policy.toml"
    policy.write_text('mode = "legacy"\n')
    policy.chmod(0o600)
    os.link(policy, tmp_path / "other.toml")
    done = run_cli("--policy", str(policy), "show", str(tmp_path / "x.json"))
    assert done.returncode == 78
    assert "hard links" in done.stderr


def test_an_empty_or_dot_ledger_name_is_a_usage_error(ledger_dir: Path) -> None:
    """'', '.' and 'x/..' name no ledger file: 64, and no refusal about the current folder."""
    for name in ("", ".", str(ledger_dir / "x" / ".."), ".."):
        done = subprocess.run(LEDGERCTL + ["append", name, "{}"], capture_output=True,
                              text=True, cwd=ledger_dir)
        assert done.returncode == 64, (name, done.stderr)
        assert "file name" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(ledger_dir) == []


@posix_only
def test_a_record_on_stdin_that_cannot_be_read_is_a_usage_error(ledger_dir: Path) -> None:
    """``append FILE -`` with stdin closed, unreadable, not UTF-8, or larger than a ledger
    may be: 64 with one sentence (never a traceback, never reading without bound); nothing
    written. A BOM is accepted, as in a ledger file."""
    path = ledger_dir / "book.json"
    command = LEDGERCTL + ["append", str(path), "-"]
    closed = subprocess.run(command, capture_output=True, text=True,
                            preexec_fn=lambda: os.close(0))
    assert closed.returncode == 64 and "Standard input is closed" in closed.stderr
    bad = subprocess.run(command, capture_output=True, input=b'{"a": "\xff"}')
    assert bad.returncode == 64 and b"not UTF-8" in bad.stderr
    with open(ledger_dir.parent / "write-only", "wb") as write_only:
        unreadable = subprocess.run(command, capture_output=True, text=True, stdin=write_only)
    assert unreadable.returncode == 64 and "cannot be read" in unreadable.stderr
    with open("/dev/zero", "rb") as endless:
        huge = subprocess.run(command, capture_output=True, text=True, stdin=endless,
                              timeout=120)
    assert huge.returncode == 64 and "larger than" in huge.stderr
    for done in (closed, huge):
        assert "Traceback" not in done.stderr
    assert not path.exists()

    bom = subprocess.run(command, capture_output=True, input=b'\xef\xbb\xbf{"a": 1}')
    assert bom.returncode == 0, bom.stderr
    assert json.loads(path.read_text()) == [{"a": 1}]


@posix_only
def test_record_arguments_that_are_not_utf8_are_refused_not_stored_mangled(
        ledger_dir: Path) -> None:
    """Bytes that are not UTF-8 in a record's values: 64, like ``hash``; not stored as a
    lone surrogate escape that other tools cannot read as text."""
    env = dict(os.environ, PF_ESCALATION_LEDGER_DIR=str(ledger_dir))
    args = [b"record", b"sig", b"c", b"r", b"declined", b"run-\xff"]
    done = subprocess.run([os.fsencode(part) for part in LEDGERCTL] + args, env=env,
                          capture_output=True)
    assert done.returncode == 64
    assert b"UTF-8" in done.stderr and b"Traceback" not in done.stderr
    assert not (ledger_dir / "escalation-history.json").exists()


def test_an_empty_policy_name_is_refused_not_ignored(tmp_path: Path, ledger_dir: Path) -> None:
    """``--policy ""`` (a hook's ``--policy "$VAR"`` with VAR unset) is 78, even when
    LEDGER_POLICY names a strict policy; it never runs in a weaker mode. An empty
    LEDGER_POLICY counts as unset."""
    strict = tmp_path / "strict.toml"
    strict.write_text('mode = "strict"\n', encoding="utf-8")
    strict.chmod(0o600)
    path = ledger_dir / "book.json"
    env = {"LEDGER_POLICY": str(strict)}
    for args in (["append", str(path), "{}", "--policy", ""], ["--policy=", "policy", "show"],
                 ["record", "s", "c", "r", "declined", "x", "--policy", ""],
                 ["hash", "--policy", "", "a,b"]):
        done = run_cli(*args, env=env)
        assert done.returncode == 78, (args, done.stderr)
        assert "empty file name" in done.stderr
    missing = run_cli("hash", "--policy", str(tmp_path / "missing.toml"), "a,b")
    assert missing.returncode == 78 and "does not exist" in missing.stderr
    empty_check = run_cli("policy", "check", "")
    assert empty_check.returncode == 78 and "empty name" in empty_check.stderr
    empty_audit = run_cli("audit", "")
    assert empty_audit.returncode == 64 and "empty" in empty_audit.stderr
    for args in (["--policy", str(strict)], ["--traceback"], ["--help", "--policy", ""]):
        bare = run_cli(*args)
        assert bare.returncode in (0, 64) and "Traceback" not in bare.stderr, args
    assert not path.exists()
    unset = run_cli("policy", "show", "--json", env={"LEDGER_POLICY": ""})
    assert unset.returncode == 0, unset.stderr
    assert json.loads(unset.stdout)["mode"] == "secure"
