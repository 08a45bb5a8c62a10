"""The fault harness: real servers on real databases, real clients, faults on a schedule.

    python -m tests.fault.harness [--seed N] [--duration S] [--ids N] [--mode each|mixed]

It sets up two fresh MariaDB databases serving one biz type (DB k hands out IDs
= k mod 2), each behind a ``TcpProxy``, starts ``--servers`` ``idgen serve``
processes on them, and drives three kinds of client processes
(``tests.fault.worker``): remote clients over all servers, remote clients
pinned to one server each, and local generators. Meanwhile it injects faults:

- ``kill``: ``kill -9`` of a server, down for a while, then restarted on its port;
- ``refuse`` / ``hang`` / ``slow``: one database refused, hanging, or slowed by
  a fraction of a second per packet, then restored;
- ``all-cut``: both databases refused or hanging, longer than the buffers last;
- ``drop-commit``: a database connection dropped between an ``UPDATE`` of the
  segment table and its ``COMMIT`` (or right after the COMMIT, its answer lost);
- ``orphan-commit``: after an ``UPDATE`` nothing more crosses that connection and
  the database's side stays open (the server's host vanished): the transaction
  and its row lock live on until the database ends them.

And operators' mistakes, made on one database's row directly (not through its
proxy), then undone:

- ``misregistration``: the row is made to clash with the other database's: the
  same residue class, a registration of its own, or a delta for one database;
- ``damaged-row``: a negative ``max_id``, a ``step`` or ``delta`` of 0, a
  ``remainder`` equal to ``delta``, or a ``step`` below ``delta``;
- ``lowered-max-id``: a backup restored. The row's ``max_id`` is taken, load
  goes on for a while, then the row is locked against allocation long enough
  for every server to read its latest value, and set back to what was taken,
  which undoes every segment allocated from it meanwhile. (What no running
  server has seen cannot be guarded: README, what the server checks.)

During the first two, servers refuse the biz type (``BizTypeMisconfigured``,
which those faults explain) and serve it again once the row is repaired; the
third must cost callers nothing.

``--mode each`` runs every kind once, in an order drawn from the seed;
``--mode mixed`` draws faults (sometimes a kill during a database fault) until
``--duration`` has passed and ``--ids`` IDs were received. At the end it waits
for recovery, stops everything and checks the whole history
(``tests.fault.check``): exit status 0 only if every check passed. The seed is
printed first: ``--seed`` replays the same schedule (timings still vary) for
the same ``--kinds``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.fault.check import Fault, Findings, check, load_callers
from tests.support.databases import MariaDB
from tests.support.servers import ServerProcess
from tests.support.stores import ProxiedDatabases
from tests.support.waiting import poll

__all__ = ["KINDS", "Config", "Report", "run"]

KINDS = ("kill", "refuse", "hang", "slow", "all-cut", "drop-commit", "orphan-commit",
         "misregistration", "damaged-row", "lowered-max-id")
DAMAGE = {"max_id": "max_id = -1", "step": "step = 0", "delta": "delta = 0",
          "remainder": "remainder = delta", "narrow": "step = delta - 1"}
"""How ``damaged-row`` damages a row: the SQL assignment for each way."""
CLASH = {"class": "remainder = 1 - remainder", "apart": "registration = 'apart'",
         "single": "delta = 1, remainder = 0"}
"""How ``misregistration`` makes a row clash with the other database's."""
BIZ = "fault"
LOCKED_FOR = 2.2
"""Seconds ``lowered-max-id`` holds the row locked: two of the servers' watch intervals,
and less than their database timeout (3 s), so that an allocation waiting on the lock
is not failed."""
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Config:
    seed: int | None = None
    mode: str = "mixed"
    kinds: tuple[str, ...] = KINDS
    duration: float = 60.0
    """Mixed mode: inject faults for at least this long (seconds)."""
    ids: int = 0
    """Mixed mode: and until the callers received at least this many IDs."""
    max_duration: float = 3600.0
    servers: int = 3
    step: int = 20_000
    remote_callers: int = 3
    pinned_callers: int = 0
    """Callers pinned to one server each; 0 means one per server."""
    local_callers: int = 3
    remote_rate: float = 20.0
    local_rate: float = 40.0
    remote_count: int = 100
    local_count: int = 500
    grace: float = 10.0
    """Seconds after a fault during which the errors it explains may still appear."""
    hold_scale: float = 1.0
    """Multiplies how long each fault is held (the short run in the test suite uses less)."""
    workdir: str | None = None
    keep: bool = False


@dataclass
class Report:
    seed: int
    elapsed: float
    faults: list[Fault]
    findings: Findings
    workers: dict[str, dict] = field(default_factory=dict)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return self.findings.ok and not any(w.get("failures") for w in self.workers.values())


class _Worker:
    """One client process and what it reports on stdout."""

    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.ids = 0
        self.errors = 0
        self.done: dict | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fault.worker", *args], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, name=f"worker-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("progress "):
                _, ids, errors = line.split()
                self.ids, self.errors = int(ids), int(errors)
            elif line.startswith("done "):
                self.done = json.loads(line[5:])
            else:
                self.output.append(line)

    def stop(self, timeout: float = 90.0) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        if self.done is None:
            tail = "".join(self.output[-20:])
            return {"failures": {self.name: f"exited {self.proc.returncode} without a summary:\n{tail}"}}
        return self.done


class _Cluster:
    def __init__(self, config: Config, workdir: str, say) -> None:
        self.config = config
        self.say = say
        self.mariadb = MariaDB()
        self.databases = ProxiedDatabases([self.mariadb.create() for _ in range(2)])
        self.databases.register(BIZ, step=config.step)
        self.urls = self.databases.urls
        self.direct = self.databases.stores
        self.proxies = self.databases.proxies
        self.servers = [ServerProcess(self.databases.proxied, cwd=workdir).start()
                        for _ in range(config.servers)]
        self.workers: list[_Worker] = []

    def versions(self) -> list[int]:
        """Each database's allocation count (the row's version), read directly."""
        return [store.read(BIZ).version for store in self.direct]

    def max_ids(self) -> dict[str, int]:
        """Each database's max_id, read directly (not through its proxy)."""
        return {str(k): store.read(BIZ).max_id for k, store in enumerate(self.direct)}

    def close(self, keep: bool, workdir: str) -> None:
        for n, server in enumerate(self.servers):
            with open(os.path.join(workdir, f"server-{n}.log"), "w") as f:
                f.writelines(server.output)
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(10)
        for server in self.servers:
            server.stop()
        self.databases.close()
        if keep:
            self.say(f"databases kept: {', '.join(self.urls)}")
            self.mariadb._conn.close()
        else:
            self.mariadb.drop_all()


class _Injector:
    """Injects one fault at a time (or a kill alongside a database fault) and logs it."""

    def __init__(self, cluster: _Cluster, rng: random.Random, t_zero: float, say) -> None:
        self.scale = cluster.config.hold_scale
        self.cluster = cluster
        self.rng = rng
        self.t_zero = t_zero
        self.say = say
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._quit = threading.Event()

    def _log(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)
        extra = ", ".join(f"{k}={v}" for k, v in fault.detail.items())
        self.say(f"[{fault.start - self.t_zero:7.1f}s] {fault.kind} {fault.target} for "
                 f"{fault.end - fault.start:.1f}s" + (f" ({extra})" if extra else ""))

    def params(self, kind: str) -> dict:
        """Draw a fault's parameters from the seeded generator (so a seed replays them)."""
        r, k = self.rng, self.scale
        if kind == "kill":
            return {"server": r.randrange(len(self.cluster.servers)),
                    "down": round(k * r.uniform(0.5, 3), 2)}
        if kind in ("refuse", "hang"):
            return {"db": r.randrange(2), "hold": round(k * r.uniform(2, 8), 2)}
        if kind == "slow":
            return {"db": r.randrange(2), "hold": round(k * r.uniform(3, 8), 2),
                    "delay": round(r.uniform(0.1, 0.6), 2)}
        if kind == "all-cut":
            return {"how": r.choice(("refuse", "hang")), "hold": round(k * r.uniform(8, 14), 2)}
        if kind == "drop-commit":
            return {"db": r.randrange(2), "times": r.randint(1, 3), "after": r.random() < 0.5}
        if kind == "orphan-commit":
            return {"db": r.randrange(2)}
        if kind == "misregistration":
            return {"db": r.randrange(2), "how": r.choice(sorted(CLASH)),
                    "hold": round(k * r.uniform(2, 6), 2)}
        if kind == "damaged-row":
            return {"db": r.randrange(2), "how": r.choice(sorted(DAMAGE)),
                    "hold": round(k * r.uniform(2, 6), 2)}
        if kind == "lowered-max-id":
            return {"db": r.randrange(2), "back": round(k * r.uniform(2, 6), 2)}
        raise ValueError(kind)

    def inject(self, kind: str, p: dict) -> None:
        before = self.cluster.versions()
        getattr(self, "_" + kind.replace("-", "_"))(**p)
        after = self.cluster.versions()
        self.say(f"           segments allocated meanwhile per database: "
                 f"{[b - a for a, b in zip(before, after)]}")

    def _kill(self, server: int, down: float) -> None:
        proc = self.cluster.servers[server]
        start = time.monotonic()
        proc.kill()
        at_kill = self.cluster.max_ids()
        self._quit.wait(down)
        proc.start()
        self._log(Fault("kill", proc.address, start, time.monotonic(),
                        {"server": server, "max_ids": at_kill}))

    def _cut(self, kind: str, db: int, hold: float, delay: float = 0.0) -> None:
        proxy = self.cluster.proxies[db]
        start = time.monotonic()
        if kind == "refuse":
            proxy.refuse()
        elif kind == "hang":
            proxy.hang()
        else:
            proxy.slow(delay)
        self._quit.wait(hold)
        proxy.restore()
        detail = {"delay": delay} if kind == "slow" else {}
        self._log(Fault(kind, f"db{db}", start, time.monotonic(), detail))

    def _refuse(self, db: int, hold: float) -> None:
        self._cut("refuse", db, hold)

    def _hang(self, db: int, hold: float) -> None:
        self._cut("hang", db, hold)

    def _slow(self, db: int, hold: float, delay: float) -> None:
        self._cut("slow", db, hold, delay)

    def _all_cut(self, how: str, hold: float) -> None:
        """Cut every database for ``hold`` seconds and, beyond that, until every client
        process has seen an error (its buffers ran dry), for at most a minute more."""
        workers = self.cluster.workers
        errors_before = [w.errors for w in workers]
        start = time.monotonic()
        for proxy in self.cluster.proxies:
            proxy.refuse() if how == "refuse" else proxy.hang()
        self._quit.wait(hold)
        poll(lambda: all(w.errors != e for w, e in zip(workers, errors_before)), 60, 0.2)
        dry = [w.name for w, e in zip(workers, errors_before) if w.errors > e]
        for proxy in self.cluster.proxies:
            proxy.restore()
        self._log(Fault("all-cut", "all", start, time.monotonic(),
                        {"how": how, "ran_dry": dry}))

    def _orphan_commit(self, db: int) -> None:
        self._drop_commit(db, 1, after=False, partition=True)

    def _drop_commit(self, db: int, times: int, after: bool, partition: bool = False) -> None:
        proxy = self.cluster.proxies[db]
        seen = len(proxy.drops)
        start = time.monotonic()
        proxy.drop_at_commit(times, after=after, partition=partition)
        poll(lambda: len(proxy.drops) >= seen + times, start + 20 - time.monotonic(), 0.05)
        proxy.disarm()
        drops = [{"db": db, "when": d.when, "max_id": d.max_id} for d in proxy.drops[seen:]]
        kind = "orphan-commit" if partition else "drop-commit"
        self._log(Fault(kind, f"db{db}", start, time.monotonic(), {"armed": times, "drops": drops}))

    def _edit(self, db: int, assignment: str, where: str = "") -> None:
        """Change the row by hand, as an operator would (the version moves, so that an
        allocation in flight does not write over the change)."""
        with self.cluster.direct[db].engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE idgen_segment SET {assignment}, version = version + 1 "
                                 f"WHERE biz_type = '{BIZ}' {where}")

    def _row_fault(self, kind: str, db: int, how: str, hold: float, edits: dict[str, str]) -> None:
        before = self.cluster.direct[db].read(BIZ)
        start = time.monotonic()
        self._edit(db, edits[how])
        self._quit.wait(hold)
        # Put back only the fields that were changed; a max_id only if still damaged, so
        # that what servers allocated meanwhile (none should have) is never undone.
        fields = {"max_id": f"max_id = {before.max_id}", "step": f"step = {before.step}",
                  "delta": f"delta = {before.delta}, remainder = {before.remainder}",
                  "remainder": f"remainder = {before.remainder}",
                  "narrow": f"step = {before.step}", "class": f"remainder = {before.remainder}",
                  "apart": f"registration = '{before.registration}'",
                  "single": f"delta = {before.delta}, remainder = {before.remainder}"}
        self._edit(db, fields[how], "AND max_id < 0" if how == "max_id" else "")
        self._log(Fault(kind, f"db{db}", start, time.monotonic(), {"how": how}))

    def _misregistration(self, db: int, how: str, hold: float) -> None:
        self._row_fault("misregistration", db, how, hold, CLASH)

    def _damaged_row(self, db: int, how: str, hold: float) -> None:
        self._row_fault("damaged-row", db, how, hold, DAMAGE)

    def _lowered_max_id(self, db: int, back: float) -> None:
        """Take the row's max_id, let ``back`` seconds of allocations pass, then restore it."""
        store = self.cluster.direct[db]
        taken = store.read(BIZ).max_id
        self._quit.wait(back)
        start = time.monotonic()
        with store.engine.begin() as conn:
            # Locked, the row takes no allocation (servers time out on it and use the other
            # database) while every server's watch reads its latest max_id, then it goes back.
            was = conn.exec_driver_sql(f"SELECT max_id FROM idgen_segment WHERE biz_type = "
                                       f"'{BIZ}' FOR UPDATE").scalar_one()
            self._quit.wait(LOCKED_FOR)
            conn.exec_driver_sql(f"UPDATE idgen_segment SET max_id = {taken}, version = "
                                 f"version + 1 WHERE biz_type = '{BIZ}'")
        restored = time.monotonic()
        healed = poll(lambda: store.read(BIZ).max_id > was, 30, 0.05)
        self._log(Fault("lowered-max-id", f"db{db}", start, time.monotonic(),
                        {"taken": taken, "was": was, "undone": was - taken,
                         "moved_past_in": round(time.monotonic() - restored, 2) if healed else None}))

    def episode(self, kinds: tuple[str, ...]) -> None:
        """One fault, or in mixed mode sometimes a kill during a database fault."""
        kind = self.rng.choice(kinds)
        params = self.params(kind)
        if "kill" in kinds and kind in ("refuse", "hang", "slow", "drop-commit", "orphan-commit") \
                and self.rng.random() < 0.25:
            kill = self.params("kill")
            thread = threading.Thread(target=self.inject, args=("kill", kill), name="inject-kill")
            thread.start()
            self.inject(kind, params)
            thread.join()
        else:
            self.inject(kind, params)


def _start_workers(cluster: _Cluster, config: Config, out: str, seed: int) -> dict[str, dict]:
    targets = ",".join(s.address for s in cluster.servers)
    meta: dict[str, dict] = {}
    pinned = config.pinned_callers or len(cluster.servers)
    plan = [("remote", config.remote_callers, config.remote_rate, config.remote_count),
            ("pinned", pinned, config.remote_rate, config.remote_count),
            ("local", config.local_callers, config.local_rate, config.local_count)]
    for n, (mode, threads, rate, count) in enumerate(plan):
        if not threads:
            continue
        cluster.workers.append(_Worker(mode, [
            "--mode", mode, "--targets", targets, "--biz", BIZ, "--threads", str(threads),
            "--out", out, "--name", mode, "--rate", str(rate), "--max-count", str(count),
            "--seed", str(seed + n)]))
        for i in range(threads):
            target = cluster.servers[i % len(cluster.servers)].address if mode == "pinned" else None
            meta[f"{mode}-{i}"] = {"kind": mode, "target": target}
    return meta


def run(config: Config, say=print) -> Report:
    """Run the harness; returns the report (``report.ok``) and prints as it goes."""
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    say(f"idgen fault harness: seed {seed} (replay with --seed {seed}), mode {config.mode}, "
        f"{config.servers} servers, 2 MariaDB databases through proxies, step {config.step}")
    workdir = config.workdir or tempfile.mkdtemp(prefix="idgen-fault-")
    out = os.path.join(workdir, "calls")
    os.makedirs(out, exist_ok=True)
    cluster = _Cluster(config, workdir, say)
    t_zero = time.monotonic()
    injector = _Injector(cluster, rng, t_zero, say)
    workers: dict[str, dict] = {}
    report: Report | None = None
    try:
        meta = _start_workers(cluster, config, out, seed)
        say(f"servers {[s.address for s in cluster.servers]}; callers {len(meta)} "
            f"({', '.join(sorted({m['kind'] for m in meta.values()}))}); workdir {workdir}")
        _wait_for_ids(cluster, 1, 30)
        t_zero = injector.t_zero = time.monotonic()
        if config.mode == "each":
            order = list(config.kinds)
            rng.shuffle(order)
            for kind in order:
                injector.inject(kind, injector.params(kind))
                _quiet(rng, injector, cluster, t_zero, say)
        else:
            while True:
                elapsed = time.monotonic() - t_zero
                got = sum(w.ids for w in cluster.workers)
                if (elapsed >= config.duration and got >= config.ids) or elapsed >= config.max_duration:
                    break
                injector.episode(config.kinds)
                _quiet(rng, injector, cluster, t_zero, say)
        say(f"[{time.monotonic() - t_zero:7.1f}s] faults over; {config.grace + 3:.0f}s of calm to recover")
        injector._quit.wait(config.grace + 3)
        for worker in cluster.workers:
            workers[worker.name] = worker.stop()
        elapsed = time.monotonic() - t_zero
        say(f"[{elapsed:7.1f}s] callers stopped: {workers}")
        callers = load_callers(out, meta)
        findings = check(callers, injector.faults, grace=config.grace, step=config.step, delta=2)
        report = Report(seed, elapsed, injector.faults, findings, workers, workdir)
        for line in findings.lines():
            say(line)
        with open(os.path.join(workdir, "report.json"), "w") as f:
            json.dump({"seed": seed, "elapsed": elapsed, "config": asdict(config),
                       "faults": [asdict(x) for x in injector.faults], "workers": workers,
                       "findings": {k: ({" / ".join(map(str, kk)) if isinstance(kk, tuple) else kk: vv
                                         for kk, vv in v.items()} if isinstance(v, dict) else v)
                                    for k, v in asdict(findings).items()}},
                      f, indent=1, default=str)
        return report
    finally:
        cluster.close(config.keep, workdir)
        if not config.keep and config.workdir is None and report is not None and report.ok:
            shutil.rmtree(workdir, ignore_errors=True)


def _quiet(rng: random.Random, injector: _Injector, cluster: _Cluster, t_zero: float, say) -> None:
    injector._quit.wait(injector.scale * rng.uniform(1, 4))
    got = sum(w.ids for w in cluster.workers)
    errors = sum(w.errors for w in cluster.workers)
    say(f"[{time.monotonic() - t_zero:7.1f}s]   ids so far {got:,}, caller errors {errors}")


def _wait_for_ids(cluster: _Cluster, n: int, timeout: float) -> None:
    if not poll(lambda: sum(w.ids for w in cluster.workers) >= n, timeout, 0.1):
        raise RuntimeError("the callers got no ID within "
                           f"{timeout:.0f}s: {[w.output[-5:] for w in cluster.workers]}")


_NUMBERS = ("duration", "ids", "max_duration", "servers", "step", "remote_callers",
            "local_callers", "local_rate", "local_count")
"""The settings of ``Config`` that ``main`` takes as options."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fault.harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--mode", choices=("each", "mixed"), default="mixed")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds")
    for name in _NUMBERS:  # each with its type and default from Config
        default = getattr(Config, name)
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    parser.add_argument("--workdir")
    parser.add_argument("--keep", action="store_true", help="keep the recorded calls and databases")
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    config = Config(seed=args.seed, mode=args.mode, kinds=kinds, workdir=args.workdir,
                    keep=args.keep, **{name: getattr(args, name) for name in _NUMBERS})
    report = run(config, say=lambda s: print(s, flush=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
