"""Shared fixtures: every test runs with its own HOME, config, state and ledger folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
# Copies of the ledger and signal hashes written by the hook this product replaces.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEDGERCTL = [sys.executable, "-m", "ledger"]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point HOME and the XDG folders into the test's own temp folder."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    values = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    if os.name == "nt":
        # platformdirs and expanduser look at these on Windows, not at HOME/XDG.
        values.update(
            USERPROFILE=str(home),
            APPDATA=str(home / "AppData" / "Roaming"),
            LOCALAPPDATA=str(home / "AppData" / "Local"),
            WIN_PD_OVERRIDE_APPDATA=str(home / "AppData" / "Roaming"),
            WIN_PD_OVERRIDE_LOCAL_APPDATA=str(home / "AppData" / "Local"),
        )
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    for key in ("PF_ESCALATION_LEDGER_DIR", "LEDGER_POLICY"):
        monkeypatch.delenv(key, raising=False)
    return values


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    """A private folder (0700) for a ledger."""
    folder = tmp_path / "ledgers"
    folder.mkdir(mode=0o700)
    return folder


def run_cli(*args: str, env: Optional[dict[str, str]] = None, input: Optional[str] = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ledger ARGS`` in a fresh process, as a hook would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(LEDGERCTL + list(args), capture_output=True, text=True, env=full_env,
                          input=input, timeout=timeout)


def audit_events(path: Path) -> list[dict[str, Any]]:
    """Parse every line of an audit file as JSON (failing the test if one does not parse)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def default_audit_file() -> Path:
    """The audit file that the isolated environment's defaults point at."""
    from ledger.audit import default_audit_path

    path = Path(default_audit_path())
    assert str(path).startswith(os.environ["HOME"] if os.name != "nt" else os.environ["USERPROFILE"])
    return path
