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
