"""The on-disk format: exactly what ``json.dumps(records, indent=2)`` writes."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.records import parse, serialize

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
flat_records = st.lists(st.dictionaries(st.text(max_size=12), scalars, max_size=8), max_size=8)
any_records = st.lists(st.dictionaries(st.text(max_size=8), values, max_size=5), max_size=6)


@settings(max_examples=300, deadline=None)
@given(flat_records)
def test_flat_records_are_laid_out_like_json_dumps(records: list) -> None:
    """The fast path for flat objects writes the same bytes as json.dumps(indent=2)."""
    assert serialize(records) == json.dumps(records, indent=2).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(any_records)
def test_any_records_round_trip_in_the_old_layout(records: list) -> None:
    """Any records (nested too) are written as json.dumps(indent=2) and read back equal."""
    data = serialize(records)
    assert data == json.dumps(records, indent=2).encode("utf-8")
    if records:
        assert parse(data, "/test/ledger.json") == records


def test_separator_lookalikes_inside_strings_survive() -> None:
    """Text holding NUL, braces and commas cannot be confused with the layout's separators."""
    records = [{"a": "}\x00{", "b": "\x00", "c": ",\n    "}, {"}\x00{": 1}]
    assert serialize(records) == json.dumps(records, indent=2).encode("utf-8")
    assert parse(serialize(records), "/test/ledger.json") == records


NESTED_WRITER = """
import json, sys
from ledger import Ledger, UsageError
sys.setrecursionlimit(100_000)
depth, shape = int(sys.argv[2]), sys.argv[3]
record = {"n": 0}
for _ in range(depth - 2):  # the ledger's array and the record itself are two levels
    record = {"n": record} if shape == "dict" else {"n": tuple(record.values())}
try:
    Ledger(sys.argv[1]).append(record)
except UsageError as exc:
    print(exc.message)
    sys.exit(exc.exit_code)
"""


def test_what_is_written_is_never_nested_deeper_than_a_reader_can_read(tmp_path) -> None:
    """A process that raised its own recursion limit cannot write a ledger that a process
    with the default limit cannot read: 200 levels are written and read back by a fresh
    process; 201 are refused (64) and the ledger stays byte-identical."""
    import subprocess
    import sys

    from ledger.records import MAX_DEPTH

    path = tmp_path / "deep" / "book.json"

    def write(depth: int, shape: str = "dict") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", NESTED_WRITER, str(path), str(depth),
                               shape], capture_output=True, text=True, timeout=120)

    done = write(MAX_DEPTH)
    assert done.returncode == 0, done.stderr
    before = path.read_bytes()
    read = subprocess.run([sys.executable, "-m", "ledger", "show", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr

    # Tuples are written as arrays, so they count as lists do.
    for shape in ("dict", "tuple"):
        refused = write(MAX_DEPTH + 1, shape)
        assert refused.returncode == 64, (shape, refused.stderr)
        assert f"nested more than {MAX_DEPTH} levels deep" in refused.stdout
        assert path.read_bytes() == before
