"""``ledgerctl``: the command line of the ledger.

Exit codes follow ``sysexits``: 0 done, 1 not found or suppress, 64 usage,
65 invalid ledger, 69 strict refused, 74 I/O error, 75 lock timeout,
77 safety check failed, 78 bad policy. Modules are imported only when the
command needs them, because hooks start a fresh process for every call.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, Sequence, TextIO, cast

from .errors import EXIT_NOT_FOUND, EXIT_OK, LedgerError, UsageError

if TYPE_CHECKING:
    import argparse

__all__ = ["main", "build_parser"]

Handler = Callable[["argparse.Namespace", TextIO], int]


def _policy(args: argparse.Namespace) -> Any:
    from .policy import load_policy

    return load_policy(getattr(args, "policy", None))


def _escalation(args: argparse.Namespace) -> Any:
    from .escalation import open_ledger

    return open_ledger(_policy(args))


def _print_json(value: Any, out: TextIO) -> None:
    try:
        out.write(json.dumps(value, ensure_ascii=False) + "\n")
    except UnicodeEncodeError:
        # Text this output cannot carry (a lone surrogate, a narrow code page): escape it.
        out.write(json.dumps(value) + "\n")


# Escalation commands, call for call with the old hook.

def _require_text(*values: str) -> None:
    """Refuse arguments that are not valid text (bytes the system's encoding cannot read)."""
    try:
        for value in values:
            value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("An argument is not valid UTF-8 text; give it as text and run the "
                         "command again. Nothing was done.") from None


def _cmd_record(args: argparse.Namespace, out: TextIO) -> int:
    from .escalation import make_entry

    _require_text(args.sig, args.current, args.recommended, args.response, args.run_id)
    entry = make_entry(args.sig, args.current, args.recommended, args.response, args.run_id)
    _escalation(args).append(entry)
    _print_json(entry, out)
    return EXIT_OK


def _cmd_lookup(args: argparse.Namespace, out: TextIO) -> int:
    from .escalation import lookup

    entry = lookup(_escalation(args).records(), args.sig)
    if entry is None:
        return EXIT_NOT_FOUND
    _print_json(entry, out)
    return EXIT_OK


def _cmd_replay_safe(args: argparse.Namespace, out: TextIO) -> int:
    from .escalation import replay_safe

    return EXIT_OK if replay_safe(_escalation(args).records(), args.sig) else EXIT_NOT_FOUND


def _cmd_hash(args: argparse.Namespace, out: TextIO) -> int:
    from .escalation import signal_hash

    if getattr(args, "policy", None) is not None:
        # The hash needs no policy, but a named one must still be valid, as for every command.
        _policy(args)
    _require_text(args.categories, args.stage or "")
    out.write(signal_hash(args.categories, args.stage) + "\n")
    return EXIT_OK


# Generic ledger commands.

def _cmd_append(args: argparse.Namespace, out: TextIO) -> int:
    from .store import Ledger

    text = _read_stdin() if args.record == "-" else args.record
    _require_text(text)
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"The record is not valid JSON ({exc}). Give one JSON object.") from None
    if not isinstance(record, dict):
        raise UsageError("The record must be a JSON object, such as '{\"key\": \"value\"}'.")
    result = Ledger(args.file, policy=_policy(args), cap=args.cap).append(record)
    _print_json(record, out)
    if args.verbose:
        _print_json({"protections": result.protections, "missing": result.missing,
                     "pruned": result.pruned, "mode": result.mode}, out)
    return EXIT_OK


def _read_stdin() -> str:
    """Read one record from standard input: bounded, strict UTF-8 (a BOM allowed)."""
    from .records import MAX_LEDGER_BYTES

    stream = sys.stdin
    if stream is None:
        raise UsageError("Standard input is closed, so there is no record to read; give the "
                         "record as an argument instead of '-'.")
    binary = getattr(stream, "buffer", None)
    try:
        data = binary.read(MAX_LEDGER_BYTES + 1) if binary is not None else stream.read(
            MAX_LEDGER_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"Standard input cannot be read ({exc.strerror or exc}); give the "
                         "record as an argument, or pipe it in.") from None
    if len(data) > MAX_LEDGER_BYTES:
        raise UsageError(f"The record on standard input is larger than the {MAX_LEDGER_BYTES} "
                         "bytes a whole ledger may have; nothing was written.")
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"The record on standard input is not UTF-8 text (byte {exc.start}); "
                         "nothing was written.") from None


def _cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    from .store import Ledger

    records = Ledger(args.file, policy=_policy(args), audit=False).records()
    if args.json:
        try:
            out.write(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
        except UnicodeEncodeError:
            out.write(json.dumps(records, indent=2) + "\n")
    else:
        for record in records:
            _print_json(record, out)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ._demo import run

    return run(args, out)


def _lazy(module: str, function: str = "run") -> Handler:
    """Return a handler that imports ``module`` only when the command runs."""

    def handler(args: argparse.Namespace, out: TextIO) -> int:
        import importlib

        result: int = getattr(importlib.import_module(module, __package__), function)(args, out)
        return result

    return handler


# The calls hooks make, by command: the names of its values, and its other defaults.
_HOOK_CALLS: dict[str, tuple[Handler, tuple[str, ...], dict[str, Any]]] = {
    "record": (_cmd_record, ("sig", "current", "recommended", "response", "run_id"), {}),
    "lookup": (_cmd_lookup, ("sig",), {}),
    "replay_safe": (_cmd_replay_safe, ("sig",), {}),
    "replay-safe": (_cmd_replay_safe, ("sig",), {}),
    "hash": (_cmd_hash, ("categories",), {"stage": None}),
}


def _hook_args(argv: Sequence[str]) -> Optional[argparse.Namespace]:
    """Read an escalation command's call without building the parser.

    A hook starts a process per call, and building the parser costs more than the
    command. The values are taken as they come, as the old hook took them, so that a
    run id or a category starting with ``-`` is a value, not an unknown option; only
    ``--policy``, ``--traceback`` (and ``--stage`` for ``hash``) are options, anywhere,
    and ``--`` ends them. ``None`` leaves the call to the parser: another command, or a
    request for help.
    """
    options: dict[str, Any] = {}
    rest = list(argv)
    asked_help = False
    while rest:
        if rest[0] in _INFO_FLAGS:
            asked_help = True
            del rest[0]
        elif not _take_option(rest, options, stage=False):
            break
    call = _HOOK_CALLS.get(rest[0]) if rest else None
    if call is None:
        return None
    command, tokens = rest[0], rest[1:]
    handler, names, defaults = call
    values: list[str] = []
    while tokens:
        if tokens[0] == "--":
            values += tokens[1:]
            break
        if tokens[0] in _INFO_FLAGS:
            asked_help = True
            tokens.pop(0)
        elif not _take_option(tokens, options, stage=command == "hash"):
            values.append(tokens.pop(0))

    usage = " ".join(name.upper() for name in names)
    if asked_help and not values:
        return None
    if asked_help:
        raise UsageError(f"ledgerctl {command}: --help or --version cannot be given with "
                         "values, so nothing was done. To pass a value that starts with '-', "
                         "put '--' before it.")
    if len(values) != len(names):
        raise UsageError(f"ledgerctl {command} takes {len(names)} value(s), {usage}, and got "
                         f"{len(values)}. Run 'ledgerctl {command} --help' for the usage.")

    # Handlers only read attributes, and this spares a hook the import of argparse.
    from types import SimpleNamespace

    fields = {**defaults, **options, **dict(zip(names, values))}
    return cast("argparse.Namespace", SimpleNamespace(command=command, handler=handler, **fields))


_INFO_FLAGS = ("-h", "--help", "--version")


def _take_option(tokens: list[str], options: dict[str, Any], *, stage: bool) -> bool:
    """Move the option at the head of ``tokens`` into ``options``; false if there is none."""
    head = tokens[0]
    if head == "--traceback":
        options["traceback"] = True
        del tokens[0]
        return True
    for name in ("policy", "stage") if stage else ("policy",):
        flag = f"--{name}"
        if head == flag:
            if len(tokens) < 2 or tokens[1] == "--":
                raise UsageError(f"ledgerctl: {flag} needs a value. Run 'ledgerctl --help' for "
                                 "the usage.")
            options[name] = tokens[1]
            del tokens[:2]
            return True
        if head.startswith(flag + "="):
            options[name] = head[len(flag) + 1:]
            del tokens[0]
            return True
    return False


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of ``ledgerctl``."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        """An argument parser whose mistakes exit 64, as ``sysexits`` says."""

        def error(self, message: str) -> NoReturn:
            raise UsageError(f"{self.prog}: {message}. Run '{self.prog} --help' for the usage.")

    common = _Parser(add_help=False)
    common.add_argument("--policy", metavar="FILE", default=argparse.SUPPRESS,
                        help="policy file to use (also LEDGER_POLICY)")
    common.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="show the Python traceback of an error")
    parser = _Parser(prog="ledgerctl", parents=[common],
                     description="Keep a local JSON ledger safe under many processes and users.")
    parser.add_argument("--version", action="version", version="ledgerctl 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Handler, help_text: str, *aliases: str) -> Any:
        cmd = sub.add_parser(name, parents=[common], help=help_text, aliases=list(aliases),
                             description=help_text)
        cmd.set_defaults(handler=handler)
        return cmd

    cmd = command("record", _cmd_record, "record a prompt decision; print the entry")
    for name in ("sig", "current", "recommended", "response", "run_id"):
        cmd.add_argument(name, metavar=name.upper())
    cmd = command("lookup", _cmd_lookup, "print the newest entry for SIG (exit 1 if none)")
    cmd.add_argument("sig", metavar="SIG")
    cmd = command("replay_safe", _cmd_replay_safe,
                  "exit 1 if SIG was declined within 24 h (suppress the prompt), else 0",
                  "replay-safe")
    cmd.add_argument("sig", metavar="SIG")
    cmd = command("hash", _cmd_hash, "print the signal hash of comma-separated categories")
    cmd.add_argument("--stage", metavar="NAME", default=None)
    cmd.add_argument("categories", metavar="CATEGORIES")

    cmd = command("append", _cmd_append, "append one JSON object to a ledger file")
    cmd.add_argument("file", metavar="FILE")
    cmd.add_argument("record", metavar="JSON", help="a JSON object, or - to read it from stdin")
    cmd.add_argument("--cap", type=int, default=None, help="keep only the newest N records")
    cmd.add_argument("-v", "--verbose", action="store_true",
                     help="also print which protections the write had")
    cmd = command("show", _cmd_show, "print the records of a ledger file, one per line")
    cmd.add_argument("file", metavar="FILE")
    cmd.add_argument("--json", action="store_true", help="print one JSON array instead")

    policy = command("policy", _lazy("._cmd_policy", "run_help"), "see and check policies")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="ACTION",
                                       parser_class=_Parser)
    show = policy_sub.add_parser("show", parents=[common], help="the effective policy")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_lazy("._cmd_policy", "show"))
    check = policy_sub.add_parser("check", parents=[common], help="validate a policy file")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--machine", action="store_true",
                       help="check it as a machine policy (owner and minimum_mode)")
    check.set_defaults(handler=_lazy("._cmd_policy", "check"))

    cmd = command("doctor", _lazy("._cmd_doctor"),
                  "which protections this machine gives the configured ledger")
    cmd.add_argument("--json", action="store_true")
    cmd.add_argument("--dir", metavar="FOLDER", default=None,
                     help="check this folder instead of the escalation ledger's")

    cmd = command("audit", _lazy("._cmd_audit"), "summarise audit files")
    cmd.add_argument("files", metavar="FILE", nargs="*")
    cmd.add_argument("--since", metavar="WHEN", default=None,
                     help="only events at or after WHEN (ISO 8601, or 24h, 7d)")
    cmd.add_argument("--json", action="store_true")

    cmd = command("demo", _cmd_demo, "record and look up a decision in a demo ledger")
    cmd.add_argument("--dir", metavar="FOLDER", default=None,
                     help="folder for the demo ledger (default: a new temporary folder)")
    return parser


class _OutputFailed(OSError):
    """Writing the command's output failed after the command did its work."""


class _Output:
    """Standard output, telling a failed write of the output apart from other I/O errors."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputFailed(exc.errno, exc.strerror) from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputFailed(exc.errno, exc.strerror) from exc


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ledgerctl`` and return its exit code."""
    if sys.stderr is None:
        # Started with stderr closed: messages go nowhere, but the exit codes stay right.
        sys.stderr = open(os.devnull, "w")
    args: Optional[argparse.Namespace] = None
    try:
        args = _hook_args(sys.argv[1:] if argv is None else argv)
        if args is None:
            parser = build_parser()
            args = parser.parse_args(argv)
            if not getattr(args, "handler", None):
                parser.print_help(sys.stderr)
                return UsageError.exit_code
        # A hook runner may start us with stdout closed; the command still does its work.
        out = _Output(sys.stdout if sys.stdout is not None else open(os.devnull, "w"))
        code: int = args.handler(args, cast(TextIO, out))
        out.flush()
        return code
    except _OutputFailed as exc:
        sys.stderr.write(f"ledgerctl: the command did its work, but its output could not be "
                         f"written ({exc.strerror or exc}); do not run it again for the "
                         "output, use 'ledgerctl lookup' or 'show' instead.\n")
        return 74
    except LedgerError as exc:
        if args is not None and getattr(args, "traceback", False):
            raise
        sys.stderr.write(f"ledgerctl: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("ledgerctl: interrupted.\n")
        return 130
    except BrokenPipeError:
        # The reader of our output went away (``ledgerctl audit | head``): nothing to say.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        if args is not None and getattr(args, "traceback", False):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        sys.stderr.write(f"ledgerctl: I/O error{where}: {exc.strerror or exc}. "
                         "Fix the cause and run the command again.\n")
        return 74


def run() -> None:
    """Entry point of the ``ledgerctl`` script."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
