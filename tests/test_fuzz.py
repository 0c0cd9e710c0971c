"""Hostile input: any bytes in a ledger or policy file give a result or a clean 65/78.

Hypothesis feeds arbitrary bytes and JSON- or TOML-shaped documents to the ledger
reader (``ledger.records.parse``, and ``lookup`` / ``replay_safe`` through the CLI
code) and to the policy loader. Each answer must be a valid result or a clean
``CorruptLedgerError`` (65) / ``PolicyError`` (78): never another exception, never
a traceback, and never a write (the file byte-identical, nothing added next to it).
Very large and deeply nested files are refused within bounded memory, checked on
the peak RSS of a child process.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger.errors import CorruptLedgerError, PolicyError
from ledger.escalation import LEDGER_NAME, validate_entry
from ledger.policy import MODES, Policy, load_policy
from ledger.records import MAX_LEDGER_BYTES, parse

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
SIG = "d" * 64

# Ledger-shaped documents.

any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=12)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), any_text,
    st.floats(allow_nan=False),
    st.integers(min_value=10**300, max_value=10**400),
    st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)), max_leaves=8)
entries = st.fixed_dictionaries(
    {},
    optional={
        "signal_hash": st.one_of(st.sampled_from([SIG, "other"]), values),
        "user_response": st.one_of(st.sampled_from(["declined", "accepted", "forced"]), values),
        "timestamp": st.one_of(st.integers(1_600_000_000, 2_000_000_000), values),
        "run_id": values,
        "current_profile": values,
        "recommended": values,
        "action_taken": values,
    },
).flatmap(lambda entry: st.dictionaries(any_text, values, max_size=2).map(
    lambda extra: {**extra, **entry}))
documents = st.one_of(st.lists(entries, max_size=5), values)


@st.composite
def ledger_bytes(draw: st.DrawFn) -> bytes:
    """A JSON document, encoded one of several ways, sometimes cut or spliced."""
    text = json.dumps(draw(documents), ensure_ascii=draw(st.booleans()),
                      indent=draw(st.sampled_from([None, 2])))
    data = text.encode("utf-8", "surrogatepass")
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    if cut is not None:
        data = data[:cut] + draw(st.binary(max_size=4)) + data[cut:][draw(st.integers(0, 4)):]
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + data


def _reject(name: str) -> Any:
    raise ValueError(name)


def _oracle(data: bytes, validate: Any = None) -> Optional[list[Any]]:
    """An independent reading of the format: the records, or ``None`` if not a valid ledger."""
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject)
    except (ValueError, RecursionError):
        return None
    if b"\0" in data or not isinstance(value, list):
        return None
    if not all(isinstance(r, dict) and not (validate and validate(r, i))
               for i, r in enumerate(value)):
        return None
    return value


def _check_parse(data: bytes, validate: Any = None) -> None:
    expected = _oracle(data, validate)
    try:
        records = parse(data, "/fuzz/ledger.json", validate)
    except CorruptLedgerError as exc:
        assert exc.exit_code == 65 and "/fuzz/ledger.json" in exc.message
        assert expected is None, "a valid ledger was refused"
        return
    assert expected is not None, "an invalid ledger was read"
    assert records == expected


@FUZZ
@given(st.binary(max_size=512))
def test_parse_any_bytes(data: bytes) -> None:
    """Arbitrary bytes: a list of objects, or ``CorruptLedgerError``; nothing else."""
    _check_parse(data)
    _check_parse(data, validate_entry)


@FUZZ
@given(ledger_bytes())
def test_parse_json_shaped_documents(data: bytes) -> None:
    """JSON-shaped documents, whole, cut or spliced: a result or ``CorruptLedgerError``."""
    _check_parse(data)
    _check_parse(data, validate_entry)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def _cli(args: list[str]) -> tuple[int, str, str]:
    """Run ``ledgerctl ARGS`` in this process with a UTF-8 stdout, as a hook's pipe has."""
    from ledger.cli import main

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, raw.getvalue().decode("utf-8"), err.getvalue()


def _check_reads(folder: Path, data: bytes) -> None:
    before = _snapshot(folder)
    lookup, out, err = _cli(["lookup", SIG])
    assert lookup in (0, 1, 65), err
    assert (lookup == 65) == (_oracle(data, validate_entry) is None), err
    if lookup == 0:
        found = json.loads(out)
        assert found["signal_hash"] == SIG
    elif lookup == 65:
        assert str(folder / LEDGER_NAME) in err and out == ""
    safe, out, err = _cli(["replay_safe", SIG])
    assert safe in (0, 1, 65), err
    assert (lookup == 65) == (safe == 65)
    for show in (["show"], ["show", "--json"]):
        code, out, err = _cli(show + [str(folder / LEDGER_NAME)])
        assert code in (0, 65), err
        assert (code == 65) == (_oracle(data) is None), err
        if code == 0 and "--json" in show:
            assert isinstance(json.loads(out), list)
        elif code == 0:
            assert all(isinstance(json.loads(line), dict) for line in out.split("\n")[:-1])
    assert _snapshot(folder) == before


def _hostile(ledger_dir: Path, monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setenv("PF_ESCALATION_LEDGER_DIR", str(ledger_dir))
    path = ledger_dir / LEDGER_NAME
    path.write_bytes(data)
    path.chmod(0o600)
    _check_reads(ledger_dir, data)


@FUZZ
@given(data=ledger_bytes())
@example(data=json.dumps([{"signal_hash": SIG, "user_response": "declined",
                           "timestamp": 10**400}]).encode())
@example(data=json.dumps([{"signal_hash": SIG, "user_response": "declined",
                           "timestamp": 1e400}]).encode())
@example(data=json.dumps([{"signal_hash": SIG, "user_response": "declined",
                           "timestamp": 1_700_000_000, "run_id": "\ud800"}]).encode())
def test_lookup_and_replay_safe_on_hostile_ledgers(
    ledger_dir: Path, monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    """``lookup`` and ``replay_safe`` on hostile ledgers: exit 0/1 with valid JSON output,
    or 65 naming the file; the same verdict for both; nothing written."""
    _hostile(ledger_dir, monkeypatch, data)


@FUZZ
@given(data=st.binary(max_size=256))
def test_lookup_and_replay_safe_on_random_bytes(
    ledger_dir: Path, monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    """``lookup`` and ``replay_safe`` on random bytes: 0/1 or a clean 65, nothing written."""
    _hostile(ledger_dir, monkeypatch, data)


NASTY = {
    "huge integer timestamp": json.dumps(
        [{"signal_hash": SIG, "user_response": "declined", "timestamp": 10**400}]).encode(),
    "lone surrogate": json.dumps(
        [{"signal_hash": SIG, "user_response": "declined", "timestamp": 1_700_000_000,
          "run_id": "\udcff\ud800"}]).encode(),
    "UTF-16": json.dumps([{"signal_hash": SIG}]).encode("utf-16"),
    "NUL in the middle": b'[{"signal_hash": "' + SIG.encode() + b'"\x00}]',
    "Infinity": b'[{"signal_hash": "x", "user_response": "y", "timestamp": Infinity}]',
    "deep": b"[" * 100_000,
}


@pytest.mark.parametrize("name", sorted(NASTY))
def test_hook_commands_on_nasty_ledgers_in_a_real_process(ledger_dir: Path, name: str) -> None:
    """Each nasty ledger through real ``ledgerctl`` processes: never a traceback."""
    path = ledger_dir / LEDGER_NAME
    path.write_bytes(NASTY[name])
    path.chmod(0o600)
    env = dict(os.environ, PF_ESCALATION_LEDGER_DIR=str(ledger_dir))
    for command in ("lookup", "replay_safe"):
        done = subprocess.run([sys.executable, "-m", "ledger", command, SIG], env=env,
                              capture_output=True, timeout=60)
        assert done.returncode in (0, 1, 65), done.stderr
        assert b"Traceback" not in done.stderr
        if done.stdout:
            json.loads(done.stdout)
    assert path.read_bytes() == NASTY[name]


# Bounded memory.

needs_rss = pytest.mark.skipif(os.name == "nt", reason="peak RSS is read with resource or /proc")

# Linux keeps ru_maxrss across exec (a child spawned by a big parent starts high), so
# the child's own high-water mark is read from /proc where there is one.
MEASURED = textwrap.dedent(
    """
    import resource, sys
    from ledger.cli import main
    code = main(sys.argv[1:])
    try:
        with open("/proc/self/status") as status:
            peak = [int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:")][0]
        own = 1
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak, own = (peak if sys.platform == "darwin" else peak * 1024), 0
    sys.stderr.write("PEAK %d %d\\n" % (peak, own))
    sys.exit(code)
    """
)


def _measured(folder: Path, *args: str) -> tuple[int, int, bool, str]:
    """Run ``ledgerctl ARGS`` in a child; return its exit code, its peak RSS in bytes,
    whether that peak is the child's own (not inherited across exec), and its stderr."""
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, PF_ESCALATION_LEDGER_DIR=str(folder)))
    lines = done.stderr.splitlines()
    assert lines and lines[-1].startswith("PEAK "), done.stderr
    _, peak, own = lines[-1].split()
    return done.returncode, int(peak), own == "1", "\n".join(lines[:-1])


def _write_big(path: Path, size: int, head: bytes) -> None:
    """A file of ``size`` bytes starting with ``head``, the rest a hole (no disk used)."""
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    path.chmod(0o600)


@pytest.mark.slow
@needs_rss
@pytest.mark.parametrize("command", ["lookup", "record"])
def test_ledger_larger_than_the_limit_is_refused_unread(ledger_dir: Path, command: str) -> None:
    """A ledger of sixteen times ``MAX_LEDGER_BYTES``: exit 65 naming the size limit, the
    file unchanged, and a peak RSS far below the file's size (it was never read)."""
    path = ledger_dir / LEDGER_NAME
    size = 16 * MAX_LEDGER_BYTES
    _write_big(path, size, b"[")
    args = [command, SIG] + (["c", "r", "declined", "run"] if command == "record" else [])

    code, peak, own, err = _measured(ledger_dir, *args)

    assert code == 65, err
    assert str(path) in err and "bytes" in err
    assert peak < 3 * size + 100 * 2**20
    if own:
        assert peak < size // 4
    assert path.stat().st_size == size
    with open(path, "rb") as handle:
        assert handle.read(2) == b"[\0"


DEEP = {
    "100000 levels of [": b"[" * 100_000,
    "100000 levels of [ then ]": b"[" * 100_000 + b"]" * 100_000,
    "100000 levels of objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "2000 nests of 900 levels": b"[" + b",".join([b"[" * 900 + b"]" * 9] * 2000) + b"]",
}


@pytest.mark.slow
@needs_rss
@pytest.mark.parametrize("name", sorted(DEEP))
def test_deeply_nested_ledger_is_refused_in_bounded_memory(ledger_dir: Path, name: str) -> None:
    """Deeply nested JSON: exit 65 (never a RecursionError traceback), the file unchanged,
    peak RSS below three times the file's size plus 100 MB."""
    path = ledger_dir / LEDGER_NAME
    path.write_bytes(DEEP[name])
    path.chmod(0o600)

    for command in ("lookup", "replay_safe"):
        code, peak, _, err = _measured(ledger_dir, command, SIG)
        assert code == 65, err
        assert "Traceback" not in err and str(path) in err
        assert peak < 3 * len(DEEP[name]) + 100 * 2**20
    assert path.read_bytes() == DEEP[name]


# The policy loader.

KEY_NAMES = st.sampled_from(["mode", "minimum_mode", "lock_timeout", "escalation_dir",
                             "escalation_cap", "audit_log", "audit_stderr", "Mode", "mode ",
                             "unknown", '"mode"', "mode.sub"])
TOML_VALUES = st.one_of(
    st.sampled_from(['"secure"', '"strict"', '"legacy"', '"SECURE"', '""', "'strict'",
                     "nan", "inf", "-inf", "+inf", "1e309", "0", "-1", "0.0001", "600",
                     "600.0001", "true", "false", "1979-05-27T07:32:00Z", "07:32:00",
                     "[]", '["strict"]', "{}", '{mode = "strict"}', '"~"', '"/tmp/x"',
                     '"relative/path"', '"\\u0000"', '"""multi\nline"""', "0x10", "1_000",
                     "99999999999999999999999999", '"' + "a" * 300 + '"']),
    st.integers().map(str),
    st.floats().map(lambda f: repr(f) if math.isfinite(f) else "nan"),
    any_text.map(json.dumps),
)


@st.composite
def toml_bytes(draw: st.DrawFn) -> bytes:
    """A TOML-shaped policy: key = value lines, headers, comments; sometimes cut."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(f"[{draw(KEY_NAMES)}]")
        elif kind == 1:
            lines.append("# " + draw(any_text))
        else:
            lines.append(f"{draw(KEY_NAMES)} = {draw(TOML_VALUES)}")
    text = "\n".join(lines)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe"])) + data


def _check_policy(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzzed.toml"
    path.write_bytes(data)
    path.chmod(0o600)
    policy: Optional[Policy] = None
    try:
        policy = load_policy(str(path), environ={})
    except PolicyError as exc:
        assert exc.exit_code == 78 and str(path) in exc.message
    if policy is not None:
        assert policy.mode in MODES
        assert 0 < policy.lock_timeout <= 600 and math.isfinite(policy.lock_timeout)
        assert isinstance(policy.escalation_cap, int) and policy.escalation_cap >= 1
    code, out, err = _cli(["policy", "check", str(path)])
    assert code in (0, 78), err
    assert (code == 0) == (policy is not None)
    assert path.read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["fuzzed.toml", "home"]


@FUZZ
@given(data=st.binary(max_size=256))
def test_policy_loader_on_any_bytes(tmp_path: Path, data: bytes) -> None:
    """Arbitrary bytes as an explicit policy file: a valid policy or ``PolicyError`` (78)."""
    _check_policy(tmp_path, data)


@FUZZ
@given(data=toml_bytes())
@example(data=b'lock_timeout = nan\nmode = "strict"')
@example(data=b"escalation_cap = 99999999999999999999999999")
@example(data=b'mode = "legacy"\nminimum_mode = "strict"')
def test_policy_loader_on_toml_shaped_files(tmp_path: Path, data: bytes) -> None:
    """TOML-shaped policies with odd keys and values: every setting of a policy that loads
    is within its allowed values; anything else is ``PolicyError`` (78); never a write."""
    _check_policy(tmp_path, data)
