"""The old escalation hook's algorithm, with the standard library only: the benchmark baseline.

It takes an exclusive ``flock`` on the side file ``<ledger>.lock``, reads the JSON
array, appends the entry, keeps the newest entries up to the cap, writes a unique
temp file next to the ledger and puts it in place with ``os.replace``. It does no
fsync, no link, owner or permission check, and writes no audit event. Reads take
no lock. It runs as ``python baseline_hook.py COMMAND ARGS`` like ``ledgerctl``.

Only the benchmarks use it; it is not part of the product. Modules that only one
command needs are imported in that command, so the baseline is as lean as it can be.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time

LEDGER_NAME = "escalation-history.json"
DEFAULT_CAP = 200
REPLAY_WINDOW = 24 * 60 * 60


def ledger_path() -> str:
    """The ledger file: ``$PF_ESCALATION_LEDGER_DIR`` or ``~/.preview-forge``."""
    folder = os.environ.get("PF_ESCALATION_LEDGER_DIR") or os.path.expanduser("~/.preview-forge")
    return os.path.join(folder, LEDGER_NAME)


def load(path: str) -> list:
    """Return the entries in the ledger, or an empty list when there is no file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return []


def append(path: str, entry: dict, cap: int = DEFAULT_CAP) -> None:
    """Append ``entry`` under the side lock, keep the newest ``cap``, replace atomically."""
    import tempfile  # only writes need it; reads stay as lean as they can be

    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            entries = load(path)
            entries.append(entry)
            entries = entries[-cap:]
            fd, tmp = tempfile.mkstemp(prefix=".escalation-", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entries, handle, indent=2)
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def make_entry(sig: str, current: str, recommended: str, response: str, run_id: str) -> dict:
    """One entry, with the keys in the old hook's order."""
    action = {"forced": "force_upgraded", "accepted": "upgraded"}.get(response, "stayed")
    return {
        "signal_hash": sig,
        "current_profile": current,
        "recommended": recommended,
        "user_response": response,
        "timestamp": int(time.time()),
        "run_id": run_id,
        "action_taken": action,
    }


def main(argv: list) -> int:
    """Run one hook command and return its exit code."""
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    path = ledger_path()
    cap = int(os.environ.get("BASELINE_CAP", DEFAULT_CAP))
    if command == "record" and len(args) == 5:
        entry = make_entry(*args)
        append(path, entry, cap)
        print(json.dumps(entry))
        return 0
    if command == "lookup" and len(args) == 1:
        for entry in reversed(load(path)):
            if entry.get("signal_hash") == args[0]:
                print(json.dumps(entry))
                return 0
        return 1
    if command in ("replay_safe", "replay-safe") and len(args) == 1:
        now = time.time()
        for entry in load(path):
            if (entry.get("signal_hash") == args[0] and entry.get("user_response") == "declined"
                    and now - float(entry["timestamp"]) < REPLAY_WINDOW):
                return 1
        return 0
    if command == "hash" and args:
        import hashlib

        stage = None
        if args[0].startswith("--stage="):
            stage, args = args[0].split("=", 1)[1], args[1:]
        parts = sorted({c.strip().lower() for c in args[0].split(",") if c.strip()})
        if stage is not None:
            parts.insert(0, f"__stage:{stage.lower()}__")
        print(hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest())
        return 0
    sys.stderr.write("usage: baseline_hook.py record|lookup|replay_safe|hash ARGS\n")
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
