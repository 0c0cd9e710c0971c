"""Benchmarks of the ledger side by side with the old hook's algorithm.

Usage::

    .venv/bin/python benchmarks/run.py [--quick | --smoke] [--json FILE]

Each benchmark runs the product and its reference in one run, interleaving the
repetitions (the order flips every round: AB BA AB ...), and reports the median
and the interquartile range. The reference is ``benchmarks/baseline_hook.py``
(the old hook's algorithm: flock'd side lock, JSON array, temp file and
``os.replace``, no fsync), or sqlite3 for the Python API's append rate.

Every process runs with HOME and the XDG folders in a fresh temporary folder,
so the ledgers and the audit log are never the user's own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BASELINE = os.path.join(HERE, "baseline_hook.py")
WRITER = os.path.join(HERE, "api_writer.py")
LEDGER_NAME = "escalation-history.json"
PYTHON = sys.executable

# The in-process benchmarks import the product from this checkout, like the cold ones,
# which run ``python -m ledger`` with the checkout as their working folder.
sys.path.insert(0, REPO)

SETTINGS: Dict[str, Dict[str, Any]] = {
    "full": {"cold_reps": 40, "rounds": 3, "writers": 8, "per_writer": 25, "api_rounds": 12,
             "api_batch": 20, "size_reps": 9, "sizes": (200, 2000, 20000), "import_runs": 9},
    "quick": {"cold_reps": 12, "rounds": 2, "writers": 8, "per_writer": 25, "api_rounds": 4,
              "api_batch": 10, "size_reps": 3, "sizes": (200, 2000, 20000), "import_runs": 3},
    "smoke": {"cold_reps": 2, "rounds": 1, "writers": 3, "per_writer": 3, "api_rounds": 2,
              "api_batch": 3, "size_reps": 1, "sizes": (200, 2000, 20000), "import_runs": 1},
}

# Modules whose import cost the breakdown reports (cumulative, from ``-X importtime``).
WATCHED = ("site", "runpy", "ledger", "ledger.cli", "argparse", "json", "ledger.escalation",
           "hashlib", "ledger.policy", "ledger._policy_load", "dataclasses", "typing",
           "platformdirs", "tomllib", "tomli", "ledger.store", "ledger._posix", "socket",
           "secrets", "ledger.audit", "structlog")


class BenchmarkError(RuntimeError):
    """A benchmarked command did not do what it should; its figures would mean nothing."""


# Statistics.

def summary(samples: Sequence[float]) -> Dict[str, Any]:
    """Median, quartiles and spread of ``samples`` (kept too, rounded)."""
    ordered = sorted(samples)
    if len(ordered) > 1:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median": round(statistics.median(ordered), 4),
        "q1": round(q1, 4),
        "q3": round(q3, 4),
        "iqr": round(q3 - q1, 4),
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
        "n": len(ordered),
        "samples": [round(value, 4) for value in samples],
    }


def interleave(rounds: int, arms: Sequence[Callable[[int], float]]) -> List[List[float]]:
    """Run every arm once per round, the order reversed every other round."""
    results: List[List[float]] = [[] for _ in arms]
    for round_index in range(rounds):
        order = list(range(len(arms)))
        if round_index % 2:
            order.reverse()
        for arm in order:
            results[arm].append(arms[arm](round_index))
    return results


def compare(name: str, unit: str, product: Sequence[float], reference: Sequence[float],
            reference_name: str, target: str, limit: float, higher_is_better: bool,
            **extra: Any) -> Dict[str, Any]:
    """One comparison: both summaries, the ratio of medians, and whether the target is met."""
    mine, theirs = summary(product), summary(reference)
    ratio = mine["median"] / theirs["median"] if theirs["median"] else float("inf")
    met = ratio >= limit if higher_is_better else ratio <= limit
    return {"name": name, "unit": unit, "product": mine, "reference": theirs,
            "reference_name": reference_name, "ratio": round(ratio, 3), "target": target,
            "met": met, **extra}


# The sandbox every benchmark runs in.

class Sandbox:
    """A temporary HOME, XDG folders and ledger folders; removed at the end."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="ledger-bench-")
        self.home = self.folder("home")
        # Bytecode is cached (in the sandbox) as it is for an installed package, whatever
        # this shell says: compiling the product's modules on every start is not its cost.
        dropped = ("LEDGER_POLICY", "PF_ESCALATION_LEDGER_DIR", "PYTHONDONTWRITEBYTECODE")
        self.env = {key: value for key, value in os.environ.items() if key not in dropped}
        self.env.update({
            "PYTHONPYCACHEPREFIX": os.path.join(self.root, "pycache"),
            "HOME": self.home,
            "XDG_CONFIG_HOME": os.path.join(self.home, ".config"),
            "XDG_STATE_HOME": os.path.join(self.home, ".local", "state"),
            "XDG_DATA_HOME": os.path.join(self.home, ".local", "share"),
            "XDG_CACHE_HOME": os.path.join(self.home, ".cache"),
        })
        self._count = 0

    def folder(self, name: str) -> str:
        """A new private folder (0700) under the sandbox."""
        path = os.path.join(self.root, name)
        os.mkdir(path, 0o700)
        return path

    def fresh(self, label: str) -> str:
        """A new, uniquely named private folder."""
        self._count += 1
        return self.folder(f"{label}-{self._count}")

    def env_for(self, ledger_folder: str, **more: str) -> Dict[str, str]:
        """The environment of a benchmarked process writing to ``ledger_folder``."""
        env = dict(self.env)
        env["PF_ESCALATION_LEDGER_DIR"] = ledger_folder
        env.update(more)
        return env

    def audit_file(self) -> str:
        """The product's default audit file inside the sandbox."""
        return os.path.join(self.env["XDG_STATE_HOME"], "ledger", "log", "audit.jsonl")

    def enter(self) -> None:
        """Point this process at the sandbox too (for the in-process benchmarks)."""
        os.environ.clear()
        os.environ.update(self.env)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def entries(count: int, now: Optional[float] = None) -> List[Dict[str, Any]]:
    """``count`` entries like the old hook's, oldest first."""
    now = time.time() if now is None else now
    responses = ("declined", "accepted", "forced", "declined", "dismissed")
    actions = {"forced": "force_upgraded", "accepted": "upgraded"}
    made = []
    for index in range(count):
        response = responses[index % len(responses)]
        made.append({
            "signal_hash": hashlib.sha256(str(index % 97).encode()).hexdigest(),
            "current_profile": "standard",
            "recommended": "pro",
            "user_response": response,
            "timestamp": int(now - (count - index) * 60),
            "run_id": f"r-{index:06d}",
            "action_taken": actions.get(response, "stayed"),
        })
    return made


def fill(folder: str, count: int) -> str:
    """Write a ledger of ``count`` entries into ``folder`` as the old hook did; return its path."""
    path = os.path.join(folder, LEDGER_NAME)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(entries(count), handle, indent=2)
    os.chmod(path, 0o600)
    return path


def load(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        value = json.load(handle)
    if not isinstance(value, list):
        raise BenchmarkError(f"{path} is no longer a JSON array")
    return value


# Running commands.

def product_cmd(launcher: str) -> List[str]:
    """How the product starts: ``python -m ledger``, the venv's script, or without ``site``."""
    if launcher == "script":
        return [os.path.join(os.path.dirname(PYTHON), "ledgerctl")]
    if launcher == "no-site":
        return [PYTHON, "-S", "-m", "ledger"]
    return [PYTHON, "-m", "ledger"]


def baseline_cmd(launcher: str) -> List[str]:
    """How the baseline starts: the same interpreter, with ``site`` whenever the product has it."""
    return [PYTHON, "-S", BASELINE] if launcher == "no-site" else [PYTHON, BASELINE]


def run_once(cmd: Sequence[str], env: Dict[str, str], expect: int) -> Tuple[float, str]:
    """Run ``cmd`` in a new process; return its wall time in ms and its stdout."""
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, cwd=REPO)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != expect or proc.stderr:
        raise BenchmarkError(
            f"{' '.join(cmd)} exited {proc.returncode} (expected {expect}); "
            f"stderr: {proc.stderr.decode(errors='replace').strip()[:400]}")
    return elapsed, proc.stdout.decode()


def warm_up(box: Sandbox, launcher: str) -> None:
    """Run every command once, so that the bytecode cache is written before any timing."""
    folder = box.fresh("warm-up")
    env = box.env_for(folder)
    for base in (product_cmd(launcher), baseline_cmd(launcher)):
        run_once(base + ["record", "w" * 64, "standard", "pro", "declined", "warm"], env, 0)
        run_once(base + ["lookup", "w" * 64], env, 0)
        run_once(base + ["replay_safe", "w" * 64], env, 1)
    proc = subprocess.run([PYTHON, WRITER, "product", folder, "1", "warm"], env=env, input="go\n",
                          stdout=subprocess.DEVNULL, text=True, cwd=REPO)
    if proc.returncode:
        raise BenchmarkError("the API writer does not run")


# a. cold reads.

def bench_cold_reads(box: Sandbox, cfg: Dict[str, Any], launcher: str) -> List[Dict[str, Any]]:
    folder = box.fresh("reads")
    fill(folder, 200)
    declined = entries(200)[-5]
    sig = declined["signal_hash"]
    env = box.env_for(folder)
    results = []
    for command, expect in (("replay_safe", 1), ("lookup", 0)):
        mine = product_cmd(launcher) + [command, sig]
        theirs = baseline_cmd(launcher) + [command, sig]
        for cmd in (mine, theirs):
            run_once(cmd, env, expect)
        outputs: List[str] = []

        def arm(cmd: List[str]) -> Callable[[int], float]:
            def go(_: int) -> float:
                elapsed, out = run_once(cmd, env, expect)
                outputs.append(out)
                return elapsed
            return go

        product, baseline = interleave(cfg["cold_reps"], [arm(mine), arm(theirs)])
        if command == "lookup" and len({json.dumps(json.loads(o), sort_keys=True)
                                        for o in outputs}) != 1:
            raise BenchmarkError("the product and the baseline looked up different entries")
        results.append(compare(f"a. cold {command} (200 entries)", "ms", product, baseline,
                               "baseline hook", "<= 1.25x", 1.25, False))
    return results


# b. cold record.

def bench_cold_record(box: Sandbox, cfg: Dict[str, Any], launcher: str) -> Dict[str, Any]:
    mine_dir, their_dir = box.fresh("record-product"), box.fresh("record-baseline")
    fill(mine_dir, 200)
    fill(their_dir, 200)
    audit_before = count_writes(box.audit_file())
    written = {"product": 0, "baseline": 0}

    def arm(kind: str, folder: str, base: List[str]) -> Callable[[int], float]:
        env = box.env_for(folder)

        def go(index: int) -> float:
            written[kind] += 1
            args = ["cold" * 16, "standard", "pro", "declined", f"b-{kind}-{written[kind]}"]
            elapsed, out = run_once(base + ["record"] + args, env, 0)
            if json.loads(out)["run_id"] != args[-1]:
                raise BenchmarkError(f"{kind} printed the wrong entry: {out!r}")
            return elapsed
        return go

    product, baseline = interleave(cfg["cold_reps"], [
        arm("product", mine_dir, product_cmd(launcher)),
        arm("baseline", their_dir, baseline_cmd(launcher))])
    for kind, folder in (("product", mine_dir), ("baseline", their_dir)):
        kept = load(os.path.join(folder, LEDGER_NAME))
        if len(kept) != 200 or kept[-1]["run_id"] != f"b-{kind}-{written[kind]}":
            raise BenchmarkError(f"the {kind} ledger does not end with its last record")
    audited = count_writes(box.audit_file()) - audit_before
    if audited != written["product"]:
        raise BenchmarkError(f"{written['product']} records but {audited} audit events")
    return compare("b. cold record (200 entries)", "ms", product, baseline, "baseline hook",
                   "<= 2.5x", 2.5, False, audit_events=audited)


def count_writes(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if json.loads(line).get("event") == "ledger.write")


# c. concurrent writers.

def check_loss(folder: str, writers: int, per_writer: int) -> Dict[str, int]:
    """Count the records every writer wrote that the ledger does not hold."""
    path = os.path.join(folder, LEDGER_NAME)
    found = {entry["run_id"] for entry in load(path)} if os.path.exists(path) else set()
    wanted = {f"w{w}-{i}" for w in range(writers) for i in range(per_writer)}
    stray = len([name for name in os.listdir(folder) if name.endswith(".tmp")])
    return {"expected": len(wanted), "lost": len(wanted - found), "temp_files_left": stray}


def cold_writers(box: Sandbox, cfg: Dict[str, Any], base: List[str]
                 ) -> Tuple[float, Dict[str, int]]:
    """Hook-like chains at once (8), each running ``record`` in a new process N times (25)."""
    folder = box.fresh("writers")
    env = box.env_for(folder)
    writers, per_writer = cfg["writers"], cfg["per_writer"]
    gate = threading.Barrier(writers + 1)
    failures: List[str] = []

    def chain(w: int) -> None:
        gate.wait()
        for i in range(per_writer):
            try:
                run_once(base + ["record", "c" * 64, "standard", "pro", "declined", f"w{w}-{i}"],
                         env, 0)
            except BenchmarkError as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=chain, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    gate.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise BenchmarkError(f"{len(failures)} writers failed; first: {failures[0]}")
    return writers * per_writer / elapsed, check_loss(folder, writers, per_writer)


def api_writers(box: Sandbox, cfg: Dict[str, Any], kind: str) -> Tuple[float, Dict[str, int]]:
    """The same writers as processes that append through the Python API after a start gate."""
    folder = box.fresh("api-writers")
    writers, per_writer = cfg["writers"], cfg["per_writer"]
    env = box.env_for(folder)
    procs = [subprocess.Popen([PYTHON, WRITER, kind, folder, str(per_writer), f"w{w}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=REPO,
                              text=True) for w in range(writers)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise BenchmarkError(f"an API writer ({kind}) did not start")
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        codes = [proc.wait() for proc in procs]
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if any(codes):
        raise BenchmarkError(f"API writers ({kind}) exited {codes}")
    return writers * per_writer / elapsed, check_loss(folder, writers, per_writer)


def bench_concurrent(box: Sandbox, cfg: Dict[str, Any], launcher: str) -> List[Dict[str, Any]]:
    label = f"{cfg['writers']} writers x {cfg['per_writer']} records"
    results = []
    for name, runner in (
        (f"c. {label}, each a new process", lambda kind: cold_writers(
            box, cfg, product_cmd(launcher) if kind == "product" else baseline_cmd(launcher))),
        (f"c2. {label}, Python API (start-up excluded)", lambda kind: api_writers(box, cfg, kind)),
    ):
        losses: Dict[str, List[Dict[str, int]]] = {"product": [], "baseline": []}

        def arm(kind: str, run: Callable[[str], Tuple[float, Dict[str, int]]] = runner
                ) -> Callable[[int], float]:
            def go(_: int) -> float:
                rate, loss = run(kind)
                losses[kind].append(loss)
                return rate
            return go

        product, baseline = interleave(cfg["rounds"], [arm("product"), arm("baseline")])
        lost = {kind: sum(item["lost"] for item in items) for kind, items in losses.items()}
        temps = {kind: sum(item["temp_files_left"] for item in items)
                 for kind, items in losses.items()}
        result = compare(name, "records/s", product, baseline, "baseline hook",
                         ">= 0.8x, 0 lost", 0.8, True, lost=lost, temp_files_left=temps)
        result["met"] = result["met"] and lost["product"] == 0
        if name.startswith("c2."):
            result["target"] = "(informative)"
            result["met"] = None
        results.append(result)
    return results


# d. the Python API against sqlite3.

def bench_api_rate(box: Sandbox, cfg: Dict[str, Any]) -> Dict[str, Any]:
    from ledger.escalation import make_entry, open_ledger

    sys.path.insert(0, HERE)
    import baseline_hook

    mine_dir, their_dir, db_dir = box.fresh("api"), box.fresh("api-baseline"), box.fresh("sqlite")
    fill(mine_dir, 200)
    fill(their_dir, 200)
    ledger = open_ledger(directory=mine_dir)
    their_path = os.path.join(their_dir, LEDGER_NAME)
    db = sqlite3.connect(os.path.join(db_dir, "ledger.db"), isolation_level=None)
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE entries (signal_hash TEXT, current_profile TEXT, recommended TEXT,"
               " user_response TEXT, timestamp INTEGER, run_id TEXT, action_taken TEXT)")
    columns = ("signal_hash", "current_profile", "recommended", "user_response", "timestamp",
               "run_id", "action_taken")
    batch = cfg["api_batch"]
    count = {"n": 0}

    def new_entry() -> Dict[str, Any]:
        count["n"] += 1
        return make_entry("d" * 64, "standard", "pro", "declined", f"d-{count['n']}")

    def product(_: int) -> float:
        start = time.perf_counter()
        for _ in range(batch):
            ledger.append(new_entry())
        return batch / (time.perf_counter() - start)

    def sqlite(_: int) -> float:
        start = time.perf_counter()
        for _ in range(batch):
            entry = new_entry()
            db.execute("BEGIN")
            db.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [entry[key] for key in columns])
            db.execute("COMMIT")
        return batch / (time.perf_counter() - start)

    def baseline(_: int) -> float:
        start = time.perf_counter()
        for _ in range(batch):
            baseline_hook.append(their_path, new_entry())
        return batch / (time.perf_counter() - start)

    mine, theirs, old = interleave(cfg["api_rounds"], [product, sqlite, baseline])
    rows = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    db.close()
    if rows != batch * cfg["api_rounds"] or len(load(os.path.join(mine_dir, LEDGER_NAME))) != 200:
        raise BenchmarkError("the API benchmark lost records")
    result = compare("d. Python API appends (fsync on)", "appends/s", mine, theirs,
                     "sqlite3 (WAL, synchronous=FULL)", ">= 0.5x", 0.5, True,
                     sqlite_journal_mode=mode)
    result["baseline_hook"] = summary(old)
    return result


# e. one append against the size of the ledger.

def bench_sizes(box: Sandbox, cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    from ledger.escalation import make_entry, validate_entry
    from ledger.store import Ledger

    sys.path.insert(0, HERE)
    import baseline_hook

    results = []
    for size in cfg["sizes"]:
        mine_dir, their_dir = box.fresh(f"size-{size}"), box.fresh(f"size-{size}-baseline")
        fill(mine_dir, size)
        their_path = fill(their_dir, size)
        # What open_ledger builds, with the cap raised to the size.
        ledger = Ledger(os.path.join(mine_dir, LEDGER_NAME), cap=size, validate=validate_entry)

        def product(index: int) -> float:
            entry = make_entry("e" * 64, "standard", "pro", "declined", f"e-p-{index}")
            start = time.perf_counter()
            ledger.append(entry)
            return (time.perf_counter() - start) * 1000

        def baseline(index: int) -> float:
            entry = make_entry("e" * 64, "standard", "pro", "declined", f"e-b-{index}")
            start = time.perf_counter()
            baseline_hook.append(their_path, entry, size)
            return (time.perf_counter() - start) * 1000

        mine, theirs = interleave(cfg["size_reps"], [product, baseline])
        mine_path = os.path.join(mine_dir, LEDGER_NAME)
        kept = load(mine_path)
        with open(mine_path, encoding="utf-8") as handle:
            same_format = handle.read() == json.dumps(kept, indent=2)
        if len(kept) != size or len(load(their_path)) != size or not same_format:
            raise BenchmarkError(f"the ledgers of {size} entries lost their size or format")
        target = ("<= 1.0x", 1.0) if size == max(cfg["sizes"]) else ("(informative)", 1e9)
        result = compare(f"e. one append, {size} entries", "ms", mine, theirs, "baseline hook",
                         target[0], target[1], False)
        if target[1] > 1e8:
            result["met"] = None
        results.append(result)
    return results


# The breakdown: where the time goes.

def import_times(cmd: List[str], env: Dict[str, str]) -> Dict[str, float]:
    """Cumulative import times (ms) of one ``-X importtime`` run, and their top-level total."""
    if cmd[0] != PYTHON:
        cmd = [PYTHON] + cmd
    proc = subprocess.run([PYTHON, "-X", "importtime"] + cmd[1:], env=env, cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found: Dict[str, float] = {}
    total = 0.0
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        cumulative = int(parts[1]) / 1000
        if len(name) - len(name.lstrip()) == 1:  # a top-level import
            total += cumulative
        found.setdefault(name.strip(), cumulative)
    found["(all imports)"] = total
    return {name: value for name, value in found.items()
            if name in WATCHED or name == "(all imports)"}


def import_costs(box: Sandbox, cfg: Dict[str, Any], launcher: str) -> Dict[str, Any]:
    """Median cumulative import time (ms) of the watched modules in cold commands."""
    folder = box.fresh("imports")
    fill(folder, 200)
    env = box.env_for(folder)
    costs: Dict[str, Any] = {}
    commands = {"replay_safe": ["replay_safe", "f" * 64], "record": [
        "record", "f" * 64, "standard", "pro", "declined", "imports"]}
    for label, args in commands.items():
        seen: Dict[str, Dict[str, List[float]]] = {"product": {}, "baseline": {}}

        def arm(kind: str, cmd: List[str]) -> Callable[[int], float]:
            def go(_: int) -> float:
                for name, value in import_times(cmd, env).items():
                    seen[kind].setdefault(name, []).append(value)
                return 0.0
            return go

        interleave(cfg["import_runs"], [arm("product", product_cmd(launcher) + args),
                                        arm("baseline", baseline_cmd(launcher) + args)])
        for kind, values in seen.items():
            costs[f"{label}/{kind}"] = {name: round(statistics.median(times), 2)
                                        for name, times in values.items()}
    return costs


def start_up(box: Sandbox, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The bare interpreter, with and without ``site`` (the venv's .pth files)."""
    env = dict(box.env)
    bare, nosite = interleave(cfg["cold_reps"], [
        lambda _: run_once([PYTHON, "-c", "pass"], env, 0)[0],
        lambda _: run_once([PYTHON, "-S", "-c", "pass"], env, 0)[0]])
    return {"python -c pass (ms)": summary(bare), "python -S -c pass (ms)": summary(nosite)}


def median_ms(work: Callable[[], Any], reps: int) -> float:
    """Run ``work`` ``reps`` times; return the median time in ms."""
    values = []
    for _ in range(reps):
        start = time.perf_counter()
        work()
        values.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(values), 3)


def in_process_costs(box: Sandbox, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Parse, serialise, write and fsync costs (ms) at each size."""
    from ledger import records
    from ledger.escalation import validate_entry

    folder = box.fresh("costs")
    reps = max(cfg["size_reps"], 3)
    costs: Dict[str, Any] = {}
    for size in cfg["sizes"]:
        made = entries(size)
        data = json.dumps(made, indent=2).encode()
        path = os.path.join(folder, f"f{size}")

        def write_and_fsync() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

        def write_only() -> None:
            with open(path, "wb") as handle:
                handle.write(data)

        costs[str(size)] = {
            "bytes": len(data),
            "json.loads": median_ms(lambda: json.loads(data), reps),
            "records.parse (strict, validated)": median_ms(
                lambda: records.parse(data, path, validate_entry), reps),
            "json.dumps indent=2 (baseline)": median_ms(lambda: json.dumps(made, indent=2), reps),
            "records.serialize (product)": median_ms(lambda: records.serialize(made), reps),
            "write, no fsync": median_ms(write_only, reps),
            "write + fsync file + fsync folder": median_ms(write_and_fsync, reps),
        }
    return costs


def folder_steps(box: Sandbox, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The steps of one write that do not depend on the ledger's size (ms, median)."""
    from ledger._backend import backend_for
    from ledger.protections import Report

    folder = box.fresh("steps")
    fill(folder, 200)
    backend = backend_for("secure")
    reps = max(cfg["size_reps"] * 3, 3)

    def open_and_close() -> None:
        backend.open_folder(folder, create=False, report=Report()).close()

    opened = backend.open_folder(folder, create=False, report=Report())
    try:
        def lock_and_unlock() -> None:
            with opened.lock(LEDGER_NAME + ".lock", 10.0):
                pass

        data = json.dumps(entries(200), indent=2).encode()

        def replace() -> None:
            with opened.lock(LEDGER_NAME + ".lock", 10.0):
                opened.replace(LEDGER_NAME, data)

        steps = {"open and check the folder": open_and_close, "lock and unlock": lock_and_unlock,
                 "look for stale temp files": lambda: opened.remove_stale_temps(LEDGER_NAME),
                 "read the ledger": lambda: opened.read(LEDGER_NAME, 1 << 26),
                 "lock, then temp file, write, fsync, rename, folder fsync": replace}
        times = {name: median_ms(work, reps) for name, work in steps.items()}
    finally:
        opened.close()
    return times


def audit_share(box: Sandbox, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """One API append with and without the audit event (ms), 200 entries."""
    from ledger.escalation import make_entry, validate_entry
    from ledger.policy import load_policy
    from ledger.store import Ledger

    folders = [box.fresh("audit-on"), box.fresh("audit-off")]
    for folder in folders:
        fill(folder, 200)
    policy = load_policy()
    ledgers = [Ledger(os.path.join(folder, LEDGER_NAME), policy=policy, cap=200,
                      validate=validate_entry, audit=audit)
               for folder, audit in zip(folders, (True, False))]

    def arm(ledger: Ledger) -> Callable[[int], float]:
        def go(index: int) -> float:
            start = time.perf_counter()
            ledger.append(make_entry("a" * 64, "standard", "pro", "declined", f"a-{index}"))
            return (time.perf_counter() - start) * 1000
        return go

    on, off = interleave(max(cfg["size_reps"] * 3, 3), [arm(ledgers[0]), arm(ledgers[1])])
    return {"append with audit event (ms)": summary(on),
            "append without audit event (ms)": summary(off)}


# Output.

def machine() -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": PYTHON,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
    }
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    info["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def cell(stats: Dict[str, Any], unit: str) -> str:
    digits = 1 if unit in ("ms",) and stats["median"] >= 10 else 2 if unit == "ms" else 0
    return f"{stats['median']:.{digits}f} ±{stats['iqr'] / 2:.{digits}f}"


def table(results: List[Dict[str, Any]]) -> str:
    """The results as a Markdown table (median ± half the IQR)."""
    lines = ["| benchmark | unit | product | reference | ratio | target | met |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for item in results:
        met = {True: "yes", False: "**no**", None: "-"}[item["met"]]
        ref = f"{cell(item['reference'], item['unit'])} ({item['reference_name']})"
        extra = ""
        if "lost" in item:
            extra = f"; lost {item['lost']['product']} / {item['lost']['baseline']}"
        lines.append(f"| {item['name']}{extra} | {item['unit']} | "
                     f"{cell(item['product'], item['unit'])} | {ref} | {item['ratio']:.2f}x | "
                     f"{item['target']} | {met} |")
    return "\n".join(lines)


def breakdown_text(parts: Dict[str, Any]) -> str:
    lines = ["", "Start-up (ms, median):"]
    for name, stats in parts["start_up"].items():
        lines.append(f"  {name:<40} {stats['median']:8.2f}")
    lines.append("Imports (cumulative ms, median of -X importtime runs):")
    for label, costs in parts["imports"].items():
        shown = ", ".join(f"{name} {value:.1f}" for name, value in costs.items())
        lines.append(f"  {label:<22} {shown}")
    lines.append("In-process costs (ms, median):")
    for size, costs in parts["in_process"].items():
        shown = ", ".join(f"{name} {value}" for name, value in costs.items())
        lines.append(f"  {size:>6} entries: {shown}")
    shown = ", ".join(f"{name} {value}" for name, value in parts["steps"].items())
    lines.append(f"  each write: {shown}")
    for name, stats in parts["audit"].items():
        lines.append(f"  {name:<40} {stats['median']:8.2f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute)")
    size.add_argument("--smoke", action="store_true",
                      help="a handful of repetitions, to check that everything runs")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--launcher", choices=("module", "script", "no-site"), default="module",
                        help="run the product as 'python -m ledger' (default), as the venv's "
                             "ledgerctl script, or as 'python -S -m ledger' with the packages "
                             "on PYTHONPATH (both sides without the venv's .pth start-up files)")
    parser.add_argument("--only", metavar="LIST", default="a,b,c,d,e",
                        help="run only these benchmarks, such as 'a,b' (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox folder")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    cfg = SETTINGS[mode]

    box = Sandbox()
    if args.launcher == "no-site":
        import sysconfig

        box.env["PYTHONPATH"] = os.pathsep.join([REPO, sysconfig.get_paths()["purelib"]])
    started = time.time()
    load_before = os.getloadavg()
    try:
        box.enter()
        results: List[Dict[str, Any]] = []
        steps: List[Tuple[str, Callable[[], Any]]] = [
            ("a", lambda: results.extend(bench_cold_reads(box, cfg, args.launcher))),
            ("b", lambda: results.append(bench_cold_record(box, cfg, args.launcher))),
            ("c", lambda: results.extend(bench_concurrent(box, cfg, args.launcher))),
            ("d", lambda: results.append(bench_api_rate(box, cfg))),
            ("e", lambda: results.extend(bench_sizes(box, cfg))),
        ]
        warm_up(box, args.launcher)
        wanted = set(args.only.split(","))
        for label, step in steps:
            if label in wanted:
                sys.stderr.write(f"benchmark {label}...\n")
                step()
        sys.stderr.write("breakdown...\n")
        parts = {"start_up": start_up(box, cfg), "imports": import_costs(box, cfg, args.launcher),
                 "in_process": in_process_costs(box, cfg), "steps": folder_steps(box, cfg),
                 "audit": audit_share(box, cfg)}
    finally:
        if args.keep:
            sys.stderr.write(f"sandbox kept: {box.root}\n")
        else:
            box.remove()

    report = {
        "mode": mode,
        "settings": {key: list(value) if isinstance(value, tuple) else value
                     for key, value in cfg.items()},
        "launcher": " ".join(os.path.basename(part) for part in product_cmd(args.launcher)),
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        # Other work on the machine moves every figure; the ratios, interleaved, move least.
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "results": results,
        "breakdown": parts,
        "all_met": all(item["met"] is not False for item in results),
    }
    print(table(results))
    print(breakdown_text(parts))
    print(f"\n{report['machine'].get('os', '')}, {report['machine']['cpus']} CPUs, Python "
          f"{report['machine']['python']}; load average before {report['load_average']['before']}"
          f", after {report['load_average']['after']}; {report['seconds']} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
