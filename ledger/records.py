"""Parse and check ledger bytes, and write them back in the format the old hook used.

A ledger is a JSON array of objects, newest last. Parsing is strict: anything
that is not such an array is an error naming the file, never an empty ledger.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from .errors import CorruptLedgerError

__all__ = ["Record", "Validator", "parse", "serialize", "MAX_LEDGER_BYTES"]

Record = dict[str, Any]
Validator = Callable[[Record, int], Optional[str]]

MAX_LEDGER_BYTES = 64 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_NEXT_STEP = "Move it aside or repair it, then run the command again; it was not changed."


def _corrupt(path: str, what: str, reason: str) -> CorruptLedgerError:
    return CorruptLedgerError(f"{path} is not a valid ledger: {what}. {_NEXT_STEP}", path=path,
                              reason=reason)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


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
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise _corrupt(path, "its JSON is nested too deeply", "too_deep") from None
    except ValueError as exc:
        where = ""
        if isinstance(exc, json.JSONDecodeError):
            where = f" at line {exc.lineno}, column {exc.colno}"
        raise _corrupt(path, f"its JSON does not parse{where}", "bad_json") from None
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
    """Encode records the way the old hook wrote them (two-space indent)."""
    return json.dumps(records, indent=2).encode("utf-8")
