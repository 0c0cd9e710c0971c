"""The Windows backend on a real Windows runner: real junctions, links, readers and processes.

These tests call the real seam (:class:`ledger._winapi.WinApi`), so they prove the
facts that ``tests/test_windows_backend.py`` takes from the fake: how Windows
reports a junction, a refused replace, a mandatory byte lock. Elsewhere they are
skipped with the reason. They pass ``audit=False``: on Windows the audit file's
default folder comes from the user's real profile, which the test fixtures do not
redirect.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

import ledger._windows as windows
from ledger import _winapi as w
from ledger import store
from ledger._backend import Backend
from ledger._legacy import LegacyBackend
from ledger._winapi import WinApi, winerror_of
from ledger.errors import LedgerIOError, LockTimeoutError, UnsafePathError
from ledger.policy import Policy
from ledger.protections import PROTECTIONS, Report
from ledger.store import Ledger

pytestmark = [
    pytest.mark.windows_only,
    pytest.mark.skipif(sys.platform != "win32", reason="needs a real Windows runner"),
]


class RecordingApi(WinApi):
    """The real calls, plus a record of every refused replace and a hook on it."""

    def __init__(self) -> None:
        self.refusals: List[Optional[int]] = []
        self.on_refused: Optional[Callable[[int], None]] = None
        self.before_read: Optional[Callable[[int], None]] = None

    def move_file(self, src: str, dst: str, flags: int) -> None:
        try:
            super().move_file(src, dst, flags)
        except OSError as exc:
            self.refusals.append(winerror_of(exc))
            if self.on_refused is not None:
                self.on_refused(len(self.refusals))
            raise

    def read(self, fd: int, size: int) -> bytes:
        if self.before_read is not None:
            self.before_read(fd)
        return super().read(fd, size)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> RecordingApi:
    """The real Win32 calls, recorded, wired into the write flow."""
    recording = RecordingApi()

    def backend_for(mode: str) -> Backend:
        return LegacyBackend() if mode == "legacy" else windows.WindowsBackend(api=recording)

    monkeypatch.setattr(store, "backend_for", backend_for)
    return recording


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A ledger folder of the user's, in the runner's temp folder."""
    path = Path(os.path.realpath(tmp_path)) / "ledgers"
    path.mkdir()
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A folder with files an attacker would like the ledger to overwrite."""
    target = Path(os.path.realpath(tmp_path)) / "victim"
    target.mkdir()
    (target / "book.json").write_text("precious\n")
    (target / "inner").mkdir()
    yield target


def _ledger(path: Path, mode: str = "secure", timeout: float = 10.0) -> Ledger:
    return Ledger(path, policy=Policy(mode=mode, lock_timeout=timeout), audit=False)


def _snapshot(folder: Path) -> Dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.iterdir() if p.is_file()}


def _junction(link: Path, target: Path) -> None:
    import _winapi

    _winapi.CreateJunction(str(target), str(link))


def _temps(folder: Path) -> List[str]:
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


# What a real write gets.


def test_every_protection_is_applied_on_a_local_drive(api: RecordingApi, folder: Path) -> None:
    """A secure write in the runner's temp folder applies all protections, nothing missing."""
    offered = windows.WindowsBackend().capabilities()
    assert all(offered[name] for name in PROTECTIONS), offered

    result = _ledger(folder / "book.json").append({"n": 1})
    assert result.missing == []
    assert result.protections["lock"] == "msvcrt.locking"
    assert result.protections["local_fs"] == "GetDriveTypeW:fixed"
    assert json.loads((folder / "book.json").read_text()) == [{"n": 1}]


def test_seam_facts_on_this_machine(folder: Path) -> None:
    """Owner, drive type, final path and ProgramData come back as the backend expects."""
    real = WinApi()
    handle = real.create_file(str(folder), windows._DIR_ACCESS, windows._DIR_SHARE,
                              w.OPEN_EXISTING, windows._DIR_FLAGS)
    try:
        info = real.file_info(handle)
        assert info.attributes & w.FILE_ATTRIBUTE_DIRECTORY
        assert not info.attributes & w.FILE_ATTRIBUTE_REPARSE_POINT
        assert os.path.normcase(real.final_path(handle)) == os.path.normcase(str(folder))
        owner = real.owner_sid(handle)
        assert owner == real.current_user_sid() or (
            owner == w.SID_ADMINISTRATORS and real.is_admin_member())
        assert windows.loose_writers(real.dacl(handle), real.current_user_sid()) == []
    finally:
        real.close_handle(handle)
    assert real.drive_type(real.volume_root(str(folder))) == w.DRIVE_FIXED

    program_data = w.program_data_folder()
    assert os.path.isdir(program_data)
    if os.environ.get("ProgramData"):
        assert os.path.normcase(program_data) == os.path.normcase(os.environ["ProgramData"])


def test_short_name_of_the_folder_is_accepted(api: RecordingApi, folder: Path) -> None:
    """An 8.3 short path to the folder is the same folder, not a changed path."""
    import ctypes

    deep = folder / "a long folder name"
    deep.mkdir()
    buffer = ctypes.create_unicode_buffer(1024)
    if not ctypes.windll.kernel32.GetShortPathNameW(str(deep), buffer, 1024):
        pytest.skip("this volume gives no short names")
    if buffer.value == str(deep):
        pytest.skip("8.3 names are disabled on this volume")
    _ledger(Path(buffer.value) / "book.json").append({"n": 1})
    assert json.loads((deep / "book.json").read_text()) == [{"n": 1}]


# Junctions, links, hard links.


def test_junction_in_place_of_the_folder_is_refused(api: RecordingApi, tmp_path: Path,
                                                    victim: Path) -> None:
    """A junction made with _winapi.CreateJunction as the folder: exit 77, target untouched."""
    before = _snapshot(victim)
    link = Path(os.path.realpath(tmp_path)) / "ledgers-link"
    _junction(link, victim)
    try:
        with pytest.raises(UnsafePathError) as refused:
            _ledger(link / "book.json").append({"n": 1})
        assert refused.value.exit_code == 77
        assert refused.value.reason == "junction"
        assert _snapshot(victim) == before
        assert sorted(os.listdir(victim)) == ["book.json", "inner"]
    finally:
        os.rmdir(link)


def test_junction_made_with_mklink_as_an_ancestor_is_refused(api: RecordingApi, tmp_path: Path,
                                                             victim: Path) -> None:
    """A junction from ``mklink /J`` two levels up: exit 77, nothing written below its target."""
    link = Path(os.path.realpath(tmp_path)) / "profile-link"
    made = subprocess.run(["cmd", "/c", "mklink", "/J", str(link), str(victim)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    try:
        with pytest.raises(UnsafePathError) as refused:
            _ledger(link / "inner" / "book.json").append({"n": 1})
        assert refused.value.exit_code == 77
        assert os.listdir(victim / "inner") == []
    finally:
        os.rmdir(link)


def test_symlink_at_the_ledger_name_is_refused(api: RecordingApi, folder: Path,
                                               victim: Path) -> None:
    """A file symlink at the ledger name (if this runner may create one): exit 77, target kept."""
    before = _snapshot(victim)
    try:
        os.symlink(victim / "book.json", folder / "book.json")
    except OSError as exc:
        pytest.skip(f"this runner may not create symbolic links (Developer Mode or "
                    f"SeCreateSymbolicLinkPrivilege is needed): {exc}")
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").append({"n": 1})
    assert refused.value.reason == "symlink"
    assert _snapshot(victim) == before


def test_directory_symlink_as_the_folder_is_refused(api: RecordingApi, tmp_path: Path,
                                                    victim: Path) -> None:
    """A directory symlink as the folder (if this runner may create one): exit 77."""
    link = Path(os.path.realpath(tmp_path)) / "dirlink"
    try:
        os.symlink(victim, link, target_is_directory=True)
    except OSError as exc:
        pytest.skip(f"this runner may not create symbolic links: {exc}")
    try:
        with pytest.raises(UnsafePathError) as refused:
            _ledger(link / "book.json").append({"n": 1})
        assert refused.value.reason == "symlink"
        assert sorted(os.listdir(victim)) == ["book.json", "inner"]
    finally:
        os.rmdir(link)


def test_hard_link_is_refused(api: RecordingApi, folder: Path, victim: Path) -> None:
    """A ledger with a second hard link (no privilege needed on NTFS): exit 77."""
    os.link(victim / "book.json", folder / "book.json")
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").append({"n": 1})
    assert refused.value.reason == "hard_link"
    assert (victim / "book.json").read_text() == "precious\n"


# Readers and the replace.


def test_reader_holding_the_ledger_delays_then_lets_the_writer_through(
        api: RecordingApi, folder: Path) -> None:
    """Python's open() (no delete sharing) blocks the rename; once it closes, the write goes on."""
    book = folder / "book.json"
    _ledger(book).append({"n": 1})
    reader = open(book, "rb")

    def close_reader(refusals: int) -> None:
        reader.close()

    api.on_refused = close_reader
    try:
        _ledger(book).append({"n": 2})
    finally:
        reader.close()

    assert api.refusals and set(api.refusals) <= {w.ERROR_ACCESS_DENIED,
                                                   w.ERROR_SHARING_VIOLATION}
    assert json.loads(book.read_text()) == [{"n": 1}, {"n": 2}]
    assert _temps(folder) == []


def test_reader_that_never_closes_gives_74(api: RecordingApi, folder: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader kept open past the retry bound: exit 74, the old ledger intact, no temp left."""
    monkeypatch.setattr(windows, "REPLACE_RETRY_SECONDS", 0.5)
    book = folder / "book.json"
    _ledger(book).append({"n": 1})
    before = book.read_bytes()
    with open(book, "rb"):
        with pytest.raises(LedgerIOError) as blocked:
            _ledger(book).append({"n": 2})
    assert blocked.value.exit_code == 74
    assert blocked.value.reason == "replace_blocked"
    assert book.read_bytes() == before
    assert _temps(folder) == []


def test_the_products_own_reader_only_delays_a_writer(api: RecordingApi, folder: Path) -> None:
    """A product read paused with its handle open: the writer's rename is refused (a classic
    rename replaces no open file) and retried, and goes through once the read is over."""
    book = folder / "book.json"
    _ledger(book).append({"n": 1})
    reading, release = threading.Event(), threading.Event()
    seen: List[List[Dict[str, Any]]] = []

    def pause(fd: int) -> None:
        if not reading.is_set():
            reading.set()
            release.wait(30)

    api.before_read = pause
    reader = threading.Thread(target=lambda: seen.append(_ledger(book).records()))
    reader.start()
    assert reading.wait(30)
    api.before_read = None
    api.on_refused = lambda refusals: release.set()
    try:
        _ledger(book).append({"n": 2})
    finally:
        release.set()
        reader.join(30)
    assert api.refusals
    assert seen == [[{"n": 1}]]
    assert json.loads(book.read_text()) == [{"n": 1}, {"n": 2}]


def test_read_only_ledger_is_refused_not_cleared(api: RecordingApi, folder: Path) -> None:
    """A ledger with the read-only attribute: exit 74, content and attribute unchanged."""
    book = folder / "book.json"
    _ledger(book).append({"n": 1})
    before = book.read_bytes()
    os.chmod(book, stat.S_IREAD)
    try:
        with pytest.raises(LedgerIOError) as refused:
            _ledger(book).append({"n": 2})
        assert refused.value.reason == "read_only"
        assert book.read_bytes() == before
        assert os.stat(book).st_file_attributes & stat.FILE_ATTRIBUTE_READONLY
    finally:
        os.chmod(book, stat.S_IREAD | stat.S_IWRITE)


# Locks.


def test_msvcrt_locks_are_mandatory_and_positional(folder: Path) -> None:
    """Byte 0 locked through one descriptor cannot be read or locked through another."""
    import msvcrt

    path = folder / "x.lock"
    path.write_bytes(b"\0note")
    first = os.open(path, os.O_RDWR)
    second = os.open(path, os.O_RDWR)
    try:
        msvcrt.locking(first, msvcrt.LK_NBLCK, 1)
        with pytest.raises(PermissionError):
            msvcrt.locking(second, msvcrt.LK_NBLCK, 1)
        with pytest.raises(PermissionError):
            os.read(second, 1)
        os.lseek(second, 1, os.SEEK_SET)
        assert os.read(second, 4) == b"note"
        os.lseek(first, 3, os.SEEK_SET)
        with pytest.raises(OSError):
            msvcrt.locking(first, msvcrt.LK_UNLCK, 1)
        os.lseek(first, 0, os.SEEK_SET)
        msvcrt.locking(first, msvcrt.LK_UNLCK, 1)
        os.lseek(second, 0, os.SEEK_SET)
        msvcrt.locking(second, msvcrt.LK_NBLCK, 1)
        msvcrt.locking(second, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(first)
        os.close(second)


HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from ledger.policy import Policy
    from ledger.store import Ledger
    path, locked, release = sys.argv[1], sys.argv[2], sys.argv[3]

    def hold(records):
        open(locked, "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
        return records + [{"holder": True}]

    Ledger(path, policy=Policy(mode="secure"), audit=False).update(hold)
    """
)


def test_lock_contention_between_two_real_processes(folder: Path) -> None:
    """Another process holds the lock: this one gets exit 75; once released, it writes."""
    book = folder / "book.json"
    locked, release = folder.parent / "locked", folder.parent / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(book), str(locked),
                               str(release)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not locked.exists():
            assert holder.poll() is None, holder.communicate()[1]
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.01)
        with pytest.raises(LockTimeoutError) as timed_out:
            _ledger(book, timeout=0.5).append({"waiter": True})
        assert timed_out.value.exit_code == 75
        assert f"pid {holder.pid}" in timed_out.value.message
    finally:
        release.touch()
        _, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err

    _ledger(book).append({"waiter": True})
    assert json.loads(book.read_text()) == [{"holder": True}, {"waiter": True}]


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from ledger.policy import Policy
    from ledger.store import Ledger
    path, gate, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    while not os.path.exists(gate):
        time.sleep(0.001)
    book = Ledger(path, policy=Policy(mode="secure", lock_timeout=120), audit=False)
    for seq in range(count):
        book.append({"writer": name, "seq": seq})
    """
)


@pytest.mark.slow
def test_six_processes_keep_every_record(folder: Path) -> None:
    """Six processes released together append 20 records each: exactly 120 kept."""
    book = folder / "shared.json"
    gate = folder.parent / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(book), str(gate), f"w{n}", "20"],
                              stderr=subprocess.PIPE, text=True) for n in range(6)]
    time.sleep(0.5)
    gate.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    records = json.loads(book.read_text())
    assert len(records) == 120
    assert {(r["writer"], r["seq"]) for r in records} == {
        (f"w{n}", s) for n in range(6) for s in range(20)}
    assert _temps(folder) == []


def test_open_folder_holds_the_folder_against_rename(folder: Path) -> None:
    """While a folder is open through the backend, renaming it fails; after close it works."""
    opened = windows.WindowsBackend().open_folder(str(folder), create=False, report=Report())
    try:
        with pytest.raises(PermissionError):
            os.rename(folder, str(folder) + "-moved")
    finally:
        opened.close()
    os.rename(folder, str(folder) + "-moved")
    assert not folder.exists()
