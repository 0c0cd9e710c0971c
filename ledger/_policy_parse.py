"""Parse and validate the text of a policy file.

Every problem is collected, with its line where it can be found, the key and
the allowed values, so that one run of ``ledgerctl policy check`` shows them all.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, NamedTuple, Optional

from .policy import MODES, mode_rank

__all__ = ["KEYS", "KeySpec", "MAX_LOCK_TIMEOUT", "MAX_ESCALATION_CAP", "policy_problems"]

MAX_LOCK_TIMEOUT = 600.0
MAX_ESCALATION_CAP = 100_000
MAX_LINE = 4096
_TEXT_MODES = ", ".join(f'"{mode}"' for mode in reversed(MODES))


class KeySpec(NamedTuple):
    """One key a policy file may set.

    Attributes:
        default: The value when no policy sets the key, as ``policy show`` prints it.
        allowed: The allowed values, in words, for messages and docs.
        machine_only: Honoured in the machine policy only.
    """

    default: str
    allowed: str
    machine_only: bool = False


KEYS: dict[str, KeySpec] = {
    "mode": KeySpec('"secure"', _TEXT_MODES),
    "minimum_mode": KeySpec("none", _TEXT_MODES + " (machine policy only)", machine_only=True),
    "lock_timeout": KeySpec(
        "10", f"a number of seconds, more than 0 and at most {MAX_LOCK_TIMEOUT:g}"
    ),
    "escalation_dir": KeySpec(
        '"~/.preview-forge"', "an absolute folder path, or one starting with ~"
    ),
    "escalation_cap": KeySpec("200", f"a whole number from 1 to {MAX_ESCALATION_CAP}"),
    "audit_log": KeySpec(
        "the user log folder's audit.jsonl",
        "an absolute file path, or one starting with ~, whose name ends in .jsonl",
    ),
    "audit_stderr": KeySpec("false", "true or false"),
}



def _decode(data: bytes) -> str:
    """Decode UTF-8 (with or without a byte-order mark) or BOM-marked UTF-16."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8")


def _line_of(text: str, key: str) -> Optional[int]:
    """Return the line where top-level ``key`` is set (or its table starts), if found."""
    import re

    name = re.escape(key)
    pattern = re.compile(rf"""^\s*\[*\s*(?:"{name}"|'{name}'|{name})\s*[=.\]]""")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


def _toml_loads(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:
        import importlib

        toml = importlib.import_module("tomli")
    result: dict[str, Any] = toml.loads(text)
    return result


def _toml_error_types() -> tuple[type[Exception], ...]:
    if sys.version_info >= (3, 11):
        import tomllib

        return (tomllib.TOMLDecodeError,)
    import importlib

    error: type[Exception] = getattr(importlib.import_module("tomli"), "TOMLDecodeError")
    return (error,)


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date or time"


def _shown(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _check_value(key: str, value: Any) -> tuple[Any, Optional[str]]:
    """Return the value to use and ``None``, or ``None`` and what is wrong."""
    allowed = KEYS[key].allowed
    bad = f"must be {allowed}, not {_kind_of(value)}"
    if key in ("mode", "minimum_mode"):
        if not isinstance(value, str):
            return None, bad
        if value not in MODES:
            return None, f"must be one of {_TEXT_MODES}, not {_shown(value)}"
        return value, None
    if key == "lock_timeout":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, bad
        if not math.isfinite(value) or not 0 < value <= MAX_LOCK_TIMEOUT:
            return None, f"must be {allowed}, not {_shown(value)}"
        return float(value), None
    if key == "escalation_cap":
        if isinstance(value, bool) or not isinstance(value, int):
            return None, bad
        if not 1 <= value <= MAX_ESCALATION_CAP:
            return None, f"must be {allowed}, not {value}"
        return value, None
    if key == "audit_stderr":
        if not isinstance(value, bool):
            return None, bad
        return value, None
    if not isinstance(value, str):
        return None, bad
    expanded = os.path.expanduser(value)
    if not value.strip() or "\0" in value or not os.path.isabs(expanded):
        return None, f"must be {allowed}, not {_shown(value)}"
    if key == "audit_log" and not _is_audit_name(os.path.basename(expanded)):
        return None, f"must be {allowed}, not {_shown(value)}"
    return os.path.normpath(expanded), None


def _is_audit_name(name: str) -> bool:
    """Tell whether ``name`` may be an audit file: ``NAME.jsonl``, never a stream of another file.

    The suffix keeps every policy from aiming the audit append (and its rotation)
    at a file such as a shell's rc file; on Windows a colon would name a stream.
    """
    if not name.endswith(".jsonl") or name == ".jsonl":
        return False
    return not (sys.platform == "win32" and ":" in name)


def policy_problems(data: bytes, kind: str) -> tuple[dict[str, Any], list[str]]:
    """Parse policy bytes; return the valid settings and every problem found.

    Args:
        data: The file's bytes (a UTF-8 or UTF-16 byte-order mark and CRLF are fine).
        kind: ``machine``, ``explicit`` or ``user``; only a machine policy may set
            ``minimum_mode``.
    """
    try:
        text = _decode(data)
    except UnicodeDecodeError as exc:
        return {}, [f"it is not UTF-8 text (byte {exc.start} cannot be decoded)"]
    long_line = next((number for number, line in enumerate(text.splitlines(), 1)
                      if len(line) > MAX_LINE), None)
    if long_line is not None:
        # Parsers slow down sharply on very long dotted keys; no setting needs such a line.
        return {}, [f"line {long_line} is longer than {MAX_LINE} characters"]
    try:
        document = _toml_loads(text)
    except _toml_error_types() as exc:
        return {}, [f"TOML syntax error: {exc}"]
    except RecursionError:
        # The parser recurses once per level of arrays and inline tables.
        return {}, ["a value is nested too deeply to be read (arrays or tables inside "
                    "one another); no policy needs more than a few levels"]
    except MemoryError:
        return {}, ["reading it takes more memory than this process has"]

    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in document.items():
        line = _line_of(text, key)
        where = f"line {line}: " if line else ""
        if key not in KEYS:
            problems.append(
                f"{where}unknown key {key!r}; the keys are {', '.join(KEYS)}"
            )
            continue
        if KEYS[key].machine_only and kind != "machine":
            problems.append(
                f"{where}{key!r} is honoured only in the machine policy "
                f"({_machine_policy_path()}); remove it from this file"
            )
            continue
        checked, problem = _check_value(key, value)
        if problem:
            problems.append(f"{where}{key!r} {problem}")
        else:
            values[key] = checked

    floor = values.get("minimum_mode")
    mode = values.get("mode")
    if floor is not None and mode is not None and mode_rank(mode) < mode_rank(floor):
        problems.append(
            f"'mode' {_shown(mode)} is weaker than this file's own minimum_mode {_shown(floor)}"
        )
    return values, problems




def _machine_policy_path() -> str:
    from ._policy_load import machine_policy_path

    return machine_policy_path()
