"""The benchmark runs end to end and reports every figure; the lean paths it pushed stay exact.

The smoke run checks the structure of the result and that no record was lost,
never a timing: timings belong to ``benchmarks/run.py`` and ``docs/performance.md``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import cli
from ledger.escalation import validate_entry
from ledger.errors import UsageError
from ledger.records import serialize

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "benchmarks" / "run.py"

EXPECTED = [
    "a. cold replay_safe",
    "a. cold lookup",
    "b. cold record",
    "c. ",
    "c2. ",
    "d. Python API appends",
    "e. one append, 200 entries",
    "e. one append, 2000 entries",
    "e. one append, 20000 entries",
]
STATS = {"median", "q1", "q3", "iqr", "min", "max", "n", "samples"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``benchmarks/run.py --smoke --json FILE`` once, its sandbox inside a temp folder."""
    root = tmp_path_factory.mktemp("bench")
    home = root / "home"
    home.mkdir(mode=0o700)
    env = {key: value for key, value in os.environ.items()
           if key not in ("LEDGER_POLICY", "PF_ESCALATION_LEDGER_DIR")}
    env.update(TMPDIR=str(root), HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_STATE_HOME=str(home / ".local" / "state"))
    out = root / "result.json"
    proc = subprocess.run([sys.executable, str(RUNNER), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, env=env, cwd=str(REPO), timeout=240)
    return {"proc": proc, "root": root, "report": json.loads(out.read_text(encoding="utf-8"))
            if out.exists() else None}


def test_smoke_run_succeeds_and_prints_the_table(smoke: dict[str, Any]) -> None:
    """The runner exits 0, prints the Markdown table, and removes its sandbox."""
    proc = smoke["proc"]
    assert proc.returncode == 0, proc.stderr
    assert "| benchmark | unit | product | reference | ratio | target | met |" in proc.stdout
    assert not [p for p in smoke["root"].iterdir() if p.name.startswith("ledger-bench-")]


def test_smoke_result_has_every_benchmark_with_full_statistics(smoke: dict[str, Any]) -> None:
    """Every benchmark a-e is in the JSON, each with medians, quartiles, samples and a ratio."""
    report = smoke["report"]
    assert report is not None and report["mode"] == "smoke"
    names = [item["name"] for item in report["results"]]
    assert len(names) == len(EXPECTED)
    for name, prefix in zip(names, EXPECTED):
        assert name.startswith(prefix)
    for item in report["results"]:
        for side in ("product", "reference"):
            stats = item[side]
            assert set(stats) == STATS
            assert stats["n"] == len(stats["samples"]) >= 1
            assert stats["q1"] <= stats["median"] <= stats["q3"]
            assert all(value > 0 for value in stats["samples"])
        assert math.isfinite(item["ratio"]) and item["ratio"] > 0
        assert isinstance(item["target"], str) and item["met"] in (True, False, None)
    assert isinstance(report["all_met"], bool)
    assert report["machine"]["cpus"] >= 1 and report["machine"]["python"]


def test_smoke_writers_lose_nothing_and_every_record_is_audited(smoke: dict[str, Any]) -> None:
    """No concurrent writer lost a record or left a temp file; each cold record was audited."""
    results = {item["name"][:2]: item for item in smoke["report"]["results"]}
    for key in ("c.", "c2"):
        assert results[key]["lost"] == {"product": 0, "baseline": 0}
        assert results[key]["temp_files_left"]["product"] == 0
    record = results["b."]
    assert record["audit_events"] == record["product"]["n"]


def test_smoke_breakdown_covers_start_up_imports_and_costs(smoke: dict[str, Any]) -> None:
    """The breakdown names start-up, the imports of both commands, and the per-size costs."""
    parts = smoke["report"]["breakdown"]
    assert set(parts) == {"start_up", "imports", "in_process", "steps", "audit"}
    assert set(parts["imports"]) == {"replay_safe/product", "replay_safe/baseline",
                                     "record/product", "record/baseline"}
    assert "structlog" in parts["imports"]["record/product"]
    assert "structlog" not in parts["imports"]["replay_safe/product"]
    assert parts["imports"]["replay_safe/product"]["(all imports)"] > 0
    assert set(parts["in_process"]) == {"200", "2000", "20000"}
    for costs in parts["in_process"].values():
        assert costs["bytes"] > 0 and "records.serialize (product)" in costs


# The lean paths read and write exactly as the plain ones.

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(),
                    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["}\0{", "}", "{", ",", '"']))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=8), SCALARS, max_size=6), max_size=6))
def test_serialize_of_flat_records_is_json_dumps_indent_2(records: list[dict[str, Any]]) -> None:
    """Flat records (the fast path) give the bytes of ``json.dumps(records, indent=2)``."""
    assert serialize(records) == json.dumps(records, indent=2).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), VALUES, max_size=4), max_size=4))
def test_serialize_of_any_records_is_json_dumps_indent_2(records: list[dict[str, Any]]) -> None:
    """Nested values, empty objects and odd keys give the same bytes as ``json.dumps`` too."""
    assert serialize(records) == json.dumps(records, indent=2).encode("utf-8")


def test_serialize_converts_keys_and_refuses_values_like_json_dumps() -> None:
    """Non-text keys are written as ``json.dumps`` writes them; odd values fail the same way."""
    records: list[dict[Any, Any]] = [{1: 2, 2.5: "x", True: None, None: -0.0}, {"a": "é\ud800"}]
    assert serialize(records) == json.dumps(records, indent=2).encode("utf-8")
    with pytest.raises(TypeError):
        serialize([{"a": object()}])


HOOK_CALLS = [
    ["record", "sig", "standard", "pro", "declined", "run-1"],
    ["record", "a b", "", "c=d", "accepted", "é"],
    ["lookup", "abc"],
    ["replay_safe", "abc"],
    ["replay-safe", "abc"],
    ["hash", "cat1,cat2"],
    ["hash", ""],
]


@pytest.mark.parametrize("argv", HOOK_CALLS)
def test_hook_calls_read_the_same_without_the_parser(argv: list[str]) -> None:
    """A hook's plain call gives the same arguments as the full parser would."""
    fast = cli._hook_args(argv)
    assert fast is not None
    assert vars(fast) == vars(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["--policy", "p.toml", "lookup", "a"], ["lookup", "a", "--traceback"],
    ["hash", "--stage=x", "a"], ["hash", "--stage", "x", "a"], ["--traceback", "replay_safe", "a"],
    ["record", "--policy=p.toml", "a", "b", "c", "d", "e"],
])
def test_calls_with_options_read_the_same_without_the_parser(argv: list[str]) -> None:
    """Options anywhere in a hook's call give the same arguments as the full parser."""
    fast = cli._hook_args(argv)
    assert fast is not None
    assert vars(fast) == vars(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize(("argv", "values"), [
    (["lookup", "-1"], {"sig": "-1"}),
    (["lookup", "--", "--traceback"], {"sig": "--traceback"}),
    (["hash", "-a,b"], {"categories": "-a,b", "stage": None}),
    (["record", "-a", "-b", "c", "d", "--x"], {"sig": "-a", "current": "-b", "run_id": "--x"}),
])
def test_values_starting_with_a_dash_are_values(argv: list[str], values: dict[str, Any]) -> None:
    """What is not one of the options is a value, as the old hook read its arguments."""
    fast = cli._hook_args(argv)
    assert fast is not None
    assert {name: getattr(fast, name) for name in values} == values


@pytest.mark.parametrize("argv", [
    ["lookup"], ["lookup", "a", "b"], ["lookup", "--"], ["record", "a", "b", "c", "d"],
    ["record", "a", "b", "c", "d", "e", "--help"], ["hash", "a", "--stage"],
    ["hash", "--stage", "--", "a"], ["lookup", "a", "--policy"],
])
def test_a_wrong_call_is_a_usage_error_without_the_parser(argv: list[str]) -> None:
    """A missing or extra value, help mixed with values, or an option without its value."""
    with pytest.raises(UsageError):
        cli._hook_args(argv)


@pytest.mark.parametrize("argv", [
    [], ["doctor"], ["--version"], ["record", "--help"], ["lookup", "-h"], ["append", "a", "{}"],
    ["--policy", "p.toml"], ["--traceback"], ["--help", "--traceback"],
    ["--version", "--policy", "x"],
])
def test_other_commands_and_help_go_through_the_parser(argv: list[str]) -> None:
    """Another command, or a request for a command's help, is left to the parser."""
    assert cli._hook_args(argv) is None


@pytest.mark.parametrize(("entry", "index", "message"), [
    ({"user_response": "declined", "timestamp": 1}, 3, "entry 3 has no text 'signal_hash'"),
    ({"signal_hash": "s", "user_response": 1, "timestamp": 1}, 0,
     "entry 0 has no text 'user_response'"),
    ({"signal_hash": "s", "user_response": "d", "timestamp": True}, -1,
     "the new entry has no numeric 'timestamp'"),
    ({"signal_hash": "s", "user_response": "d", "timestamp": 1.5, "run_id": 7}, 2,
     "entry 2 has a 'run_id' that is not text"),
    ({"signal_hash": "s", "user_response": "d", "timestamp": 1, "action_taken": None}, 0,
     "entry 0 has a 'action_taken' that is not text"),
    ({"signal_hash": "s", "user_response": "d", "timestamp": 1, "extra": [1]}, 0, None),
])
def test_validate_entry_names_the_entry_and_the_problem(
        entry: dict[str, Any], index: int, message: str) -> None:
    """The escalation check still names the entry (or the new one) and what is wrong."""
    assert validate_entry(entry, index) == message
