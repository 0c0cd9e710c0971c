"""A host program's structlog and logging setup is the same before and after using the library.

Each case runs in a fresh interpreter, so that global logging state is clean: the
host sets up structlog, logging or both, before or after importing and using the
library, and compares a snapshot of every global setting taken around the
library's writes (one ok, one refused).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import audit_events

HOST = textwrap.dedent(
    r"""
    import io, json, logging, os, sys
    import structlog

    setup, order, folder, result_path = sys.argv[1:5]
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.name + ":" + record.getMessage())

    class Only(logging.Filter):
        def filter(self, record):
            return True

    class HostContext(dict):
        pass

    host_out = io.StringIO()

    def configure():
        if setup in ("structlog", "both"):
            structlog.configure(
                processors=[structlog.processors.add_log_level,
                            structlog.processors.JSONRenderer(sort_keys=True)],
                wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
                context_class=HostContext,
                logger_factory=structlog.PrintLoggerFactory(file=host_out),
                cache_logger_on_first_use=True,
            )
        if setup in ("logging", "both"):
            logging.basicConfig(level=logging.DEBUG, handlers=[Keep()], format="%(message)s")
            logging.getLogger().addFilter(Only())
            logging.getLogger("host.app").setLevel(logging.WARNING)

    def snapshot():
        root = logging.getLogger()
        config = structlog.get_config()
        return {
            "structlog_configured": structlog.is_configured(),
            "structlog": {key: [id(item) for item in value] if isinstance(value, list)
                          else repr(value) for key, value in sorted(config.items())},
            "structlog_ids": {key: id(value) for key, value in sorted(config.items())},
            "root_level": root.level,
            "root_handlers": [(id(h), h.level, id(h.formatter), [id(f) for f in h.filters])
                              for h in root.handlers],
            "root_filters": [id(f) for f in root.filters],
            "root_propagate": root.propagate,
            "disabled": logging.root.manager.disable,
            "loggers": {name: (getattr(lg, "level", None), len(getattr(lg, "handlers", [])))
                        for name, lg in sorted(logging.Logger.manager.loggerDict.items())},
            "last_resort": id(logging.lastResort),
            "logger_class": repr(logging.getLoggerClass()),
        }

    def use_library(tag):
        import ledger
        from ledger.errors import UnsafePathError
        from ledger.policy import Policy

        policy = Policy(audit_log=os.path.join(folder, "audit.jsonl"))
        ledger.Ledger(os.path.join(folder, "ok", "book.json"), policy=policy).append({"tag": tag})
        bad = os.path.join(folder, "bad")
        os.makedirs(bad, mode=0o700, exist_ok=True)
        if not os.path.lexists(os.path.join(bad, "book.json")):
            os.symlink(os.path.join(folder, "victim"), os.path.join(bad, "book.json"))
        try:
            ledger.Ledger(os.path.join(bad, "book.json"), policy=policy).append({"tag": tag})
        except UnsafePathError:
            pass

    def host_logs(tag):
        if setup in ("structlog", "both"):
            structlog.get_logger("host").info("host.event", tag=tag)
        if setup in ("logging", "both"):
            logging.getLogger("host.app").warning("host warning %s", tag)

    snapshots = {"start": snapshot()}
    if order == "before":
        configure()
        snapshots["configured"] = snapshot()
        use_library("first")
        snapshots["after_use"] = snapshot()
    else:
        use_library("first")
        snapshots["after_first_use"] = snapshot()
        configure()
        snapshots["configured"] = snapshot()
        use_library("second")
        snapshots["after_use"] = snapshot()
    host_logs("end")
    with open(result_path, "w") as handle:
        json.dump({"snapshots": snapshots, "records": records,
                   "host_out": host_out.getvalue().splitlines()}, handle)
    """
)


@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("setup", ["structlog", "logging", "both"])
def test_host_logging_is_untouched(tmp_path: Path, setup: str, order: str) -> None:
    """Setting up logging before or after using the library gives the same configuration."""
    folder = tmp_path / "work"
    folder.mkdir(mode=0o700)
    result_path = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-c", HOST, setup, order, str(folder), str(result_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == ""
    result = json.loads(result_path.read_text())
    snaps = result["snapshots"]

    assert snaps["after_use"] == snaps["configured"]
    if order == "after":
        assert snaps["after_first_use"] == snaps["start"]
        assert snaps["start"]["structlog_configured"] is False
    assert snaps["configured"]["structlog_configured"] is (setup != "logging")

    events = audit_events(folder / "audit.jsonl")
    uses = 1 if order == "before" else 2
    assert [e["outcome"] for e in events] == ["ok", "refused"] * uses
    assert not any("host" in json.dumps(e.get("tag", "")) for e in events)

    if setup in ("logging", "both"):
        assert result["records"] == ["host.app:host warning end"]
    else:
        assert result["records"] == []
    if setup in ("structlog", "both"):
        [line] = result["host_out"]
        assert json.loads(line) == {"event": "host.event", "level": "info", "tag": "end"}
    else:
        assert result["host_out"] == []
