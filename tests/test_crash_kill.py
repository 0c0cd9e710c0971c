"""Writers killed with SIGKILL: the ledger is always the old or the new version, never lost.

Several writer processes append in a loop and print the id of each record once its
append returned; a killer ends random writers at random moments (hundreds of times)
and starts new ones. After every kill the ledger must parse, and every record a
writer reported must be in it. Deterministic kills at each step of the write flow
complete the picture.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
import pytest

from conftest import audit_events, default_audit_file

pytestmark = pytest.mark.skipif(os.name == "nt", reason="SIGKILL is a POSIX signal")

WRITERS = 6
MIN_KILLS = 200

LOOP_WRITER = textwrap.dedent(
    """
    import sys
    from ledger import Ledger
    from ledger.policy import Policy
    path, name = sys.argv[1], sys.argv[2]
    ledger = Ledger(path, policy=Policy(lock_timeout=120.0))
    seq = 0
    while True:
        ledger.append({"id": f"{name}-{seq}"})
        sys.stdout.write(f"{name}-{seq}\\n")
        sys.stdout.flush()
        seq += 1
    """
)


def _temps(folder: Path, name: str) -> list[str]:
    return [entry for entry in os.listdir(folder)
            if entry.startswith(f".{name}.") and entry.endswith(".tmp")]


def _ids(path: Path) -> list[str]:
    """Parse the ledger (failing the test if it is not a valid one) and return its ids."""
    records = json.loads(path.read_bytes())
    assert isinstance(records, list)
    assert all(isinstance(record, dict) for record in records)
    ids = [record["id"] for record in records]
    assert len(ids) == len(set(ids)), "a record was written twice"
    return ids


class Writer:
    """One writer process of one generation; ``name`` is unique across the run."""

    def __init__(self, path: Path, name: str, lifetime: float) -> None:
        self.name = name
        self.kill_at = time.monotonic() + lifetime
        self.proc = subprocess.Popen([sys.executable, "-c", LOOP_WRITER, str(path), name],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def kill(self) -> tuple[bool, list[str]]:
        """SIGKILL the writer; return whether it was still running, and the ids it reported."""
        running = self.proc.poll() is None
        if running:
            self.proc.kill()
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == -signal.SIGKILL, err
        return running, out.split()


@pytest.mark.slow
def test_hundreds_of_random_kills_lose_no_reported_record(ledger_dir: Path) -> None:
    """Six looping writers, killed at random moments at least 200 times and restarted:
    after every kill the ledger parses, holds no record twice and every record whose
    writer reported success; each writer's records form an unbroken run; the next
    clean write leaves no temp file behind."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    path = ledger_dir / "book.json"
    generation = 0

    def start() -> Writer:
        nonlocal generation
        generation += 1
        return Writer(path, f"w{generation}", rng.uniform(0.1, 1.0))

    writers = [start() for _ in range(WRITERS)]
    reported: dict[str, list[str]] = {}
    kills = 0
    deadline = time.monotonic() + 90
    try:
        while kills < MIN_KILLS:
            assert time.monotonic() < deadline, f"only {kills} kills in time (seed {seed})"
            index = min(range(WRITERS), key=lambda i: writers[i].kill_at)
            time.sleep(max(0.0, writers[index].kill_at - time.monotonic()))
            victim = writers[index]
            running, ids = victim.kill()
            kills += running
            reported[victim.name] = ids
            writers[index] = start()

            if path.exists():
                present = set(_ids(path))
                missing = {i for names in reported.values() for i in names} - present
                assert not missing, f"reported but lost: {sorted(missing)[:5]} (seed {seed})"
    finally:
        for writer in writers:
            running, ids = writer.kill()
            kills += running
            reported[writer.name] = ids

    from ledger import Ledger

    Ledger(path).append({"id": "final"})
    assert _temps(ledger_dir, "book.json") == []
    ids = _ids(path)
    assert ids[-1] == "final"
    by_writer: dict[str, list[int]] = {}
    for record_id in ids[:-1]:
        name, seq = record_id.rsplit("-", 1)
        by_writer.setdefault(name, []).append(int(seq))
    for name, seqs in reported.items():
        present = by_writer.get(name, [])
        # In order, no gap, and at most one record more than reported (killed after the
        # replace but before it could print the id).
        assert present == list(range(len(present))), (name, seed)
        assert len(seqs) <= len(present) <= len(seqs) + 1, (name, seed)
    assert set(by_writer) <= set(reported)
    assert sum(len(seqs) for seqs in reported.values()) > 0
    assert kills >= MIN_KILLS
    # One audit line per write attempt, each a whole JSON object, despite the kills.
    assert all(event["event"] == "ledger.write" for event in audit_events(default_audit_file()))


# Deterministic kills at each step of the write flow.

STEP_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from ledger import Ledger
    path, step = sys.argv[1], sys.argv[2]
    ledger = Ledger(path)

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    real_write, real_fsync, real_replace = os.write, os.fsync, os.replace
    calls = {"fsync": 0}

    def write(fd, data):
        # Half of the new ledger reaches the temp file, then the writer dies.
        if step == "mid-temp-write" and bytes(data[:1]) == b"[":
            real_write(fd, bytes(data[: len(data) // 2]))
            die()
        return real_write(fd, data)

    def fsync(fd):
        calls["fsync"] += 1
        if step == "before-temp-fsync" and calls["fsync"] == 1:
            die()
        if step == "before-folder-fsync" and calls["fsync"] == 2:
            die()
        return real_fsync(fd)

    def replace(*args, **kwargs):
        if step == "before-replace":
            die()
        return real_replace(*args, **kwargs)

    def mutate(records):
        if step == "holding-the-lock":
            die()
        return records + [{"k": "new"}]

    os.write, os.fsync, os.replace = write, fsync, replace
    ledger.update(mutate)
    """
)

STEPS = {
    "holding-the-lock": "old",
    "mid-temp-write": "old",
    "before-temp-fsync": "old",
    "before-replace": "old",
    "before-folder-fsync": "new",
}


@pytest.mark.parametrize("step", sorted(STEPS))
def test_writer_killed_at_each_step_leaves_old_or_new_ledger(ledger_dir: Path, step: str) -> None:
    """A writer killed at a given step of the write flow: the ledger is exactly the old
    or exactly the new version; the next writer waits for nobody, removes the dead
    writer's temp file and keeps every record."""
    from ledger import Ledger

    path = ledger_dir / "book.json"
    Ledger(path).append({"k": "old"})
    old = path.read_bytes()

    done = subprocess.run([sys.executable, "-c", STEP_KILLER, str(path), step],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr

    expected = [{"k": "old"}] if STEPS[step] == "old" else [{"k": "old"}, {"k": "new"}]
    assert json.loads(path.read_bytes()) == expected
    if STEPS[step] == "old":
        assert path.read_bytes() == old
    left = 1 if step in ("mid-temp-write", "before-temp-fsync", "before-replace") else 0
    assert len(_temps(ledger_dir, "book.json")) == left

    Ledger(path).append({"k": "next"})
    assert json.loads(path.read_bytes()) == expected + [{"k": "next"}]
    assert _temps(ledger_dir, "book.json") == []


def test_power_loss_order_file_fsync_then_replace_then_folder_fsync(
    ledger_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What survives a power cut depends on the order: the new content is flushed (on the
    temp file's own inode) before the replace, and the folder is flushed after it."""
    import stat

    from ledger import Ledger, _posix

    calls: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        calls.append(("fsync folder" if stat.S_ISDIR(st.st_mode) else "fsync file", st.st_ino))
        real_fsync(fd)

    def replace(src: str, dst: str, **kwargs: int) -> None:
        real_replace(src, dst, **kwargs)
        calls.append(("replace", os.stat(ledger_dir / "book.json").st_ino))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    if getattr(_posix, "_F_FULLFSYNC", None) is not None:
        monkeypatch.setattr(_posix, "_full_fsync", lambda fd: fsync(fd))

    Ledger(ledger_dir / "book.json").append({"k": 1})

    ledger_inode = os.stat(ledger_dir / "book.json").st_ino
    folder_inode = os.stat(ledger_dir).st_ino
    ours = [call for call in calls if call[1] in (ledger_inode, folder_inode)]
    assert ours == [("fsync file", ledger_inode), ("replace", ledger_inode),
                    ("fsync folder", folder_inode)]
