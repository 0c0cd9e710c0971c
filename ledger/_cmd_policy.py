"""``ledgerctl policy show`` and ``ledgerctl policy check``: see and check policies."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, TextIO

from ._policy_load import KEYS, Location, locations, policy_problems, read_policy
from .errors import EXIT_OK, PolicyError, UsageError
from .policy import Policy, load_policy, mode_rank

__all__ = ["run_help", "show", "check", "describe_policy"]


def run_help(args: argparse.Namespace, out: TextIO) -> int:
    """Handle ``ledgerctl policy`` without an action."""
    raise UsageError(
        "Give an action: 'ledgerctl policy show' for the effective policy, or "
        "'ledgerctl policy check FILE' to validate a file."
    )


def _toml(value: Any) -> str:
    """Write a value as it would appear in a policy file."""
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def describe_policy(
    policy: Policy, explicit: Optional[str], environ: Optional[dict[str, str]] = None
) -> dict[str, Any]:
    """Describe the effective policy and where its files are looked for, as plain data."""
    from .audit import default_audit_path
    from .escalation import DIR_ENV, LEDGER_NAME, ledger_dir

    env = dict(os.environ) if environ is None else environ
    places = locations(explicit, env)
    files = []
    for where in places:
        files.append({
            "kind": where.kind,
            "path": where.path,
            "named_by": where.named_by,
            "present": os.path.lexists(where.path),
            "used": where.path in policy.sources,
        })
    if not any(where.kind == "explicit" for where in places):
        files.insert(1, {"kind": "explicit", "path": None, "named_by": None,
                         "present": False, "used": False})

    values = {key: getattr(policy, key) for key in KEYS}
    folder = ledger_dir(policy, env)
    if env.get(DIR_ENV):
        folder_set_by = DIR_ENV
    elif policy.escalation_dir:
        folder_set_by = policy.origins.get("escalation_dir", "default")
    else:
        folder_set_by = "default"
    audit_path = os.path.abspath(os.path.expanduser(policy.audit_log or default_audit_path()))
    return {
        "mode": policy.mode,
        "requested_mode": policy.requested_mode,
        "raised_by_floor": policy.raised,
        "values": values,
        "origins": dict(policy.origins),
        "sources": list(policy.sources),
        "files": files,
        "escalation_ledger": {
            "path": os.path.join(folder, LEDGER_NAME),
            "set_by": folder_set_by,
        },
        "audit_log": {
            "path": audit_path,
            "set_by": policy.origins.get("audit_log", "default"),
        },
    }


def _raiser(policy: Policy) -> str:
    """Say what made the mode stronger than asked: the machine floor, or the machine's mode."""
    floor = policy.minimum_mode
    if floor is not None and mode_rank(str(policy.requested_mode)) < mode_rank(floor):
        return f"the machine floor minimum_mode = {_toml(floor)} raised it"
    return f"the machine policy's mode = {_toml(policy.mode)} overrides it"


def show(args: argparse.Namespace, out: TextIO) -> int:
    """Print the effective policy, which file set each value, and where files are looked for."""
    explicit = getattr(args, "policy", None)
    policy = load_policy(explicit)
    info = describe_policy(policy, explicit)
    if args.json:
        out.write(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK

    out.write(f"Effective policy: mode {policy.mode}\n")
    if policy.raised:
        asked_by = policy.origins.get("requested_mode", "default")
        out.write(f"  ({asked_by} asked for {_toml(policy.requested_mode)}; {_raiser(policy)})\n")
    width = max(len(key) for key in KEYS) + 2
    values = info["values"]
    value_width = max(len(_toml(value)) for value in values.values()) + 2
    out.write(f"\n  {'key':<{width}}{'value':<{value_width}}set by\n")
    for key in KEYS:
        origin = policy.origins.get(key, "default")
        out.write(f"  {key:<{width}}{_toml(values[key]):<{value_width}}{origin}\n")

    ledger = info["escalation_ledger"]
    audit = info["audit_log"]
    out.write(f"\nEscalation ledger: {ledger['path']} (set by {ledger['set_by']})\n")
    out.write(f"Audit log: {audit['path']} (set by {audit['set_by']})\n")

    out.write("\nPolicy files, strongest first:\n")
    for entry in info["files"]:
        if entry["path"] is None:
            out.write("  explicit  (none: no --policy given and LEDGER_POLICY is not set)\n")
            continue
        state = "present, used" if entry["used"] else "present" if entry["present"] else "absent"
        named = f" [named by {entry['named_by']}]" if entry["named_by"] else ""
        out.write(f"  {entry['kind']:<9} {entry['path']}{named}: {state}\n")
    return EXIT_OK


def check(args: argparse.Namespace, out: TextIO) -> int:
    """Validate one policy file: exit 0, or 78 with every reason on stderr."""
    kind = "machine" if args.machine else "explicit"
    if not args.file:
        raise PolicyError("The policy file to check has an empty name; name the file and run "
                          "the check again.", reason="empty_policy_name")
    where = Location(kind, os.path.abspath(os.path.expanduser(args.file)))
    data = read_policy(where)
    if data is None:
        raise PolicyError(
            f"The {where.describe()} does not exist. Check the path and run the check again.",
            path=where.path,
            reason="missing_policy",
        )

    values, problems = policy_problems(data, kind)
    what = "a machine policy" if args.machine else "a policy"
    if problems:
        sys.stderr.write(f"ledgerctl: {where.path} is not valid as {what}:\n")
        for problem in problems:
            sys.stderr.write(f"  - {problem}\n")
        sys.stderr.write("Fix these and run the check again.\n")
        return PolicyError.exit_code

    if values:
        settings = ", ".join(f"{key} = {_toml(value)}" for key, value in values.items())
    else:
        settings = "nothing (every key keeps its default)"
    out.write(f"{where.path}: valid as {what}; it sets {settings}.\n")
    return EXIT_OK
