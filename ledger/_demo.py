"""``ledgerctl demo``: record and look up one decision, and show what protected the write."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import TextIO

from .errors import EXIT_OK


def run(args: argparse.Namespace, out: TextIO) -> int:
    from .audit import trail
    from .escalation import LEDGER_NAME, lookup, make_entry, open_ledger, replay_safe, signal_hash
    from .policy import load_policy

    scratch = None if args.dir else tempfile.mkdtemp(prefix="ledger-demo-")
    folder = args.dir or os.path.join(scratch or "", "ledger")
    policy = load_policy(getattr(args, "policy", None))
    ledger = open_ledger(policy, directory=folder)
    sig = signal_hash("compliance,multi_tenant")
    entry = make_entry(sig, "standard", "pro", "declined", "demo-run")
    result = ledger.append(entry)
    records = ledger.records()

    out.write(f"ledger      {os.path.join(folder, LEDGER_NAME)}\n")
    out.write(f"mode        {result.mode}\n")
    out.write(f"recorded    {json.dumps(entry)}\n")
    out.write(f"lookup      {json.dumps(lookup(records, sig))}\n")
    verdict = "prompt" if replay_safe(records, sig) else "suppress (declined within 24 h)"
    out.write(f"replay_safe {verdict}\n\n")
    out.write("protection        mechanism\n")
    for name, mechanism in result.protections.items():
        out.write(f"{name:<17} {mechanism or '-- not applied'}\n")
    if result.missing:
        out.write(f"\nmissing: {', '.join(result.missing)}\n")
    out.write(f"\naudit log   {trail().path_for(policy)}\n")
    if scratch:
        out.write(f"\nThe demo ledger stays in {scratch} for you to look at; remove that "
                  "folder when you are done.\n")
    return EXIT_OK
