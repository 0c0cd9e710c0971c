"""Parse and check ledger bytes, and write them back in the format the old hook used.

A ledger is a JSON array of objects, newest last. Parsing is strict: anything
that is not such an array is an error naming the file, never an empty ledger.
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any, Callable, Optional

from .errors import CorruptLedgerError

__all__ = [
    "Record", "Validator", "parse", "serialize", "deeper_than", "MAX_DEPTH", "MAX_LEDGER_BYTES",
]

Record = dict[str, Any]
Validator = Callable[[Record, int], Optional[str]]

# Parsing needs up to about 26 times a file's size for the worst shapes (many tiny
# objects), so this bound also bounds memory; 16 MiB is about 60,000 escalation entries.
MAX_LEDGER_BYTES = 16 * 1024 * 1024
# What is written is nested at most this deep, well within what any reader with Python's
# default recursion limit can parse, whatever limit the writing process has set.
MAX_DEPTH = 200
_BOM = b"\xef\xbb\xbf"
_NEXT_STEP = "Move it aside or repair it, then run the command again; it was not changed."
_SCALARS = frozenset({str, int, float, bool, type(None)})
# The C encoder separates items with NUL, which never occurs in JSON text it writes
# with ensure_ascii (control characters inside strings are always escaped).
_FLAT_ENCODER = json.JSONEncoder(separators=("\0", ": "), allow_nan=False)
_INFINITY = float("inf")


def _corrupt(path: str, what: str, reason: str) -> CorruptLedgerError:
    return CorruptLedgerError(f"{path} is not a valid ledger: {what}. {_NEXT_STEP}", path=path,
                              reason=reason)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON but becomes infinity, which cannot be written back as JSON.
    value = float(text)
    if value in (_INFINITY, -_INFINITY):
        raise ValueError(f"the number {text[:40]} is too large to keep")
    return value


def parse(data: bytes, path: str, validate: Optional[Validator] = None) -> list[Record]:
    """Return the records in ``data``, or raise :class:`CorruptLedgerError`.

    Empty content is refused too: the ledger code never leaves an empty file.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    nul = data.find(b"\0")
    if nul >= 0:
        raise _corrupt(path, f"it contains a NUL byte at offset {nul}", "nul_byte")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _corrupt(path, f"it is not UTF-8 text (byte {exc.start})", "not_utf8") from None
    if not text.strip():
        raise _corrupt(path, "it is empty", "empty")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise _corrupt(path, "its JSON is nested too deeply", "too_deep") from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            what = f"its JSON does not parse at line {exc.lineno}, column {exc.colno}"
        else:
            what = f"its JSON does not parse ({exc})"
        raise _corrupt(path, what, "bad_json") from None
    if not isinstance(value, list):
        raise _corrupt(path, f"it holds a JSON {type(value).__name__}, not an array", "not_array")
    for index, record in enumerate(value):
        if not isinstance(record, dict):
            raise _corrupt(path, f"entry {index} is not a JSON object", "bad_entry")
        problem = validate(record, index) if validate else None
        if problem:
            raise _corrupt(path, problem, "bad_entry")
    return value


def serialize(records: list[Record]) -> bytes:
    """Encode records the way the old hook wrote them (two-space indent).

    The bytes are always those of ``json.dumps(records, indent=2)``. The standard
    library encodes an indented document in pure Python, so a ledger of flat
    objects (the usual shape) is encoded in one call of the C encoder and laid
    out to the same text; any other shape goes through ``json.dumps`` itself.

    Raises:
        ValueError: A value is NaN or infinite, which JSON cannot hold, or the records
            are nested more than :data:`MAX_DEPTH` levels deep.
        TypeError: A value is not a JSON type.
    """
    text = _flat_layout(records)
    if text is None:
        if deeper_than(records, MAX_DEPTH):
            raise ValueError(f"it is nested more than {MAX_DEPTH} levels deep")
        text = json.dumps(records, indent=2, allow_nan=False)
    return text.encode("utf-8")


def deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` has lists or dicts nested more than ``limit`` levels deep, found
    level by level without recursing.

    Tuples count as lists, since ``json`` writes them as arrays.
    """
    level = [value] if isinstance(value, (dict, list, tuple)) else []
    for _ in range(limit):
        level = [item for container in level
                 for item in (container.values() if isinstance(container, dict) else container)
                 if isinstance(item, (dict, list, tuple))]
        if not level:
            return False
    return True


def _flat_layout(records: list[Record]) -> Optional[str]:
    """Return the indented text of non-empty objects of plain scalars, else ``None``.

    Keys need no check: both encoders turn a key into text by the same rules.
    """
    if not records or set(map(type, records)) != {dict} or not all(records):
        return None
    if not set(map(type, chain.from_iterable(map(dict.values, records)))) <= _SCALARS:
        return None

    # Between objects the NUL is preceded by "}" and followed by "{"; inside one it is
    # followed by the next key's quote, so the two kinds of separator cannot be confused.
    try:
        body = _FLAT_ENCODER.encode(records)[2:-2]
    except (TypeError, ValueError):
        return None
    body = body.replace("}\0{", "\n  },\n  {\n    ").replace("\0", ",\n    ")
    return "[\n  {\n    " + body + "\n  }\n]"
