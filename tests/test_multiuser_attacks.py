"""Two real users on one machine: an attacker tries to make the victim's ledger write elsewhere.

Every test starts the attacker's and the victim's processes under two unprivileged
uids (see ``privdrop.py``), in a shared home laid out like ``/tmp`` or ``/home`` on a
shared machine: a world-writable sticky parent holding the victim's home, the
attacker's home and the victim's ledger folder. The attacker plants links, hard
links, FIFOs and folders at every name the victim will use; the victim writes in
``secure`` and ``strict`` mode. Each write must be refused (77) or land in the
victim's own ledger, no byte of any file or folder the attacker aimed at may change,
and no write may hang.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from ledger._backend import is_temp_of
from ledger.escalation import LEDGER_NAME
from privdrop import ATTACKER, VICTIM, Runtime, requires_root, runtime  # noqa: F401

pytestmark = [requires_root]

MODES = ["secure", "strict"]
LOCK_NAME = LEDGER_NAME + ".lock"
SIG = "a" * 64

VICTIM_SCRIPT = """
import contextlib, io, json, os, sys
import faulthandler
faulthandler.dump_traceback_later(200, exit=True)  # a hung write shows where it hung
mode, plan = sys.argv[1], json.loads(sys.argv[2])

# The policy is fixed here, so that these tests do not depend on policy files.
from ledger import policy as policy_module
from ledger.policy import Policy
chosen = Policy(mode=mode, lock_timeout=5.0)
policy_module.load_policy = lambda *args, **kwargs: chosen

if os.environ.get("PAUSE_AFTER_CLEANUP"):
    # Test hook: use these temp-name suffixes first, and wait for a line on stdin
    # after the stale temp files were removed, so that names can be planted then.
    from ledger import _posix
    first = [bytes.fromhex(suffix) for suffix in json.loads(os.environ["PAUSE_AFTER_CLEANUP"])]
    real_urandom = os.urandom
    def planned_urandom(size):
        for index, value in enumerate(first):
            if len(value) == size:
                return first.pop(index)
        return real_urandom(size)
    cleanup = _posix.PosixFolder.remove_stale_temps
    def paused(self, name):
        removed = cleanup(self, name)
        os.urandom = planned_urandom
        sys.__stdout__.write(json.dumps({"paused": os.getpid()}) + "\\n")
        sys.__stdout__.flush()
        sys.stdin.readline()
        return removed
    _posix.PosixFolder.remove_stale_temps = paused

from ledger.cli import main
results = []
for folder, run_id in plan:
    os.environ["PF_ESCALATION_LEDGER_DIR"] = folder
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["record", "%s", "cur", "rec", "declined", run_id])
    results.append({"run_id": run_id, "code": code, "stderr": err.getvalue()})
if os.environ.get("PAUSE_AFTER_CLEANUP"):
    results[-1]["unused_suffixes"] = len(first)
sys.__stdout__.write(json.dumps(results) + "\\n")
""" % SIG

PLANT_SCRIPT = """
import errno, json, os, sys
results = []
for kind, *args in json.loads(sys.argv[1]):
    try:
        if kind == "symlink":
            os.symlink(args[0], args[1])
        elif kind == "link":
            os.link(args[0], args[1])
        elif kind == "fifo":
            os.mkfifo(args[0])
            os.chmod(args[0], 0o666)
        elif kind == "mkdir":
            os.mkdir(args[0])
            os.chmod(args[0], args[1])
        elif kind == "write":
            fd = os.open(args[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, args[1].encode())
            os.close(fd)
            os.chmod(args[0], args[2])
        else:
            raise ValueError(kind)
        results.append("ok")
    except OSError as exc:
        results.append(errno.errorcode.get(exc.errno, str(exc.errno)))
print(json.dumps(results))
"""

Op = list[Any]


def _chown(path: Path, uid: int, mode: int) -> None:
    os.chown(path, uid, uid, follow_symlinks=False)
    os.chmod(path, mode)


def _describe(path: Path) -> Any:
    """Everything about ``path`` that an attack could change: type, mode, owner, bytes."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    head = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid)
    if stat.S_ISLNK(st.st_mode):
        return head + (os.readlink(path),)
    if stat.S_ISREG(st.st_mode):
        return head + (hashlib.sha256(path.read_bytes()).hexdigest(),)
    if stat.S_ISDIR(st.st_mode):
        return head + (sorted((name, _describe(path / name)) for name in os.listdir(path)),)
    return head


def _temp_names(pid: int, suffixes: list[str]) -> list[str]:
    return [f".{LEDGER_NAME}.{pid}.{suffix}.tmp" for suffix in suffixes]


def _is_temp(name: str) -> bool:
    """A name of the form the product gives its temp files (``.<name>.<pid>.<12 hex>.tmp``)."""
    return is_temp_of(name, LEDGER_NAME)


class SharedHome:
    """A sticky world-writable parent with a victim, an attacker and their files.

    Attributes:
        shared: The sticky parent (mode 1777, root's), like ``/tmp``.
        folder: Where the victim's ledger folder goes (not created here).
        secret: A private file of the victim (0600) that links are aimed at.
        docs: A folder of the victim holding its own file named like the ledger.
        public: A world-readable file of the victim in the shared parent.
        bait: A file of the attacker that anyone may write (0666).
        drop: A folder of the attacker that anyone may write (0777).
    """

    def __init__(self, runtime: Runtime, mode: str) -> None:
        self.runtime = runtime
        self.mode = mode
        base = runtime.scratch("home")
        self.shared = base / "shared"
        self.shared.mkdir()
        os.chmod(self.shared, 0o1777)

        self.victim_home = self.shared / "victim"
        self.victim_home.mkdir()
        _chown(self.victim_home, VICTIM, 0o700)
        self.secret = self.victim_home / "secret.txt"
        self.secret.write_text("the victim's private notes\n")
        _chown(self.secret, VICTIM, 0o600)
        self.docs = self.victim_home / "docs"
        self.docs.mkdir()
        _chown(self.docs, VICTIM, 0o700)
        (self.docs / LEDGER_NAME).write_text('["a file of the victim that is not its ledger"]')
        _chown(self.docs / LEDGER_NAME, VICTIM, 0o600)
        self.public = self.shared / "victim-public.txt"
        self.public.write_text("a public file of the victim\n")
        _chown(self.public, VICTIM, 0o644)

        self.attacker_home = self.shared / "attacker"
        self.attacker_home.mkdir()
        _chown(self.attacker_home, ATTACKER, 0o755)
        self.bait = self.attacker_home / "bait.json"
        self.bait.write_text("[]")
        _chown(self.bait, ATTACKER, 0o666)
        self.drop = self.attacker_home / "drop"
        self.drop.mkdir()
        _chown(self.drop, ATTACKER, 0o777)

        self.folder = self.shared / "victim-ledger"

    @property
    def ledger(self) -> Path:
        return self.folder / LEDGER_NAME

    @property
    def lock(self) -> Path:
        return self.folder / LOCK_NAME

    def targets(self) -> dict[str, Any]:
        """Snapshot every file and folder the attacker aims at."""
        home = {name: _describe(self.victim_home / name)
                for name in os.listdir(self.victim_home)
                if name not in (".local", ".config", ".cache")}
        return {
            "secret": _describe(self.secret),
            "docs": _describe(self.docs),
            "public": _describe(self.public),
            "bait": _describe(self.bait),
            "drop": _describe(self.drop),
            "victim home": home,
        }

    def make_folder(self, mode: int) -> None:
        """Create the victim's ledger folder, the victim's, with ``mode``."""
        self.folder.mkdir()
        _chown(self.folder, VICTIM, mode)

    def plant(self, ops: list[Op]) -> list[str]:
        """Run ``ops`` as the attacker; return each one's result (``ok`` or an errno name)."""
        done = self.runtime.run(ATTACKER, PLANT_SCRIPT, [json.dumps(ops)],
                                self.runtime.env(ATTACKER, self.attacker_home), timeout=60)
        assert done.returncode == 0, done.stderr
        results: list[str] = json.loads(done.stdout)
        return results

    def victim_env(self, **extra: str) -> dict[str, str]:
        return self.runtime.env(VICTIM, self.victim_home, **extra)

    def write(self, plan: list[tuple[Path, str]], timeout: float = 60) -> list[dict[str, Any]]:
        """Run the victim's ``record`` commands (folder, run id) in one process, in order."""
        done = self.runtime.run(
            VICTIM, VICTIM_SCRIPT,
            [self.mode, json.dumps([(str(folder), run_id) for folder, run_id in plan])],
            self.victim_env(), timeout=timeout,
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr
        results: list[dict[str, Any]] = json.loads(done.stdout.splitlines()[-1])
        return results

    def write_one(self, run_id: str = "r1", folder: Optional[Path] = None) -> dict[str, Any]:
        return self.write([(folder or self.folder, run_id)])[0]

    def audit(self) -> list[dict[str, Any]]:
        path = self.victim_home / ".local" / "state" / "ledger" / "log" / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def assert_own_ledger(self, run_ids: list[str], folder: Optional[Path] = None) -> None:
        """The ledger is a regular 0600 file of the victim's, one link, holding ``run_ids``."""
        path = (folder or self.folder) / LEDGER_NAME
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1
        assert st.st_uid == VICTIM and stat.S_IMODE(st.st_mode) == 0o600
        records = json.loads(path.read_text(encoding="utf-8"))
        assert [record["run_id"] for record in records] == run_ids


@pytest.fixture(params=MODES)
def home(request: pytest.FixtureRequest, runtime: Runtime) -> SharedHome:  # noqa: F811
    """A fresh shared home; the victim writes in the parametrized mode."""
    return SharedHome(runtime, request.param)


def _assert_refused(home: SharedHome, result: dict[str, Any], reason: str) -> None:
    assert result["code"] == 77, result
    assert "Refusing" in result["stderr"] or "Permission" in result["stderr"], result
    events = home.audit()
    assert events[-1]["outcome"] == "refused" and events[-1]["mode"] == home.mode
    assert events[-1]["reason"] == reason, events[-1]


# The folder itself, planted in the sticky parent before the victim creates it.

FOLDER_PLANTS = {
    "symlink to a folder of the victim": (
        lambda h: [["symlink", str(h.docs), str(h.folder)]], "symlink"),
    "symlink to a folder of the attacker": (
        lambda h: [["symlink", str(h.drop), str(h.folder)]], "symlink"),
    "folder of the attacker": (
        lambda h: [["mkdir", str(h.folder), 0o755]], "foreign_owner"),
    "open folder of the attacker with links inside": (
        lambda h: [["mkdir", str(h.folder), 0o777],
                   ["symlink", str(h.secret), str(h.ledger)],
                   ["symlink", str(h.secret), str(h.lock)]], "foreign_owner"),
    "FIFO": (lambda h: [["fifo", str(h.folder)]], "not_a_folder"),
    "file": (lambda h: [["write", str(h.folder), "not a folder", 0o644]], "not_a_folder"),
}


@pytest.mark.parametrize("plant", sorted(FOLDER_PLANTS))
def test_folder_name_planted_before_the_victim_creates_it(home: SharedHome, plant: str) -> None:
    """The attacker takes the folder's name first: 77, the plant and every target unchanged."""
    ops, reason = FOLDER_PLANTS[plant]
    assert set(home.plant(ops(home))) == {"ok"}
    before = home.targets(), _describe(home.folder)

    result = home.write_one()

    _assert_refused(home, result, reason)
    assert str(home.folder) in result["stderr"]
    assert (home.targets(), _describe(home.folder)) == before


ANCESTOR_PLANTS = {
    "symlink to a folder of the victim": lambda h: h.victim_home,
    "symlink to a folder of the attacker": lambda h: h.drop,
}


@pytest.mark.parametrize("plant", sorted(ANCESTOR_PLANTS))
def test_folder_above_the_ledger_folder_planted_as_a_link(home: SharedHome, plant: str) -> None:
    """The victim's folder is ``shared/base/ledger``; the attacker plants ``shared/base``
    as a link first. The victim must not follow it, even to a folder of its own."""
    base = home.shared / "victim-base"
    folder = base / "ledger"
    assert home.plant([["symlink", str(ANCESTOR_PLANTS[plant](home)), str(base)]]) == ["ok"]
    before = home.targets(), _describe(base)

    result = home.write_one(folder=folder)

    assert result["code"] == 77, result
    assert str(base) in result["stderr"]
    assert home.audit()[-1]["outcome"] == "refused"
    assert (home.targets(), _describe(base)) == before


# The victim's folder open to others by mistake.

def _plants_inside(home: SharedHome) -> list[Op]:
    temps = _temp_names(12345, ["0" * 12, "f" * 12])
    return [
        ["symlink", str(home.secret), str(home.ledger)],
        ["symlink", str(home.secret), str(home.lock)],
        *[["symlink", str(home.secret), str(home.folder / name)] for name in temps],
    ]


@pytest.mark.parametrize("folder_mode", [0o777, 0o1777])
def test_folder_open_to_others_is_refused_whatever_was_planted(
    home: SharedHome, folder_mode: int
) -> None:
    """The victim's own folder is 0777 or 1777 and full of the attacker's links: 77, untouched."""
    home.make_folder(folder_mode)
    assert set(home.plant(_plants_inside(home))) == {"ok"}
    before = home.targets(), _describe(home.folder)

    result = home.write_one()

    _assert_refused(home, result, "loose_permissions")
    assert "chmod go-w" in result["stderr"]
    assert (home.targets(), _describe(home.folder)) == before


# Plants left inside after the victim closed the folder again (chmod 700).

def _hardlinks_protected() -> bool:
    try:
        return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    except OSError:
        return False


def _temp_spread(home: SharedHome) -> list[Op]:
    """Links at temp names for the next few hundred pids, and names that only look alike."""
    try:
        last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    except (OSError, ValueError):
        last = os.getpid()
    names = []
    for pid in range(last + 1, last + 300):
        names += _temp_names(pid, ["0" * 12, _suffix_like(pid)])
    names += [f".{LEDGER_NAME}.*.tmp", f".{LEDGER_NAME}..tmp", f".{LEDGER_NAME}.tmp",
              f"{LEDGER_NAME}.tmp", f".{LEDGER_NAME}.1.tmp.bak", f".{LOCK_NAME}.1.x.tmp"]
    return [["symlink", str(home.secret), str(home.folder / name)] for name in names]


def _suffix_like(pid: int) -> str:
    """A made-up 12-digit hex suffix, as the temp names use."""
    return hashlib.sha256(str(pid).encode()).hexdigest()[:12]


INSIDE_PLANTS = {
    "ledger: symlink to a file of the victim": (
        lambda h: [["symlink", str(h.secret), str(h.ledger)]], "ledger", "symlink"),
    "ledger: symlink to a file of the attacker": (
        lambda h: [["symlink", str(h.bait), str(h.ledger)]], "ledger", "symlink"),
    "ledger: hard link to a file of the attacker": (
        lambda h: [["link", str(h.bait), str(h.ledger)]], "ledger", "foreign_owner"),
    "ledger: FIFO": (lambda h: [["fifo", str(h.ledger)]], "ledger", "not_regular_file"),
    "ledger: folder of the attacker": (
        lambda h: [["mkdir", str(h.ledger), 0o777]], "ledger", "not_regular_file"),
    "lock: symlink to a file of the victim": (
        lambda h: [["symlink", str(h.secret), str(h.lock)]], "lock", "symlink"),
    "lock: dangling symlink into the victim's home": (
        lambda h: [["symlink", str(h.victim_home / "created"), str(h.lock)]], "lock", "symlink"),
    "lock: hard link to a file of the attacker": (
        lambda h: [["link", str(h.bait), str(h.lock)]], "lock", "foreign_owner"),
    "lock: FIFO": (lambda h: [["fifo", str(h.lock)]], "lock", "not_regular_file"),
    "every name at once": (
        lambda h: _plants_inside(h) + [["fifo", str(h.folder / "x")]], "lock", "symlink"),
}


@pytest.mark.parametrize("plant", sorted(INSIDE_PLANTS))
def test_plants_left_in_a_folder_that_was_open_for_a_while(home: SharedHome, plant: str) -> None:
    """The folder was 0777 for a while; the attacker planted at the ledger or lock name;
    the victim then ran ``chmod 700``. The next write is refused (77), plant and targets
    unchanged, and nothing is written through the plant."""
    ops, name, reason = INSIDE_PLANTS[plant]
    home.make_folder(0o777)
    assert set(home.plant(ops(home))) == {"ok"}
    os.chmod(home.folder, 0o700)
    before = home.targets(), _describe(home.folder)

    result = home.write_one()

    _assert_refused(home, result, reason)
    assert str(home.folder / (LEDGER_NAME if name == "ledger" else LOCK_NAME)) in result["stderr"]
    _assert_only_lock_added(home, before)
    assert not (home.victim_home / "created").exists()


def _assert_only_lock_added(home: SharedHome, before: tuple[Any, Any]) -> None:
    """Targets unchanged; in the folder, at most the victim's own new lock file appeared."""
    targets, folder = before
    assert home.targets() == targets
    after = dict(_describe(home.folder)[3])
    earlier = dict(folder[3])
    if LOCK_NAME in after and LOCK_NAME not in earlier:
        st = os.lstat(home.lock)
        assert stat.S_ISREG(st.st_mode) and st.st_uid == VICTIM and st.st_nlink == 1
        del after[LOCK_NAME]
    assert after == earlier


def test_hard_link_to_a_file_of_the_victim_at_the_ledger_name(home: SharedHome) -> None:
    """A hard link to the victim's own file at the ledger name. Where the kernel has
    ``fs.protected_hardlinks`` on, it refuses to make it and the victim simply writes its
    ledger; where it is off, the victim refuses the second link (77). Either way the
    linked file is not changed."""
    home.make_folder(0o777)
    made = home.plant([["link", str(home.public), str(home.ledger)]])
    os.chmod(home.folder, 0o700)
    assert made == (["EPERM"] if _hardlinks_protected() else ["ok"])
    before = home.targets()

    result = home.write_one()

    if made == ["ok"]:
        _assert_refused(home, result, "hard_link")
    else:
        assert result["code"] == 0, result
        home.assert_own_ledger(["r1"])
    assert home.targets() == before


def test_temp_names_planted_in_advance_are_not_followed(home: SharedHome) -> None:
    """Links at a spread of temp names (the next pids) and look-alike names: the write
    succeeds into the victim's own ledger, the stale-temp cleanup removes the links
    without following them, and look-alike names are left alone."""
    home.make_folder(0o777)
    ops = _temp_spread(home)
    assert set(home.plant(ops)) == {"ok"}
    os.chmod(home.folder, 0o700)
    before = home.targets()
    look_alikes = {name for name in os.listdir(home.folder) if not _is_temp(name)}

    result = home.write_one()

    assert result["code"] == 0, result
    home.assert_own_ledger(["r1"])
    assert home.targets() == before
    left = set(os.listdir(home.folder)) - {LEDGER_NAME, LOCK_NAME}
    assert left == look_alikes
    assert home.audit()[-1]["outcome"] == "ok"


def test_temp_name_planted_after_the_cleanup_is_not_followed(home: SharedHome) -> None:
    """The exact temp names the victim will try next are planted (a symlink to the
    victim's file, a FIFO, a hard link to the attacker's file) after its stale-temp
    cleanup ran: it moves on to a fresh name and the planted names stay untouched."""
    home.make_folder(0o700)
    assert home.write_one("r0")["code"] == 0
    suffixes = ["0" * 12, "1" * 12, "2" * 12]
    proc = home.runtime.popen(
        VICTIM, VICTIM_SCRIPT, [home.mode, json.dumps([(str(home.folder), "r1")])],
        home.victim_env(PAUSE_AFTER_CLEANUP=json.dumps(suffixes)), stdin=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        pid = json.loads(proc.stdout.readline())["paused"]
        names = _temp_names(pid, suffixes)
        os.chmod(home.folder, 0o777)
        made = home.plant([
            ["symlink", str(home.secret), str(home.folder / names[0])],
            ["fifo", str(home.folder / names[1])],
            ["link", str(home.bait), str(home.folder / names[2])],
        ])
        os.chmod(home.folder, 0o700)
        assert made == ["ok", "ok", "ok"]
        planted = [_describe(home.folder / name) for name in names]
        before = home.targets()

        out, err = proc.communicate("\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and err == "", err
    result = json.loads(out.splitlines()[-1])[0]
    assert result["code"] == 0 and result["unused_suffixes"] == 0, result
    home.assert_own_ledger(["r0", "r1"])
    assert home.targets() == before
    assert [_describe(home.folder / name) for name in names] == planted


# Races: the attacker keeps swapping names while the victim writes 200 records.

RACE_FOLDERS_SCRIPT = """
import json, os, stat, sys, time
names, victim_folder, attacker_folder, stop = json.loads(sys.argv[1])
me, rounds, planted = os.getuid(), 0, 0
deadline = time.monotonic() + 120
while not os.path.exists(stop) and time.monotonic() < deadline:
    rounds += 1
    for index, name in enumerate(names):
        try:
            kind = (index + rounds) % 4
            if kind == 0:
                os.symlink(victim_folder, name)
            elif kind == 1:
                os.symlink(attacker_folder, name)
            elif kind == 2:
                os.mkdir(name, 0o777)
            else:
                os.mkfifo(name, 0o666)
            planted += 1
        except OSError:
            pass
    for name in names:
        try:
            st = os.lstat(name)
            if st.st_uid == me:
                (os.rmdir if stat.S_ISDIR(st.st_mode) else os.unlink)(name)
        except OSError:
            pass
print(json.dumps([rounds, planted]))
"""

RACE_LOCK_SCRIPT = """
import json, os, sys, time
folder, lock, ledger_name, secret, bait, stop = json.loads(sys.argv[1])
rounds, swapped = 0, 0
deadline = time.monotonic() + 120
while not os.path.exists(stop) and time.monotonic() < deadline:
    rounds += 1
    scratch = os.path.join(folder, ".attacker-%d" % (rounds % 8))
    # Whatever is put at the lock name stays there until the folder is open again.
    kind = rounds % 4
    try:
        if os.path.lexists(scratch):
            os.unlink(scratch)
        if kind == 0:
            os.symlink(secret, scratch)
        elif kind == 1:
            os.link(bait, scratch)
        elif kind == 2:
            os.mkfifo(scratch)
            os.chmod(scratch, 0o666)
        if kind == 3:
            os.unlink(lock)
        else:
            os.rename(scratch, lock)
        swapped += 1
    except OSError:
        pass
    try:
        os.symlink(secret, os.path.join(folder, ".%s.%d.%012x.tmp" % (ledger_name, rounds, rounds)))
    except OSError:
        pass
print(json.dumps([rounds, swapped]))
"""


def _race(home: SharedHome, script: str, argument: list[Any],
          plan: list[tuple[Path, str]], toggle: Optional[Path] = None) -> list[dict[str, Any]]:
    """Run the attacker's ``script`` in a loop while the victim writes ``plan``."""
    stop = home.shared / "stop"
    attacker = home.runtime.popen(ATTACKER, script, [json.dumps(argument + [str(stop)])],
                                  home.runtime.env(ATTACKER, home.attacker_home))
    halt = threading.Event()

    def flip_mode() -> None:
        # The owner keeps opening and closing the folder (a careless tool, say).
        assert toggle is not None
        while not halt.is_set():
            for mode in (0o777, 0o700):
                os.chmod(toggle, mode)
                time.sleep(0.002)

    flipper = threading.Thread(target=flip_mode) if toggle else None
    try:
        time.sleep(0.2)
        if flipper:
            flipper.start()
        results = home.write(plan, timeout=240)
    finally:
        halt.set()
        if flipper:
            flipper.join()
        stop.touch()
        out, err = attacker.communicate(timeout=60)
    if toggle:
        os.chmod(toggle, 0o700)
    assert attacker.returncode == 0, err
    rounds, done = json.loads(out)
    assert rounds > 0 and done > 0, "the attacker never got to plant anything"
    assert len(results) == len(plan)
    assert {result["code"] for result in results} <= {0, 77}, results
    for result in results:
        assert (result["code"] == 0) == (result["stderr"] == ""), result
    outcomes = [event["outcome"] for event in home.audit()[-len(plan):]]
    assert outcomes == ["ok" if r["code"] == 0 else "refused" for r in results]
    return results


@pytest.mark.slow
def test_attacker_racing_for_folder_names_while_the_victim_writes(home: SharedHome) -> None:
    """The victim writes 200 records spread over 40 folders it has not created yet;
    the attacker keeps planting links, folders and FIFOs at those names and removing
    them. Every write exits 0 or 77, each folder the victim won holds a valid ledger,
    the records are exactly those of the writes that exited 0, no target changes."""
    names = [home.shared / f"victim-ledger-{n}" for n in range(40)]
    plan = [(names[i % 40], f"race-{i}") for i in range(200)]
    before = home.targets()

    results = _race(home, RACE_FOLDERS_SCRIPT,
                    [[str(n) for n in names], str(home.docs), str(home.drop)], plan)

    kept: dict[Path, list[str]] = {}
    for name in names:
        st = os.lstat(name) if os.path.lexists(name) else None
        if st and stat.S_ISDIR(st.st_mode) and st.st_uid == VICTIM:
            if (name / LEDGER_NAME).exists():
                kept[name] = [r["run_id"] for r in json.loads((name / LEDGER_NAME).read_text())]
                home.assert_own_ledger(kept[name], name)
    expected: dict[Path, list[str]] = {}
    for (folder, _), result in zip(plan, results):
        if result["code"] == 0:
            expected.setdefault(folder, []).append(result["run_id"])
    assert kept == expected
    assert home.targets() == before


@pytest.mark.slow
def test_attacker_swapping_the_lock_file_while_the_victim_writes(home: SharedHome) -> None:
    """The victim's folder keeps flipping between 0700 and 0777 while the attacker swaps
    the lock file for a symlink to the victim's file, a hard link and a FIFO, and plants
    temp names, in a tight loop; the victim writes 200 records. Every write exits 0 or 77,
    the ledger stays valid and holds exactly the records of the writes that exited 0, and
    nothing is written through a link."""
    home.make_folder(0o700)
    plan = [(home.folder, f"race-{i}") for i in range(200)]
    before = home.targets()

    results = _race(home, RACE_LOCK_SCRIPT,
                    [str(home.folder), str(home.lock), LEDGER_NAME, str(home.secret),
                     str(home.bait)], plan, toggle=home.folder)

    written = [r["run_id"] for r in results if r["code"] == 0]
    if written:
        home.assert_own_ledger(written)
    else:
        assert not os.path.lexists(home.ledger)
    assert home.targets() == before
