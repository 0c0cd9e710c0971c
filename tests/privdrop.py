"""Run children under other, unprivileged uids, for the multi-user tests.

A child that drops its privileges cannot read ``/root`` or a private checkout, so it
runs a Python interpreter that every user may run, with ``PYTHONPATH`` pointing at a
world-readable copy of the ``ledger`` package and of its pure-Python dependencies.
That copy, and every folder the children share, live in one folder under ``/tmp``
(mode 0755) made for the test session and removed at its end. No system user is
created: the children use bare numeric uids and gids.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import pytest

ATTACKER = 61001
VICTIM = 61002
OTHER = 61003

# Packages the copied ``ledger`` imports, the optional ones only where they are installed.
_PACKAGES = ("ledger", "structlog", "platformdirs")
_OPTIONAL = ("tomli", "typing_extensions")
_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3")

PRELUDE = textwrap.dedent(
    """
    import os, sys
    _want = int(os.environ["PRIVDROP_UID"])
    if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (_want,) * 4 or os.getgroups():
        sys.stderr.write("privileges were not dropped\\n")
        sys.exit(99)
    """
)


def skip_reason() -> Optional[str]:
    """Return why children cannot run as other uids here, or ``None`` if they can."""
    if os.name != "posix" or sys.platform == "win32":
        return "Starting children under other uids is a POSIX test; Windows has its own tests."
    if os.geteuid() != 0:
        return "Starting children under other uids needs root; CI runs this suite as root."
    return None


requires_root = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def chmod_tree(root: Path, dir_mode: int = 0o755, file_mode: int = 0o644) -> None:
    """Make every folder under ``root`` ``dir_mode`` and every file ``file_mode``."""
    os.chmod(root, dir_mode)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), dir_mode)
        for name in files:
            os.chmod(os.path.join(folder, name), file_mode)


def _source_of(module: str) -> Optional[Path]:
    """Return the package folder or module file that ``import module`` loads, if any."""
    try:
        loaded = importlib.import_module(module)
    except ImportError:
        return None
    location = Path(getattr(loaded, "__file__", "") or "")
    if location.name == "__init__.py":
        return location.parent
    if location.suffix == ".py":
        return location
    # An editable install can present the package as a namespace: use its real folder.
    for folder in getattr(loaded, "__path__", []):
        if (Path(folder) / "__init__.py").is_file():
            return Path(folder)
    return None


def _copy_packages(dest: Path) -> None:
    dest.mkdir()
    for module in _PACKAGES + _OPTIONAL:
        source = _source_of(module)
        if source is None:
            if module in _PACKAGES:
                raise RuntimeError(f"cannot find the {module} package to copy")
            continue
        if source.is_dir():
            shutil.copytree(source, dest / source.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, dest / source.name)
    chmod_tree(dest)


class Runtime:
    """A Python and a world-readable ``PYTHONPATH`` that dropped children can use.

    Attributes:
        area: A folder under /tmp (mode 0755) for everything the children share.
        python: An interpreter that an unprivileged uid can run.
        pythonpath: The world-readable copy of ``ledger`` and its dependencies.
    """

    def __init__(self, area: Path, python: str, pythonpath: Path) -> None:
        self.area = area
        self.python = python
        self.pythonpath = pythonpath
        self._count = 0
        self._children: list[subprocess.Popen[str]] = []

    def scratch(self, label: str) -> Path:
        """Return a new empty folder (root's, mode 0755) under the shared area."""
        self._count += 1
        folder = self.area / f"{label}-{self._count}"
        folder.mkdir(mode=0o755)
        os.chmod(folder, 0o755)
        return folder

    def env(self, uid: int, home: Path, **extra: str) -> dict[str, str]:
        """Return a clean environment for a child of ``uid`` whose home is ``home``."""
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.pythonpath),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PRIVDROP_UID": str(uid),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
        }
        env.update(extra)
        return env

    def popen(self, uid: int, script: str, args: Sequence[str], env: dict[str, str],
              **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``python -c script args`` as ``uid`` (gid ``uid``, no extra groups)."""
        env = dict(env, PRIVDROP_UID=str(uid))
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(
            [self.python, "-c", PRELUDE + textwrap.dedent(script), *args],
            env=env, cwd=str(self.area), user=uid, group=uid, extra_groups=[], umask=0o022,
            text=True, **kwargs,
        )
        self._children.append(proc)
        return proc

    def run(self, uid: int, script: str, args: Sequence[str], env: dict[str, str],
            timeout: float = 60, input: Optional[str] = None) -> subprocess.CompletedProcess[str]:
        """Run ``python -c script args`` as ``uid`` and wait at most ``timeout`` seconds."""
        proc = self.popen(uid, script, args, env,
                          stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def close(self) -> None:
        """End any child still running and remove the shared area."""
        for proc in self._children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._children.clear()
        shutil.rmtree(self.area, ignore_errors=True)


_PROBE = (
    "import json, sys, ledger.cli, ledger.store, structlog, platformdirs; "
    "print(json.dumps([sys.version_info >= (3, 9), ledger.__file__]))"
)


def _probe(python: str, pythonpath: Path, area: Path) -> bool:
    """Tell whether ``python`` runs as an unprivileged uid and imports the copied package."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pythonpath), "HOME": str(area),
           "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run([python, "-c", _PROBE], env=env, cwd=str(area), user=VICTIM,
                              group=VICTIM, extra_groups=[], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    if done.returncode != 0:
        return False
    try:
        recent, where = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False
    return bool(recent) and str(where).startswith(str(pythonpath))


def build_runtime() -> Runtime:
    """Copy the packages to a world-readable folder and find a Python that can use them."""
    area = Path(tempfile.mkdtemp(prefix="ledger-privdrop-", dir="/tmp"))
    os.chmod(area, 0o755)
    try:
        site = area / "site"
        _copy_packages(site)
        candidates = [*_CANDIDATES, sys.executable, getattr(sys, "_base_executable", "")]
        for python in dict.fromkeys(c for c in candidates if c and os.path.exists(c)):
            if _probe(python, site, area):
                # Compile once as root so that every child starts from the same bytecode.
                subprocess.run([python, "-m", "compileall", "-q", str(site)],
                               capture_output=True, timeout=120)
                chmod_tree(site)
                return Runtime(area, python, site)
    except BaseException:
        shutil.rmtree(area, ignore_errors=True)
        raise
    shutil.rmtree(area, ignore_errors=True)
    pytest.skip("No Python interpreter here can be run by an unprivileged uid "
                "(tried /usr/bin/python3 and the test interpreter).")


@pytest.fixture(scope="session")
def runtime() -> Iterator[Runtime]:
    """The session's interpreter and package copy for children of other uids."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    built = build_runtime()
    try:
        yield built
    finally:
        built.close()
