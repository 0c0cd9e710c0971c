"""The whole ``ledger`` package type-checks under mypy strict, as Linux and as Windows.

This is part of the required suite (no skip, no xfail): a module that only
type-checks on the platform it was written on would break the other one. mypy
comes with the ``test`` extra; if it is missing the test fails and says so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("platform", ["linux", "win32", "darwin"])
def test_mypy_strict_is_clean(platform: str, tmp_path: Path) -> None:
    """``mypy --strict --platform PLATFORM ledger`` exits 0 (the output is shown if not)."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--platform", platform,
         "--cache-dir", str(tmp_path / "mypy-cache"), "ledger"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert "No module named mypy" not in result.stderr, "install the test extra: .[test]"
    assert result.returncode == 0, f"mypy --platform {platform}:\n{result.stdout}{result.stderr}"
