"""One writer process of the in-process contention benchmark.

``python api_writer.py product|baseline FOLDER COUNT TAG`` imports what it needs,
prints ``ready``, waits for one line on stdin (the start gate shared by all
writers), then appends COUNT entries with run ids ``TAG-0`` ... through the
product's Python API or the baseline's ``append``. Start-up is outside the timed part.
"""

from __future__ import annotations

import os
import sys


def main(argv: list) -> int:
    """Append the entries once the gate opens; return 0 when all were written."""
    kind, folder, count, tag = argv[0], argv[1], int(argv[2]), argv[3]
    if kind == "product":
        # The checkout this script sits in, whatever the venv's install points at.
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from ledger.escalation import LEDGER_NAME, make_entry, validate_entry
        from ledger.store import Ledger

        # What open_ledger builds, with the cap raised so that no record is pruned.
        ledger = Ledger(os.path.join(folder, LEDGER_NAME), cap=1_000_000, validate=validate_entry)
        write = ledger.append
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import baseline_hook

        path = os.path.join(folder, baseline_hook.LEDGER_NAME)
        make_entry = baseline_hook.make_entry  # type: ignore[assignment]

        def write(entry: dict) -> None:
            baseline_hook.append(path, entry, 1_000_000)

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    for index in range(count):
        write(make_entry("c" * 64, "standard", "pro", "declined", f"{tag}-{index}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
