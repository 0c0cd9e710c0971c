"""The Python API a hook author uses: open, append, read, find the newest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ledger
from ledger import errors
from ledger.escalation import make_entry, open_ledger, signal_hash


def test_append_read_and_find_the_newest(ledger_dir: Path) -> None:
    """Records come back oldest first; ``latest`` finds the newest match."""
    book = ledger.Ledger(ledger_dir / "book.json")
    assert book.records() == []
    for i in range(3):
        result = book.append({"kind": "a" if i < 2 else "b", "i": i})
    assert [r["i"] for r in book.records()] == [0, 1, 2]
    assert book.latest(lambda r: r["kind"] == "a") == {"kind": "a", "i": 1}
    assert book.latest(lambda r: r["kind"] == "z") is None
    assert result.records == book.records()
    assert result.mode == "secure" and result.missing == []
    assert result.protections["lock"] == ("msvcrt.locking" if os.name == "nt" else "fcntl.flock")


def test_update_sees_the_records_under_the_lock(ledger_dir: Path) -> None:
    """``update`` replaces the records with what the callback returns."""
    book = ledger.Ledger(ledger_dir / "book.json")
    book.append({"n": 1})
    book.update(lambda records: [dict(r, n=r["n"] + 1) for r in records])
    assert book.records() == [{"n": 2}]


def test_cap_keeps_the_newest(ledger_dir: Path) -> None:
    """With a cap, only the newest records are kept, and the result says how many went."""
    book = ledger.Ledger(ledger_dir / "book.json", cap=3)
    results = [book.append({"i": i}) for i in range(5)]
    assert [r["i"] for r in book.records()] == [2, 3, 4]
    assert [r.pruned for r in results] == [0, 0, 0, 1, 1]


def test_escalation_ledger_through_the_api(ledger_dir: Path, monkeypatch) -> None:
    """The escalation ledger opens at PF_ESCALATION_LEDGER_DIR with its validator and cap."""
    monkeypatch.setenv("PF_ESCALATION_LEDGER_DIR", str(ledger_dir))
    book = open_ledger()
    assert book.path == str(ledger_dir / "escalation-history.json")
    assert book.cap == 200
    sig = signal_hash(["PII", "payments"], stage="preflight")
    book.append(make_entry(sig, "standard", "pro", "declined", "r1"))
    assert book.latest(lambda r: r["signal_hash"] == sig)["run_id"] == "r1"
    with pytest.raises(errors.UsageError):
        book.append({"signal_hash": sig})


@pytest.mark.parametrize(
    "cls, builtin, code",
    [
        (errors.UsageError, ValueError, 64),
        (errors.CorruptLedgerError, ValueError, 65),
        (errors.ProtectionUnavailableError, RuntimeError, 69),
        (errors.LedgerIOError, OSError, 74),
        (errors.LockTimeoutError, TimeoutError, 75),
        (errors.UnsafePathError, PermissionError, 77),
        (errors.PolicyError, ValueError, 78),
    ],
)
def test_each_error_has_one_root_a_builtin_and_an_exit_code(cls, builtin, code) -> None:
    """Every error derives from LedgerError and a matching built-in, with its exit code."""
    exc = cls("message naming the file", path="/some/file")
    assert isinstance(exc, errors.LedgerError) and isinstance(exc, builtin)
    assert exc.exit_code == code
    assert str(exc) == "message naming the file" and exc.path == "/some/file"


def test_corrupt_ledger_raises_and_is_not_touched(ledger_dir: Path) -> None:
    """Reading or appending to an invalid ledger raises CorruptLedgerError; bytes unchanged."""
    path = ledger_dir / "book.json"
    path.write_bytes(b"[{")
    path.chmod(0o600)
    book = ledger.Ledger(path)
    with pytest.raises(errors.CorruptLedgerError) as info:
        book.append({"k": 1})
    assert info.value.path == str(path)
    with pytest.raises(errors.CorruptLedgerError):
        book.records()
    assert path.read_bytes() == b"[{"


def test_import_is_cheap_and_does_not_load_structlog() -> None:
    """``import ledger`` and a read do not import structlog (only writes log)."""
    code = (
        "import sys, ledger, ledger.escalation; "
        "print(json.dumps(sorted(m for m in ('structlog', 'tomllib', 'tomli') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True,
                          text=True, check=True)
    assert json.loads(done.stdout) == []


def test_python_dash_m_and_console_script_agree(ledger_dir: Path) -> None:
    """``python -m ledger`` is the same program as ``ledgerctl``."""
    script = Path(sys.executable).with_name("ledgerctl")
    if not script.exists():
        pytest.skip("the ledgerctl script is not installed next to this interpreter")
    one = subprocess.run([sys.executable, "-m", "ledger", "hash", "a,b"], capture_output=True,
                         text=True)
    two = subprocess.run([str(script), "hash", "a,b"], capture_output=True, text=True)
    assert (one.returncode, one.stdout) == (two.returncode, two.stdout) == (0, one.stdout)
    assert len(one.stdout.strip()) == 64


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1, 2}, b"bytes"])
def test_a_record_that_is_not_strict_json_is_refused_before_writing(ledger_dir: Path,
                                                                    value: object) -> None:
    """NaN, infinity and non-JSON values are refused (so the ledger never becomes unreadable)."""
    book = ledger.Ledger(ledger_dir / "book.json")
    book.append({"ok": 1})
    before = (ledger_dir / "book.json").read_bytes()
    with pytest.raises(errors.UsageError):
        book.append({"bad": value})
    assert (ledger_dir / "book.json").read_bytes() == before
    assert book.records() == [{"ok": 1}]


def test_broken_pipe_on_output_is_quiet(ledger_dir: Path) -> None:
    """A reader that goes away early (``| head``) gets no error message from ledgerctl."""
    book = ledger.Ledger(ledger_dir / "book.json", cap=10000)
    book.update(lambda records: [{"i": i, "pad": "x" * 200} for i in range(3000)])
    reader = subprocess.Popen([sys.executable, "-m", "ledger", "show", str(ledger_dir / "book.json")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None
    reader.stdout.readline()
    reader.stdout.close()
    err = reader.stderr.read() if reader.stderr else b""
    assert reader.wait(timeout=60) == 0
    assert err == b""
