"""The Windows backend's logic, run here against a fake that behaves as Windows does.

``WindowsBackend(api=fake)`` gets the fake of :mod:`ledger._winapi` from
``tests/fake_winapi.py``; the write flow of :class:`ledger.Ledger` is pointed at
that backend by replacing ``ledger.store.backend_for`` for the test. The files are
real (in the test's temp folder); the fake adds handles, share modes, mandatory
byte locks, reparse points, owners and drive types. Real Windows runs the same
protections through the real calls in ``tests/test_windows_real.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from conftest import audit_events, default_audit_file
from fake_winapi import OTHER_SID, FakeClock, FakeMisuse, FakeWinApi

import ledger._windows as windows
from ledger import _winapi as w
from ledger import store
from ledger._backend import Backend
from ledger._legacy import LegacyBackend
from ledger.errors import (
    LedgerIOError,
    LockTimeoutError,
    ProtectionUnavailableError,
    UnsafePathError,
)
from ledger.policy import Policy
from ledger.protections import PROTECTIONS, Report
from ledger.store import Ledger

ON_WINDOWS = "the fake stands in for Windows on POSIX hosts (it plants POSIX links); " \
    "on Windows, test_windows_real.py runs the real calls"
not_on_windows = pytest.mark.skipif(os.name == "nt", reason=ON_WINDOWS)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWinApi]:
    """A fake Windows wired into the write flow; at the end, no handle may be left open."""
    if os.name == "nt":
        pytest.skip(ON_WINDOWS)
    api = FakeWinApi(clock=FakeClock())

    def backend_for(mode: str) -> Backend:
        return LegacyBackend() if mode == "legacy" else windows.WindowsBackend(api=api)

    monkeypatch.setattr(store, "backend_for", backend_for)
    yield api
    assert [h.path for h in api.open_handles()] == [], "handles left open"
    assert api.violations == []
    assert api.closed_with_locks == 0, "a lock was left for close() to release"


@pytest.fixture
def real_time_fake(fake: FakeWinApi) -> FakeWinApi:
    """The same fake on wall time, for threads that really wait for each other."""
    from fake_winapi import RealClock

    fake.clock = RealClock()
    return fake


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A private ledger folder, reached through no link."""
    path = Path(os.path.realpath(tmp_path)) / "ledgers"
    path.mkdir(mode=0o700)
    return path


def _ledger(path: Path, mode: str = "secure", timeout: float = 10.0,
            audit: bool = False) -> Ledger:
    return Ledger(path, policy=Policy(mode=mode, lock_timeout=timeout), audit=audit)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _temps(folder: Path) -> List[str]:
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


# The normal path.


def test_secure_write_applies_every_protection_with_windows_mechanisms(
        fake: FakeWinApi, folder: Path) -> None:
    """A secure write on a local drive applies all protections and names the Windows calls."""
    result = _ledger(folder / "book.json").append({"n": 1})

    assert result.missing == []
    assert result.protections["lock"] == "msvcrt.locking"
    assert result.protections["no_follow"] == "FILE_FLAG_OPEN_REPARSE_POINT"
    assert result.protections["atomic_replace"] == "MoveFileExW(REPLACE_EXISTING)"
    assert result.protections["durable_rename"] == "MOVEFILE_WRITE_THROUGH"
    assert result.protections["local_fs"] == "GetDriveTypeW:fixed"
    assert all(result.protections[name] for name in PROTECTIONS)
    assert json.loads((folder / "book.json").read_text()) == [{"n": 1}]


def test_replace_flushes_the_temp_and_asks_for_write_through(fake: FakeWinApi,
                                                             folder: Path) -> None:
    """Every replace is MoveFileExW(REPLACE_EXISTING|WRITE_THROUGH) of a flushed temp file."""
    book = _ledger(folder / "book.json")
    for n in range(3):
        book.append({"n": n})

    assert len(fake.moves) == 3
    for move in fake.moves:
        assert move.flags == w.MOVEFILE_REPLACE_EXISTING | w.MOVEFILE_WRITE_THROUGH
        assert move.source_flushed
        assert move.dst == str(folder / "book.json")
    assert _temps(folder) == []


def test_audit_event_names_msvcrt_locking(fake: FakeWinApi, folder: Path) -> None:
    """The audit event of a write records the Windows mechanisms that applied each protection."""
    _ledger(folder / "book.json", audit=True).append({"n": 1})

    book = str(folder / "book.json")
    events = [e for e in audit_events(default_audit_file()) if e["ledger"] == book]
    assert len(events) == 1
    assert events[0]["outcome"] == "ok"
    assert events[0]["protections"]["lock"] == "msvcrt.locking"
    assert events[0]["protections"]["folder_check"].startswith("CreateFileW(OPEN_REPARSE_POINT")
    assert events[0]["missing"] == []


def test_capabilities_report_none_for_what_the_api_cannot_do(fake: FakeWinApi) -> None:
    """Without the security, volume and lock calls those protections are None, never faked."""
    fake.features = set()
    offered = windows.WindowsBackend(api=fake).capabilities()

    assert set(offered) == set(PROTECTIONS)
    assert offered["lock"] is None
    assert offered["owner_check"] is None
    assert offered["permission_check"] is None
    assert offered["local_fs"] is None
    assert offered["no_follow"] == "FILE_FLAG_OPEN_REPARSE_POINT"


@not_on_windows
def test_real_api_off_windows_offers_nothing_it_cannot_call() -> None:
    """The real seam, constructed on a non-Windows host, claims none of the optional calls."""
    offered = windows.WindowsBackend().capabilities()
    assert offered["lock"] is None
    assert offered["owner_check"] is None
    assert offered["local_fs"] is None


def test_missing_security_calls_are_missing_in_secure_and_refused_in_strict(
        fake: FakeWinApi, folder: Path) -> None:
    """Without owner/DACL calls: secure writes and lists them missing; strict exits 69."""
    fake.features = {"lock", "volume"}
    result = _ledger(folder / "book.json").append({"n": 1})
    assert sorted(result.missing) == ["owner_check", "permission_check"]
    assert result.protections["owner_check"] is None

    with pytest.raises(ProtectionUnavailableError) as refused:
        _ledger(folder / "strict.json", mode="strict").append({"n": 1})
    assert refused.value.exit_code == 69
    assert "owner_check" in refused.value.missing
    assert not (folder / "strict.json").exists()


def test_a_folder_made_and_removed_by_someone_else_is_retried_then_refused(
        fake: FakeWinApi, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CreateDirectoryW says the name exists, yet the open finds nothing (another process
    made and removed it): a few such losses are retried; endless ones are refused, 77."""
    real = fake.create_directory
    lost: List[str] = []

    def create_directory(path: str) -> None:
        if len(lost) < budget[0]:
            lost.append(path)
            raise w.win_error(w.ERROR_ALREADY_EXISTS, path)
        real(path)

    budget = [3]
    monkeypatch.setattr(fake, "create_directory", create_directory)
    _ledger(folder / "new" / "book.json").append({"n": 1})
    assert lost == [str(folder / "new")] * 3
    assert json.loads((folder / "new" / "book.json").read_text()) == [{"n": 1}]

    budget[0] = 10_000
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "other" / "book.json").append({"n": 1})
    assert refused.value.exit_code == 77
    assert refused.value.reason == "folder_churning"
    assert not (folder / "other").exists()


# Concurrency and the lock.


def test_concurrent_writers_keep_every_record(real_time_fake: FakeWinApi, folder: Path) -> None:
    """Eight threads, each with its own handles, append 25 records each: exactly 200 kept."""
    path = folder / "shared.json"
    errors: List[BaseException] = []
    gate = threading.Event()

    def writer(name: str) -> None:
        try:
            gate.wait()
            book = _ledger(path, timeout=60)
            for seq in range(25):
                book.append({"writer": name, "seq": seq})
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(120)
    assert errors == []

    records = json.loads(path.read_text())
    assert len(records) == 200
    assert {(r["writer"], r["seq"]) for r in records} == {
        (f"t{n}", s) for n in range(8) for s in range(25)}
    for n in range(8):
        seqs = [r["seq"] for r in records if r["writer"] == f"t{n}"]
        assert seqs == sorted(seqs)
    assert _temps(folder) == []
    contended = [c for c in real_time_fake.lock_calls if not c.granted]
    assert all(c.mode == "LK_NBLCK" for c in real_time_fake.lock_calls if c.mode != "LK_UNLCK")
    assert contended, "the writers never met at the lock, so the test proved nothing"


def test_lock_held_elsewhere_times_out_with_75(fake: FakeWinApi, folder: Path) -> None:
    """Another process holding the lock: exit 75 after polling to the timeout, ledger unchanged."""
    book = folder / "book.json"
    _ledger(book).append({"n": 1})
    before = _digest(book)
    holder = fake.hold_lock(str(folder / "book.json.lock"), b"pid 4242 on otherhost\n")
    clock = fake.clock
    assert isinstance(clock, FakeClock)
    started = clock.now
    try:
        with pytest.raises(LockTimeoutError) as timed_out:
            _ledger(book, timeout=3).append({"n": 2})
    finally:
        fake.lseek(holder, 0, os.SEEK_SET)
        fake.locking(holder, w.LK_UNLCK, 1)
        fake.close(holder)

    assert timed_out.value.exit_code == 75
    assert "held by pid 4242 on otherhost" in timed_out.value.message
    assert clock.now - started >= 3
    refused = [c for c in fake.lock_calls if c.mode == "LK_NBLCK" and not c.granted]
    assert len(refused) > 1, "the lock was tried once instead of polled"
    assert _digest(book) == before
    assert _temps(folder) == []


def test_lock_and_unlock_name_byte_zero_even_after_the_position_moved(
        fake: FakeWinApi, folder: Path) -> None:
    """The backend seeks to 0 before locking and unlocking, wherever the position was left."""
    book = folder / "book.json"

    def move_lock_position(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        fake.lseek(fake.fd_of("book.json.lock"), 77, os.SEEK_SET)
        return records + [{"n": 1}]

    _ledger(book).update(move_lock_position)

    calls = [(c.mode, c.start, c.nbytes, c.granted) for c in fake.lock_calls]
    assert calls == [("LK_NBLCK", 0, 1, True), ("LK_UNLCK", 0, 1, True)]
    assert fake.lock_holders(str(folder / "book.json.lock")) == []


def test_a_retried_lock_still_names_byte_zero(fake: FakeWinApi, folder: Path) -> None:
    """Between polls something moves the lock file's position; the next try still locks byte 0."""
    lock = str(folder / "book.json.lock")
    holder = fake.hold_lock(lock)

    def move_and_maybe_release(fd: int) -> None:
        fake.lseek(fd, 50, os.SEEK_SET)
        refusals = [c for c in fake.lock_calls if c.mode == "LK_NBLCK" and not c.granted]
        if len(refusals) == 2:
            fake.on_lock_refused = None
            fake.lseek(holder, 0, os.SEEK_SET)
            fake.locking(holder, w.LK_UNLCK, 1)
            fake.close(holder)

    fake.on_lock_refused = move_and_maybe_release
    _ledger(folder / "book.json").append({"n": 1})

    granted = [(c.start, c.nbytes) for c in fake.lock_calls if c.mode == "LK_NBLCK" and c.granted]
    assert granted[-1] == (0, 1)
    assert json.loads((folder / "book.json").read_text()) == [{"n": 1}]


def test_the_fake_refuses_an_unlock_that_names_another_range(fake: FakeWinApi,
                                                             folder: Path) -> None:
    """Control: unlocking at a moved position fails and is recorded, as on Windows."""
    fd = fake.hold_lock(str(folder / "x.lock"))
    fake.lseek(fd, 5, os.SEEK_SET)
    with pytest.raises(PermissionError):
        fake.locking(fd, w.LK_UNLCK, 1)
    assert len(fake.violations) == 1
    fake.violations.clear()
    fake.lseek(fd, 0, os.SEEK_SET)
    fake.locking(fd, w.LK_UNLCK, 1)
    fake.close(fd)


def test_the_holder_note_is_readable_while_byte_zero_is_locked(fake: FakeWinApi,
                                                               folder: Path) -> None:
    """Locks are mandatory: another handle cannot read byte 0, but can read the note after it."""
    lock = str(folder / "x.lock")
    holder = fake.hold_lock(lock, b"pid 1 on here\n")
    other = fake.open_foreign(lock)
    try:
        fake.lseek(other, 0, os.SEEK_SET)
        with pytest.raises(PermissionError):
            fake.read(other, 10)
        fake.lseek(other, 1, os.SEEK_SET)
        assert fake.read(other, 100) == b"pid 1 on here\n"
        fake.lseek(holder, 0, os.SEEK_SET)
        assert fake.read(holder, 1) == b"\0"
    finally:
        fake.close(other)
        fake.lseek(holder, 0, os.SEEK_SET)
        fake.locking(holder, w.LK_UNLCK, 1)
        fake.close(holder)


def test_lk_lock_gives_up_after_ten_tries_and_lk_nblck_after_one(fake: FakeWinApi,
                                                                 folder: Path) -> None:
    """LK_LOCK tries ten times, a second apart, then EDEADLOCK; LK_NBLCK tries once, EACCES."""
    lock = str(folder / "x.lock")
    holder = fake.hold_lock(lock)
    other = fake.open_foreign(lock, w.GENERIC_READ | w.GENERIC_WRITE)
    clock = fake.clock
    assert isinstance(clock, FakeClock)
    try:
        fake.lock_calls.clear()
        started = clock.now
        with pytest.raises(OSError) as blocked:
            fake.locking(other, w.LK_LOCK, 1)
        assert blocked.value.errno == getattr(__import__("errno"), "EDEADLOCK",
                                              __import__("errno").EDEADLK)
        assert len(fake.lock_calls) == 10
        assert clock.now - started == 9.0

        fake.lock_calls.clear()
        fake.lseek(other, 0, os.SEEK_SET)
        with pytest.raises(PermissionError):
            fake.locking(other, w.LK_NBLCK, 1)
        assert len(fake.lock_calls) == 1
    finally:
        fake.close(other)
        fake.lseek(holder, 0, os.SEEK_SET)
        fake.locking(holder, w.LK_UNLCK, 1)
        fake.close(holder)


# Readers and the replace.


def test_a_foreign_reader_delays_the_replace_until_it_closes(fake: FakeWinApi,
                                                             folder: Path) -> None:
    """A reader without delete sharing makes the rename fail; the writer retries, then succeeds."""
    book = folder / "book.json"
    _ledger(book).append({"n": 1})
    reader = fake.open_foreign(str(book))

    def close_after_three(refusals: int) -> None:
        if refusals == 3:
            fake.close(reader)

    fake.on_move_refused = close_after_three
    result = _ledger(book).append({"n": 2})

    assert fake.refused_moves == 3
    assert [r["n"] for r in result.records] == [1, 2]
    assert json.loads(book.read_text()) == [{"n": 1}, {"n": 2}]
    assert _temps(folder) == []


@pytest.mark.parametrize("winerror", [w.ERROR_SHARING_VIOLATION, w.ERROR_ACCESS_DENIED])
def test_a_reader_that_never_closes_gives_74_and_keeps_the_old_ledger(
        fake: FakeWinApi, folder: Path, winerror: int) -> None:
    """WinError 32 or 5 until the retry bound: exit 74, old ledger intact, no temp left."""
    book = folder / "book.json"
    _ledger(book).append({"n": 1})
    before = _digest(book)
    fake.replace_error = winerror
    reader = fake.open_foreign(str(book))
    clock = fake.clock
    assert isinstance(clock, FakeClock)
    started = clock.now
    try:
        with pytest.raises(LedgerIOError) as blocked:
            _ledger(book).append({"n": 2})
    finally:
        fake.close(reader)

    assert blocked.value.exit_code == 74
    assert blocked.value.reason == "replace_blocked"
    assert f"WinError {winerror}" in blocked.value.message
    assert clock.now - started >= windows.REPLACE_RETRY_SECONDS
    assert fake.refused_moves > 1
    assert _digest(book) == before
    assert _temps(folder) == []


def test_the_products_own_reader_only_delays_a_writer(real_time_fake: FakeWinApi,
                                                      folder: Path) -> None:
    """A read in progress has the ledger open, and Windows renames over no open file,
    whatever its sharing: the writer's replace is refused and retried, and goes through
    as soon as the read is over; the reader saw the old ledger, whole."""
    fake = real_time_fake
    book = folder / "book.json"
    _ledger(book).append({"n": 1})
    reading, release = threading.Event(), threading.Event()
    seen: List[List[Dict[str, Any]]] = []

    def pause_in_read(path: str) -> None:
        if path == str(book) and not reading.is_set():
            reading.set()
            release.wait(30)

    fake.before_read = pause_in_read
    reader = threading.Thread(target=lambda: seen.append(_ledger(book).records()))
    reader.start()
    assert reading.wait(30)
    fake.before_read = None
    fake.on_move_refused = lambda refusals: release.set()
    try:
        _ledger(book).append({"n": 2})
    finally:
        release.set()
        reader.join(30)

    assert fake.refused_moves >= 1
    assert seen == [[{"n": 1}]]
    assert json.loads(book.read_text()) == [{"n": 1}, {"n": 2}]


def test_read_only_ledger_is_a_clear_error_and_stays_read_only(fake: FakeWinApi,
                                                               folder: Path) -> None:
    """A ledger marked read-only is not silently cleared: exit 74, file and mark kept."""
    book = folder / "book.json"
    _ledger(book).append({"n": 1})
    before = _digest(book)
    fake.set_readonly(str(book))

    with pytest.raises(LedgerIOError) as refused:
        _ledger(book).append({"n": 2})

    assert refused.value.exit_code == 74
    assert refused.value.reason == "read_only"
    assert "attrib -R" in refused.value.message
    assert _digest(book) == before
    assert (fake.file_attributes(str(book)) or 0) & w.FILE_ATTRIBUTE_READONLY
    assert _temps(folder) == []


def test_a_temp_left_by_a_killed_writer_is_removed(fake: FakeWinApi, folder: Path) -> None:
    """A stale temp file of this ledger is deleted under the lock by the next writer."""
    stale = folder / ".book.json.999.abcdef012345.tmp"
    stale.write_bytes(b"[half")
    _ledger(folder / "book.json").append({"n": 1})
    assert not stale.exists()


# Links, junctions and other planted things.


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder with a file that an attacker would like the ledger to overwrite."""
    target = Path(os.path.realpath(tmp_path)) / "victim"
    target.mkdir()
    (target / "book.json").write_text("precious\n")
    (target / "secret.txt").write_text("secret\n")
    return target


def _snapshot(folder: Path) -> Dict[str, str]:
    return {p.name: _digest(p) for p in folder.iterdir()}


def test_junction_in_place_of_the_folder_is_refused(fake: FakeWinApi, tmp_path: Path,
                                                    victim: Path) -> None:
    """The ledger folder is a junction: exit 77, nothing written into its target."""
    before = _snapshot(victim)
    link = Path(os.path.realpath(tmp_path)) / "ledgers"
    fake.make_junction(str(link), str(victim))

    with pytest.raises(UnsafePathError) as refused:
        _ledger(link / "book.json").append({"n": 1})

    assert refused.value.exit_code == 77
    assert refused.value.reason == "junction"
    assert "junction" in refused.value.message
    assert _snapshot(victim) == before


def test_junction_in_place_of_an_ancestor_is_refused(fake: FakeWinApi, tmp_path: Path,
                                                     victim: Path) -> None:
    """A folder two levels above the ledger is a junction: exit 77, target untouched."""
    (victim / "inner").mkdir()
    before = _snapshot(victim / "inner")
    link = Path(os.path.realpath(tmp_path)) / "profile"
    fake.make_junction(str(link), str(victim))

    with pytest.raises(UnsafePathError) as refused:
        _ledger(link / "inner" / "book.json").append({"n": 1})

    assert refused.value.exit_code == 77
    assert refused.value.path == str(link)
    assert _snapshot(victim / "inner") == before


def test_directory_symlink_as_the_folder_is_refused(fake: FakeWinApi, tmp_path: Path,
                                                    victim: Path) -> None:
    """A directory symbolic link as the folder: exit 77 (reason symlink), target untouched."""
    before = _snapshot(victim)
    link = Path(os.path.realpath(tmp_path)) / "ledgers"
    fake.make_symlink(str(link), str(victim), directory=True)
    with pytest.raises(UnsafePathError) as refused:
        _ledger(link / "book.json").append({"n": 1})
    assert refused.value.reason == "symlink"
    assert _snapshot(victim) == before


def test_junction_reads_are_refused_too(fake: FakeWinApi, tmp_path: Path, victim: Path) -> None:
    """Reads refuse a junction folder like writes do (exit 77)."""
    link = Path(os.path.realpath(tmp_path)) / "ledgers"
    fake.make_junction(str(link), str(victim))
    with pytest.raises(UnsafePathError):
        _ledger(link / "book.json").records()


@pytest.mark.parametrize("name", ["book.json", "book.json.lock"])
def test_symlink_at_ledger_or_lock_is_refused(fake: FakeWinApi, folder: Path, victim: Path,
                                              name: str) -> None:
    """A symbolic link at the ledger or lock name: exit 77, its target byte-identical."""
    before = _snapshot(victim)
    fake.make_symlink(str(folder / name), str(victim / "book.json"))

    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").append({"n": 1})

    assert refused.value.exit_code == 77
    assert refused.value.reason == "symlink"
    assert _snapshot(victim) == before


def test_junction_at_the_ledger_name_is_refused(fake: FakeWinApi, folder: Path,
                                                victim: Path) -> None:
    """A junction planted at the ledger's own name: exit 77, named as a junction."""
    fake.make_junction(str(folder / "book.json"), str(victim))
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").append({"n": 1})
    assert refused.value.reason == "junction"


def _predictable_temps(monkeypatch: pytest.MonkeyPatch, tokens: List[str]) -> None:
    names = iter(tokens)
    monkeypatch.setattr(windows, "temp_name",
                        lambda name: f".{name}.{os.getpid()}.{next(names)}.tmp")


def test_symlink_at_the_temp_name_is_skipped_not_followed(
        fake: FakeWinApi, folder: Path, victim: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A link planted mid-write at the next temp name: CREATE_NEW fails, a fresh name is used."""
    before = _snapshot(victim)
    planted = folder / f".book.json.{os.getpid()}.aaaa.tmp"
    _predictable_temps(monkeypatch, ["aaaa", "bbbb"])

    def plant(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        fake.make_symlink(str(planted), str(victim / "book.json"))
        return records + [{"n": 1}]

    _ledger(folder / "book.json").update(plant)

    assert _snapshot(victim) == before
    assert json.loads((folder / "book.json").read_text()) == [{"n": 1}]
    assert os.path.islink(planted)


def test_every_temp_name_taken_is_refused(fake: FakeWinApi, folder: Path, victim: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """If every temp name tried is taken by a planted link: exit 77, the link target untouched."""
    before = _snapshot(victim)
    _predictable_temps(monkeypatch, ["aaaa"] * 16)

    def plant(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        fake.make_symlink(str(folder / f".book.json.{os.getpid()}.aaaa.tmp"),
                          str(victim / "book.json"))
        return records + [{"n": 1}]

    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").update(plant)

    assert refused.value.reason == "temp_name_taken"
    assert _snapshot(victim) == before


@pytest.mark.parametrize("name", ["book.json", "book.json.lock"])
def test_hard_link_is_refused(fake: FakeWinApi, folder: Path, victim: Path, name: str) -> None:
    """A ledger or lock file with two hard links: exit 77, the other name's content unchanged."""
    os.link(victim / "secret.txt", folder / name)
    before = _snapshot(victim)

    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").append({"n": 1})

    assert refused.value.exit_code == 77
    assert refused.value.reason == "hard_link"
    assert _snapshot(victim) == before


def test_device_name_is_refused(fake: FakeWinApi, folder: Path) -> None:
    """A ledger name that opens a character device (like NUL) is not a regular file: 77."""
    fake.make_device(str(folder / "book.json"))
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").records()
    assert refused.value.reason == "not_regular_file"


def test_folder_that_is_a_file_is_refused(fake: FakeWinApi, folder: Path) -> None:
    """A file where the ledger folder should be: exit 77, the file unchanged."""
    (folder / "sub").write_text("x")
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "sub" / "book.json").append({"n": 1})
    assert refused.value.reason == "not_a_folder"
    assert (folder / "sub").read_text() == "x"


def test_path_that_resolves_elsewhere_is_refused(fake: FakeWinApi, folder: Path,
                                                 victim: Path) -> None:
    """A handle whose final path is not inside the checked folder (a swapped ancestor): 77."""
    (folder / "book.json").write_text("[]")
    fake.final_override[str(folder / "book.json")] = str(victim / "book.json")
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").append({"n": 1})
    assert refused.value.reason == "path_changed"


def test_the_folder_and_its_parents_are_pinned_during_a_write(fake: FakeWinApi,
                                                              folder: Path) -> None:
    """While a write runs, renaming the ledger folder or its parent fails (sharing violation)."""
    attempts: List[int] = []

    def try_renames(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        for path in (folder, folder.parent):
            try:
                fake.move_file(str(path), str(path) + "-moved", 0)
            except PermissionError as exc:
                attempts.append(w.winerror_of(exc) or 0)
        return records + [{"n": 1}]

    _ledger(folder / "book.json").update(try_renames)
    assert attempts == [w.ERROR_SHARING_VIOLATION, w.ERROR_SHARING_VIOLATION]
    fake.move_file(str(folder), str(folder) + "-moved", 0)


def test_placeholder_ledger_is_read_through_a_normal_handle(fake: FakeWinApi,
                                                            folder: Path) -> None:
    """A cloud placeholder (non-surrogate tag) is accepted and read through a second handle."""
    book = folder / "book.json"
    book.write_text('[{"n": 1}]')
    fake.set_tag(str(book), w.IO_REPARSE_TAG_CLOUD)

    records = _ledger(book).records()
    assert records == [{"n": 1}]


def test_the_fake_refuses_data_through_a_bypassing_handle(fake: FakeWinApi,
                                                          folder: Path) -> None:
    """Control: reading a placeholder through an OPEN_REPARSE_POINT handle is caught."""
    book = folder / "book.json"
    book.write_text("[]")
    fake.set_tag(str(book), w.IO_REPARSE_TAG_CLOUD)
    handle = fake.create_file(str(book), w.GENERIC_READ, 7, w.OPEN_EXISTING,
                              w.FILE_FLAG_OPEN_REPARSE_POINT)
    fd = fake.open_osfhandle(handle, 0)
    try:
        with pytest.raises(FakeMisuse):
            fake.read(fd, 10)
    finally:
        fake.close(fd)


# Owners, permissions, network drives and modes.


def test_foreign_owner_of_the_folder_is_refused(fake: FakeWinApi, folder: Path) -> None:
    """A ledger folder owned by another user: exit 77, nothing created in it."""
    fake.set_owner(str(folder), OTHER_SID)
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").append({"n": 1})
    assert refused.value.reason == "foreign_owner"
    assert os.listdir(folder) == []


def test_foreign_owner_of_the_ledger_is_refused(fake: FakeWinApi, folder: Path) -> None:
    """A ledger file owned by another user: exit 77, file unchanged."""
    book = folder / "book.json"
    book.write_text("[]")
    fake.set_owner(str(book), OTHER_SID)
    with pytest.raises(UnsafePathError) as refused:
        _ledger(book).append({"n": 1})
    assert refused.value.reason == "foreign_owner"
    assert book.read_text() == "[]"


@pytest.mark.parametrize("member", [True, False])
def test_administrators_owner_needs_membership(fake: FakeWinApi, folder: Path,
                                               member: bool) -> None:
    """A folder owned by Administrators is the user's only if the token is a member."""
    fake.set_owner(str(folder), w.SID_ADMINISTRATORS)
    fake.admin_member = member
    book = _ledger(folder / "book.json")
    if member:
        assert book.append({"n": 1}).missing == []
    else:
        with pytest.raises(UnsafePathError):
            book.append({"n": 1})


@pytest.mark.parametrize("sid", [w.SID_EVERYONE, w.SID_AUTHENTICATED_USERS, w.SID_USERS,
                                 OTHER_SID])
def test_folder_writable_by_others_is_refused(fake: FakeWinApi, folder: Path, sid: str) -> None:
    """A DACL entry letting another account add files: exit 77, the account named."""
    fake.grant(str(folder), sid, w.FILE_ADD_FILE | w.SYNCHRONIZE)
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").append({"n": 1})
    assert refused.value.reason == "loose_permissions"
    assert sid in refused.value.message


def test_read_grants_and_inherit_only_entries_are_fine(fake: FakeWinApi, folder: Path) -> None:
    """Others may read, and inherit-only entries do not apply to the folder itself."""
    fake.grant(str(folder), w.SID_USERS, w.GENERIC_READ)
    fake.grant(str(folder), w.SID_EVERYONE, w.GENERIC_ALL, flags=w.INHERIT_ONLY_ACE)
    assert _ledger(folder / "book.json").append({"n": 1}).missing == []


def test_everyone_owner_with_other_writers_is_refused(fake: FakeWinApi, folder: Path) -> None:
    """Owner Everyone is only read as "no ACLs" when nobody else is granted writing: here 77."""
    fake.forget_acls(str(folder), dacl=[w.Ace(0, 0, w.GENERIC_ALL, OTHER_SID)])
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").append({"n": 1})
    assert refused.value.reason == "foreign_owner"


def test_null_dacl_is_refused(fake: FakeWinApi, folder: Path) -> None:
    """A NULL DACL (anyone may do anything) on a filesystem that records owners: exit 77."""
    fake.set_null_dacl(str(folder))
    with pytest.raises(UnsafePathError) as refused:
        _ledger(folder / "book.json").append({"n": 1})
    assert refused.value.reason == "loose_permissions"


@pytest.mark.parametrize("fat", ["null_dacl", "everyone_full", "not_supported"])
def test_filesystem_without_acls_is_missing_in_secure_refused_in_strict(
        fake: FakeWinApi, folder: Path, fat: str) -> None:
    """No owners recorded (FAT): secure lists owner/permission checks missing; strict exits 69."""
    if fat == "null_dacl":
        fake.forget_acls(str(folder))
    elif fat == "everyone_full":
        fake.forget_acls(str(folder), dacl=[w.Ace(0, 0, w.GENERIC_ALL, w.SID_EVERYONE)])
    else:
        fake.security_error = 50
    result = _ledger(folder / "book.json").append({"n": 1})
    assert sorted(result.missing) == ["owner_check", "permission_check"]

    with pytest.raises(ProtectionUnavailableError) as refused:
        _ledger(folder / "book.json", mode="strict").append({"n": 2})
    assert refused.value.exit_code == 69
    assert json.loads((folder / "book.json").read_text()) == [{"n": 1}]


def test_network_drive_is_missing_in_secure_and_refused_in_strict(fake: FakeWinApi,
                                                                 folder: Path) -> None:
    """On a DRIVE_REMOTE volume: secure writes with local_fs missing; strict exits 69."""
    fake.add_volume(str(folder), w.DRIVE_REMOTE)
    result = _ledger(folder / "book.json").append({"n": 1})
    assert result.missing == ["local_fs"]
    assert result.protections["local_fs"] is None

    with pytest.raises(ProtectionUnavailableError) as refused:
        _ledger(folder / "book.json", mode="strict").append({"n": 2})
    assert refused.value.exit_code == 69
    assert refused.value.missing == ("local_fs",)
    assert json.loads((folder / "book.json").read_text()) == [{"n": 1}]


def test_unknown_drive_type_counts_as_missing(fake: FakeWinApi, folder: Path) -> None:
    """A drive type the backend cannot classify is not called local."""
    fake.add_volume(str(folder), w.DRIVE_UNKNOWN)
    assert _ledger(folder / "book.json").append({"n": 1}).missing == ["local_fs"]


def test_strict_mode_on_a_local_drive_writes(fake: FakeWinApi, folder: Path) -> None:
    """Strict mode with every protection available writes normally."""
    result = _ledger(folder / "book.json", mode="strict").append({"n": 1})
    assert result.mode == "strict"
    assert result.missing == []


def test_legacy_mode_warns_once_and_uses_no_windows_checks(
        fake: FakeWinApi, folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Legacy: one stderr warning per process (no lock, shared homes unsupported), no handles."""
    monkeypatch.setattr(store, "_legacy_warned", False)
    book = _ledger(folder / "book.json", mode="legacy")
    book.append({"n": 1})
    book.append({"n": 2})

    err = capsys.readouterr().err
    assert err.count("ledger: legacy mode") == 1
    assert "no concurrency lock" in err
    assert "several users sharing one home is not supported" in err
    assert fake.lock_calls == []
    assert json.loads((folder / "book.json").read_text()) == [{"n": 1}, {"n": 2}]


def test_missing_folder_reads_as_empty_and_is_created_on_write(fake: FakeWinApi,
                                                               folder: Path) -> None:
    """Reading a ledger whose folder does not exist gives no records; a write creates it."""
    path = folder / "a" / "b" / "book.json"
    assert _ledger(path).records() == []
    assert not (folder / "a").exists()
    _ledger(path).append({"n": 1})
    assert json.loads(path.read_text()) == [{"n": 1}]


def test_open_append_refuses_a_link_and_appends_to_a_file(fake: FakeWinApi, folder: Path,
                                                          victim: Path) -> None:
    """The audit-file path: appends go to the end; a symlink at the name is refused."""
    report = Report()
    opened = windows.WindowsBackend(api=fake).open_folder(str(folder), create=False,
                                                          report=report)
    try:
        fd = opened.open_append("audit.jsonl")
        fake.write(fd, b"one\n")
        fake.close(fd)
        fd = opened.open_append("audit.jsonl")
        fake.write(fd, b"two\n")
        fake.close(fd)
        fake.make_symlink(str(folder / "linked.jsonl"), str(victim / "secret.txt"))
        with pytest.raises(UnsafePathError):
            opened.open_append("linked.jsonl")
    finally:
        opened.close()
    assert (folder / "audit.jsonl").read_bytes() == b"one\ntwo\n"
    assert (victim / "secret.txt").read_text() == "secret\n"


# Plain logic.


def test_only_the_seam_calls_windows() -> None:
    """No ledger module but _winapi imports msvcrt or _winapi or touches WinDLL/windll/wintypes."""
    import ast

    package = Path(windows.__file__).parent
    offenders = []
    for source in sorted(package.glob("*.py")):
        if source.name == "_winapi.py":
            continue
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: List[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            for name in names:
                if name.split(".")[0] in ("msvcrt", "_winapi") or name in (
                        "windll", "WinDLL", "wintypes", "ctypes.wintypes"):
                    offenders.append(f"{source.name}:{node.lineno}: {name}")
    assert offenders == []



@pytest.mark.parametrize("path, expected", [
    ("\\\\server\\share\\x", True),
    ("\\\\?\\UNC\\server\\share\\x", True),
    ("//server/share/x", True),
    ("\\\\.\\UNC\\server\\share", True),
    ("\\\\?\\C:\\Users\\me", False),
    ("\\\\.\\C:\\Users", False),
    ("C:\\Users\\me", False),
    ("/home/me", False),
])
def test_unc_paths_are_recognised(path: str, expected: bool) -> None:
    """UNC names, plain or extended, are network shares; drive paths are not."""
    assert windows.is_unc(path) is expected


@pytest.mark.parametrize("tag, surrogate", [
    (w.IO_REPARSE_TAG_MOUNT_POINT, True),
    (w.IO_REPARSE_TAG_SYMLINK, True),
    (w.IO_REPARSE_TAG_LX_SYMLINK, True),
    (w.IO_REPARSE_TAG_CLOUD, False),
    (0x9000F01A, False),
    (0x80000013, False),
    (0x8000001B, False),
])
def test_name_surrogate_tags(tag: int, surrogate: bool) -> None:
    """Symlinks, junctions and WSL links are name surrogates; placeholders are not."""
    assert windows.is_name_surrogate(tag) is surrogate


def test_extended_prefix_is_stripped() -> None:
    """Final paths lose their \\\\?\\ prefix, and UNC ones become \\\\server\\share."""
    assert w.strip_extended_prefix("\\\\?\\C:\\x") == "C:\\x"
    assert w.strip_extended_prefix("\\\\?\\UNC\\srv\\share\\x") == "\\\\srv\\share\\x"
    assert w.strip_extended_prefix("C:\\x") == "C:\\x"


@pytest.mark.parametrize("code, kind", [
    (w.ERROR_FILE_NOT_FOUND, FileNotFoundError),
    (w.ERROR_PATH_NOT_FOUND, FileNotFoundError),
    (w.ERROR_ACCESS_DENIED, PermissionError),
    (w.ERROR_SHARING_VIOLATION, PermissionError),
    (w.ERROR_FILE_EXISTS, FileExistsError),
])
def test_win_error_builds_the_exception_python_raises(code: int, kind: type) -> None:
    """The seam's errors carry winerror and the built-in subclass Python would pick."""
    exc = w.win_error(code, "C:\\x")
    assert isinstance(exc, kind)
    assert w.winerror_of(exc) == code
    assert exc.filename == "C:\\x"


def test_loose_writers_ignores_trusted_accounts_and_deny_entries() -> None:
    """Only allow-entries of other accounts with a write right count."""
    aces = [
        w.Ace(w.ACCESS_ALLOWED_ACE_TYPE, 0, 0x1F01FF, "S-1-5-21-9-9-9-1001"),
        w.Ace(w.ACCESS_ALLOWED_ACE_TYPE, 0, 0x1F01FF, w.SID_SYSTEM),
        w.Ace(w.ACCESS_DENIED_ACE_TYPE, 0, 0x1F01FF, w.SID_EVERYONE),
        w.Ace(w.ACCESS_ALLOWED_ACE_TYPE, 0, w.GENERIC_READ, w.SID_USERS),
        w.Ace(w.ACCESS_ALLOWED_ACE_TYPE, 0, w.DELETE, OTHER_SID),
        w.Ace(w.ACCESS_ALLOWED_ACE_TYPE, 0, w.WRITE_DAC, OTHER_SID),
    ]
    assert windows.loose_writers(aces, "S-1-5-21-9-9-9-1001") == [OTHER_SID]
    assert windows.loose_writers(None, "S-1-5-21-9-9-9-1001") == [w.SID_EVERYONE]


@not_on_windows
def test_program_data_folder_is_windows_only() -> None:
    """Off Windows the known-folder helper raises instead of guessing a path."""
    with pytest.raises(OSError):
        w.program_data_folder()
