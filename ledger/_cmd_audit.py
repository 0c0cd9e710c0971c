"""``ledgerctl audit [FILE ...] [--since WHEN] [--json]``: summarise audit files.

For each host and ledger it counts writes by outcome and by mode, the writes that
missed a protection their mode wanted (and which), the ok writes that ran without
a protection (legacy mode, for one), refusals and errors with their reasons, and
the writes whose mode a machine floor raised. Lines that are not audit events are
counted and shown, never fatal. Without FILE it reads the configured audit file
and its rotated siblings; a FILE may be a folder of collected audit files, and
``.gz`` files are read too. Only regular files are read (a FIFO or device named as
FILE is refused before a byte is read), and at most :data:`MAX_READ` bytes of each.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import io
import json
import os
import re
import stat
import sys
import zlib
from collections import Counter
from typing import IO, Any, Iterator, Optional, TextIO, cast

from .audit import clean_text
from .errors import EXIT_OK, LedgerIOError, UnsafePathError, UsageError
from .records import deeper_than

__all__ = ["run", "summarise", "parse_since", "parse_time", "audit_files_in"]

MAX_LINE = 64 * 1024
MAX_DEPTH = 64
MAX_READ = 4 * 1024**3
SAMPLES_JSON = 100
SAMPLES_TABLE = 20
_UTC = datetime.timezone.utc
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_FRACTION = re.compile(r"(T\d{2}:\d{2}:\d{2})\.(\d+)")
_ROTATED = re.compile(r"\.jsonl(\.\d+)?(\.gz)?$")


# Times.

def parse_time(text: str) -> Optional[datetime.datetime]:
    """Parse an ISO 8601 time (``Z`` or an offset; none means UTC); ``None`` if it is not one.

    A time whose offset carries it out of years 1 to 9999 in UTC is not one either.
    """
    return _read_time(text)[0]


def _read_time(text: str) -> tuple[Optional[datetime.datetime], str]:
    """Return the time in UTC, or ``None`` and what is wrong with it."""
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: f"{m.group(1)}.{(m.group(2) + '000000')[:6]}", text, count=1)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None, "no ISO 8601 timestamp"
    if when.tzinfo is None:
        return when.replace(tzinfo=_UTC), ""
    try:
        return when.astimezone(_UTC), ""
    except OverflowError:
        return None, "a timestamp out of range (years 1 to 9999 in UTC)"


def parse_since(text: str, now: Optional[datetime.datetime] = None) -> datetime.datetime:
    """Parse ``--since``: an ISO 8601 date or time, or a span back from now such as 24h or 7d."""
    now = now or datetime.datetime.now(_UTC)
    span = _SPAN.match(text)
    if span:
        seconds = float(span.group(1)) * _UNITS[span.group(2).lower()]
        try:
            return now - datetime.timedelta(seconds=seconds)
        except OverflowError:
            when = None
    else:
        when = parse_time(text)
    if when is None:
        raise UsageError(
            f"--since takes an ISO 8601 time such as 2026-01-31T08:00Z, or a span back from "
            f"now such as 30m, 24h or 7d, within years 1 to 9999; not {text!r}."
        )
    return when


def _iso(when: Optional[datetime.datetime]) -> Optional[str]:
    return None if when is None else when.astimezone(_UTC).isoformat().replace("+00:00", "Z")


# Which files.

def audit_files_in(folder: str) -> list[str]:
    """Return the audit files in a folder of collected logs, oldest rotation first."""
    def order(name: str) -> tuple[str, int]:
        match = _ROTATED.search(name)
        number = match.group(1) if match else None
        return (name[: match.start()] if match else name, -int(number[1:]) if number else 0)

    # Links are skipped: whoever can write the folder must not make us show other files.
    # The entries are opened without following links too, since a file can be swapped.
    if _WALK:
        fd = _walk(_resolve(folder), os.O_RDONLY | _O_DIRECTORY)
        try:
            names = [name for name in os.listdir(fd) if _ROTATED.search(name)
                     and stat.S_ISREG(_lstat_mode(name, fd))]
        finally:
            os.close(fd)
    else:
        names = [name for name in os.listdir(folder) if _ROTATED.search(name)
                 and stat.S_ISREG(_lstat_mode(os.path.join(folder, name)))]
    return [_FolderEntry(os.path.join(folder, name)) for name in sorted(names, key=order)]


class _FolderEntry(str):
    """A path found in a folder of collected files (not named by the user): never followed."""


def _lstat_mode(path: str, dir_fd: Optional[int] = None) -> int:
    try:
        return os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return 0


def _files(args: argparse.Namespace) -> tuple[list[str], Optional[str]]:
    """Return the files to read, and the configured audit file when none was named."""
    if args.files:
        if "" in args.files:
            raise UsageError("An audit file name is empty; name audit files, or folders of "
                             "them, and run the command again.")
        paths: list[str] = []
        for name in args.files:
            real = name if name in _STDIN_NAMES or not _WALK else _resolve(name)
            paths.extend(audit_files_in(name) if os.path.isdir(real) else [name])
        return paths, None
    from .audit import rotated_paths, trail
    from .policy import load_policy

    # The configured files are the writer's, which never writes through a link either.
    configured = trail().path_for(load_policy(getattr(args, "policy", None)))
    return [_FolderEntry(path) for path in rotated_paths(configured)], configured


# Opening without being led elsewhere.
#
# On POSIX a named path is resolved first, following only links that no other user can
# have made or changed (the user's or root's, in a folder that is too), as ledger folders
# are; then every part of the result is opened with O_NOFOLLOW, so that a part swapped for
# a link in between is refused rather than followed. Windows has no O_NOFOLLOW for this;
# there a named link is followed (docs/audit-log.md).

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_WALK = bool(_O_NOFOLLOW and _O_DIRECTORY) and os.open in os.supports_dir_fd
# This process's own standard input, which is a pipe or a terminal, not a file.
_STDIN_NAMES = ("-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0")


def _resolve(path: str) -> str:
    """Resolve ``path``, refusing (77) a link that another user could have made or changed."""
    from ._posix import _trusted_realpath

    # Not abspath: it would drop "link/.." by its text, where the kernel follows the link.
    return _trusted_realpath(os.path.join(os.getcwd(), path))


def _walk(real: str, flags: int) -> int:
    """Open ``real`` (a path without links) part by part, none of them followed if a link."""
    parts = [part for part in real.split(os.sep) if part]
    fd = os.open(os.sep, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    here = os.sep
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            here = os.path.join(here, part)
            try:
                child = os.open(part, (flags if last else os.O_RDONLY | _O_DIRECTORY)
                                | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR
                                                and os.path.islink(here)):
                    raise UnsafePathError(
                        f"Refusing to read {here}: it is a link (or became one while it was "
                        "being opened), so it could show another file. Check who can write "
                        "its folder, then run the command again.",
                        path=here,
                        reason="symlink",
                    ) from exc
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open(path: str, stack: contextlib.ExitStack) -> IO[bytes]:
    """Open an audit file to read, closed with ``stack``; only a regular file or our own stdin.

    The file is opened without waiting (``O_NONBLOCK``), so a FIFO with no writer
    does not hang the command, and is checked on the descriptor before a byte is read.

    Raises:
        UnsafePathError: It is a link another user could have made, a FIFO, device,
            folder or socket (77).
        OSError: It cannot be opened.
    """
    flags = (os.O_RDONLY | getattr(os, "O_BINARY", 0) | _O_CLOEXEC
             | getattr(os, "O_NONBLOCK", 0))
    found = isinstance(path, _FolderEntry)
    if path == "-":
        fd = os.dup(0)
    elif path in _STDIN_NAMES or not _WALK:
        fd = os.open(path, flags | (_O_NOFOLLOW if found else 0))
    else:
        # An entry of a folder is never a link itself; a named file may be a trusted one.
        absolute = os.path.join(os.getcwd(), path)
        real = (os.path.join(_resolve(os.path.dirname(absolute)), os.path.basename(absolute))
                if found else _resolve(absolute))
        fd = _walk(real, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink != 1:
            raise UnsafePathError(
                f"Refusing to read {path}: it has {st.st_nlink} hard links, so it may be "
                "another file. Check who can write that folder, then run the command again.",
                path=path,
                reason="hard_link",
            )
        if not stat.S_ISREG(st.st_mode) and path != "-" and not _is_stdin(fd, st):
            raise UnsafePathError(
                f"Refusing to read {path}: it is not a regular file but {_kind(st.st_mode)}. "
                "Name audit files, or folders of them, and run the command again.",
                path=path,
                reason="not_regular_file",
            )
        if sys.platform != "win32":
            os.set_blocking(fd, True)
        handle: IO[bytes] = stack.enter_context(os.fdopen(fd, "rb"))
    except BaseException:
        os.close(fd)
        raise
    if path.endswith(".gz"):
        import gzip

        return cast("IO[bytes]", stack.enter_context(gzip.GzipFile(fileobj=handle, mode="rb")))
    return handle


def _is_stdin(fd: int, st: os.stat_result) -> bool:
    """Tell whether ``st`` is this process's standard input (``/dev/stdin`` on a pipe)."""
    if fd == 0:
        # Standard input was closed, so descriptor 0 is the file just opened.
        return False
    try:
        own = os.fstat(0)
    except OSError:
        return False
    return st.st_ino != 0 and (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISDIR, "a folder"))
    return next((word for test, word in kinds if test(mode)), "not a file")


def _lines(handle: IO[bytes], limit: int) -> Iterator[tuple[int, Optional[bytes], str]]:
    """Yield ``(number, line, problem)``; a line longer than :data:`MAX_LINE` comes as ``None``.

    At most about ``limit`` bytes are read (after decompression); if more follow,
    the last item says so instead of a line.
    """
    number = read = 0
    while True:
        if read >= limit:
            if handle.read(1):
                yield number + 1, None, (f"the rest of the file was not read: only the first "
                                         f"{limit} bytes of a file are read")
            return
        line = handle.readline(MAX_LINE + 1)
        if not line:
            return
        read += len(line)
        number += 1
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n") and read < limit:
                line = handle.readline(MAX_LINE)
                read += len(line)
            yield number, None, f"longer than {MAX_LINE} bytes"
            continue
        yield number, line, ""


# Counting.

class _Group:
    """The counts of one host and ledger (or of everything, for the totals)."""

    def __init__(self) -> None:
        self.writes = 0
        self.outcomes: Counter[str] = Counter()
        self.modes: Counter[str] = Counter()
        self.missed = 0
        self.missing: Counter[str] = Counter()
        self.unprotected = 0
        self.ran_without: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.raised = 0
        self.raised_from: Counter[str] = Counter()
        self.platforms: Counter[str] = Counter()
        self.users: Counter[str] = Counter()
        self.first: Optional[datetime.datetime] = None
        self.last: Optional[datetime.datetime] = None

    def add(self, event: dict[str, Any], when: datetime.datetime) -> None:
        outcome = _word(event.get("outcome"))
        mode = _word(event.get("mode"))
        self.writes += 1
        self.outcomes[outcome] += 1
        self.modes[mode] += 1
        missing = [_word(name) for name in _list(event.get("missing"))]
        if missing:
            self.missed += 1
            self.missing.update(missing)
        protections = event.get("protections")
        if outcome == "ok" and isinstance(protections, dict):
            without = [_word(name) for name, mechanism in protections.items() if mechanism is None]
            self.unprotected += bool(without)
            self.ran_without.update(without)
        if outcome == "refused":
            self.refusals[_word(event.get("reason"))] += 1
        elif outcome != "ok":
            self.errors[_word(event.get("reason"))] += 1
        if event.get("raised_by_floor") is True:
            self.raised += 1
            self.raised_from[f"{_word(event.get('requested_mode'))}->{mode}"] += 1
        self.platforms[_word(event.get("platform"))] += 1
        self.users[_word(event.get("user"))] += 1
        self.first = when if self.first is None else min(self.first, when)
        self.last = when if self.last is None else max(self.last, when)

    def as_json(self) -> dict[str, Any]:
        def counts(counter: Counter[str]) -> dict[str, int]:
            return dict(sorted(counter.items()))

        return {
            "writes": self.writes,
            "outcomes": counts(self.outcomes),
            "modes": counts(self.modes),
            "missed": {"writes": self.missed, "protections": counts(self.missing)},
            "ran_without": {"writes": self.unprotected, "protections": counts(self.ran_without)},
            "refusals": counts(self.refusals),
            "errors": counts(self.errors),
            "raised_by_floor": {"writes": self.raised, "from": counts(self.raised_from)},
            "platforms": counts(self.platforms),
            "users": counts(self.users),
            "first": _iso(self.first),
            "last": _iso(self.last),
        }


def _word(value: Any) -> str:
    if isinstance(value, str) and value:
        return clean_text(value)
    return "unknown" if value is None or value == "" else json.dumps(value)[:80]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _problem(text: str) -> tuple[Optional[dict[str, Any]], str]:
    """Return the event in one line, or ``None`` and what is wrong with it."""
    try:
        value = json.loads(text)
    except RecursionError:
        return None, f"nested deeper than {MAX_DEPTH} levels"
    except ValueError:
        return None, "not JSON"
    if deeper_than(value, MAX_DEPTH):
        return None, f"nested deeper than {MAX_DEPTH} levels"
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    if not isinstance(value.get("event"), str):
        return None, "no event name"
    if not isinstance(value.get("timestamp"), str):
        return None, "no ISO 8601 timestamp"
    when, problem = _read_time(value["timestamp"])
    if when is None:
        return None, problem
    if value["event"] == "ledger.write" and not isinstance(value.get("outcome"), str):
        return None, "a ledger.write event without an outcome"
    return value, ""


def _entries(path: str) -> Iterator[tuple[int, Optional[dict[str, Any]], str, str]]:
    """Yield ``(line number, event or None, problem, text)`` for each non-blank line.

    Raises:
        UnsafePathError: The path is not a regular file (a FIFO, a device...).
        LedgerIOError: The file cannot be opened.
    """
    with contextlib.ExitStack() as stack:
        try:
            handle = _open(path, stack)
        except UnsafePathError:
            raise
        except OSError as exc:
            raise LedgerIOError(
                f"Could not read the audit file {path}: {exc.strerror or exc}. "
                "Check the path and run the command again.",
                path=path,
            ) from exc
        lines = _lines(handle, MAX_READ)
        number = 0
        while True:
            try:
                number, raw, problem = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError, zlib.error) as exc:
                yield number + 1, None, f"the rest of the file cannot be read ({exc})", ""
                return
            if raw is None:
                yield number, None, problem, ""
            elif raw.strip():
                event, problem = _decode(raw)
                yield number, event, problem, raw.decode("utf-8", "replace").strip()[:120]


def summarise(paths: list[str], since: Optional[datetime.datetime] = None) -> dict[str, Any]:
    """Read audit files and return the summary that ``--json`` prints.

    Raises:
        UnsafePathError: A path is not a regular file (a FIFO, a device...).
        LedgerIOError: A file cannot be opened.
    """
    totals = _Group()
    groups: dict[tuple[str, str], _Group] = {}
    files: list[dict[str, Any]] = []
    other: Counter[str] = Counter()
    malformed: list[dict[str, Any]] = []
    malformed_count = before = 0

    for path in paths:
        counts: Counter[str] = Counter()
        for number, event, problem, text in _entries(path):
            counts["lines"] += 1
            if event is None:
                counts["malformed"] += 1
                malformed_count += 1
                if len(malformed) < SAMPLES_JSON:
                    malformed.append({"file": clean_text(path), "line": number,
                                      "problem": clean_text(problem), "text": text})
                continue
            when = parse_time(event["timestamp"]) or datetime.datetime.min.replace(tzinfo=_UTC)
            if since is not None and when < since:
                before += 1
            elif event["event"] != "ledger.write":
                other[_word(event["event"])] += 1
            else:
                counts["writes"] += 1
                key = (_word(event.get("host")), _word(event.get("ledger")))
                groups.setdefault(key, _Group()).add(event, when)
                totals.add(event, when)
        files.append({"path": clean_text(path), "lines": counts["lines"],
                      "writes": counts["writes"], "malformed": counts["malformed"]})

    return {
        "files": files,
        "since": _iso(since),
        "writes": totals.writes,
        "other_events": dict(sorted(other.items())),
        "before_since": before,
        "malformed": {"lines": malformed_count, "samples": malformed},
        "totals": totals.as_json(),
        "groups": [
            dict({"host": host, "ledger": ledger}, **group.as_json())
            for (host, ledger), group in sorted(groups.items())
        ],
    }


def _decode(raw: bytes) -> tuple[Optional[dict[str, Any]], str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    return _problem(text)


# Showing.

def _shown(text: str) -> str:
    """Escape what a terminal would act on or cannot show: controls, bidi marks, surrogates."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _counts(counter: dict[str, int], none: str = "none") -> str:
    if not counter:
        return none
    return ", ".join(f"{_shown(name)} {count}" for name, count in
                     sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _some(part: dict[str, Any]) -> str:
    """Say how many writes, and which protections with how many each (or the same for all)."""
    from .protections import PROTECTIONS

    writes, names = part["writes"], part["protections"]
    if not writes:
        return "0 writes"
    if set(names.values()) == {writes}:
        known = [name for name in PROTECTIONS if name in names]
        listed = known + sorted(set(names) - set(known))
        return f"{_n(writes, 'write')}: " + ", ".join(_shown(name) for name in listed)
    return f"{_n(writes, 'write')}: {_counts(names)}"


def _row(out: TextIO, label: str, value: str, indent: int) -> None:
    import textwrap

    lead = " " * indent + f"{label:<13}"
    out.write(textwrap.fill(value, width=100, initial_indent=lead,
                            subsequent_indent=" " * len(lead), break_on_hyphens=False) + "\n")


def _table(summary: dict[str, Any], out: TextIO, configured: Optional[str]) -> None:
    files = summary["files"]
    if not files:
        if configured:
            out.write(f"No audit file at {_shown(configured)} yet: no write has been audited "
                      "there.\n")
        else:
            out.write("No audit files among the paths given.\n")
        return
    out.write(f"Audit files ({len(files)}):\n")
    for stats in files:
        out.write(f"  {_shown(stats['path'])}  {_n(stats['writes'], 'write')}, "
                  f"{stats['malformed']} malformed of {_n(stats['lines'], 'line')}\n")
    if summary["since"]:
        out.write(f"Since {summary['since']}: {summary['before_since']} earlier events "
                  "left out\n")
    totals = summary["totals"]
    out.write("\nAll hosts and ledgers\n")
    _row(out, "writes", f"{summary['writes']} ({_counts(totals['outcomes'])})", 2)
    _row(out, "missed", _some(totals["missed"]) + "  (protections the mode wanted)", 2)
    _row(out, "ran without", _some(totals["ran_without"]) + "  (ok writes)", 2)
    _row(out, "raised", f"{_n(totals['raised_by_floor']['writes'], 'write')} by a machine floor",
         2)
    if summary["other_events"]:
        _row(out, "other events", _counts(summary["other_events"]), 2)
    _row(out, "malformed", _n(summary["malformed"]["lines"], "line"), 2)

    for group in summary["groups"]:
        flag = "!" if group["missed"]["writes"] else " "
        out.write(f"\n{flag} host {_shown(group['host'])}  ledger {_shown(group['ledger'])}\n")
        raised = group["raised_by_floor"]
        rows = [
            ("writes", f"{group['writes']} ({_counts(group['outcomes'])})"),
            ("modes", _counts(group["modes"])),
            ("missed", _some(group["missed"])),
            ("ran without", _some(group["ran_without"])),
            ("refusals", _counts(group["refusals"])),
            ("errors", _counts(group["errors"])),
            ("raised", _n(raised["writes"], "write")
             + (f": {_counts(raised['from'])}" if raised["writes"] else "")),
            ("platforms", _counts(group["platforms"])),
            ("between", f"{group['first']} and {group['last']}"),
        ]
        for label, value in rows:
            _row(out, label, value, 4)

    samples = summary["malformed"]["samples"]
    if samples:
        out.write(f"\nMalformed lines ({summary['malformed']['lines']}):\n")
        for sample in samples[:SAMPLES_TABLE]:
            out.write(f"  {_shown(sample['file'])}:{sample['line']}  {_shown(sample['problem'])}: "
                      f"{json.dumps(sample['text'], ensure_ascii=True)[:100]}\n")
        if summary["malformed"]["lines"] > SAMPLES_TABLE:
            out.write(f"  ... and {summary['malformed']['lines'] - SAMPLES_TABLE} more "
                      "(--json lists up to 100)\n")


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Summarise the audit files named in ``args`` (or the configured ones)."""
    since = parse_since(args.since) if args.since else None
    paths, configured = _files(args)
    summary = summarise(paths, since)
    if args.json:
        text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    else:
        buffer = io.StringIO()
        _table(summary, buffer, configured)
        text = buffer.getvalue()
    try:
        out.write(text)
    except UnicodeEncodeError:
        # An output that cannot carry some text (a narrow code page): write it escaped.
        if args.json:
            out.write(json.dumps(summary, indent=2) + "\n")
        else:
            encoding = getattr(out, "encoding", None) or "ascii"
            out.write(text.encode(encoding, "backslashreplace").decode(encoding))
    return EXIT_OK
