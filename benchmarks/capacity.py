"""Allocation capacity: segments per second on one MariaDB and on a 3-node Galera cluster.

``python -m benchmarks.capacity [--seconds S] [--writers N] [--mariadb URL]``

One biz type, one row: the worst case, every writer racing for the same row.
one writer, then ``N`` writers (threads, each with a ``SegmentStore`` of its own),
call ``allocate`` in a loop for ``S`` seconds:

- on the machine's MariaDB (the baseline, measured in the same run; it commits with
  ``innodb_flush_log_at_trx_commit=1``, the cluster's nodes with 2, as Galera
  deployments commonly do, the cluster itself keeping a commit);
- on a 3-node Galera cluster started for the run on loopback ports
  (``tests/support/galera.py``), every writer through node 0;
- on the same cluster, the writers spread over the three nodes (each URL lists
  its own node first), so that they race through different nodes and Galera's
  certification settles the races (error 1213 at COMMIT, retried as conflicts).

Printed: segments/s summed over the writers, the ratio to the baseline, and
conflicts per segment (compare-and-set races lost and certification failures
alike). The README's capacity model is built from these figures.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections.abc import Sequence

from idgen_server.store import SegmentStore

BIZ = "capacity"
STEP = 1000


def measure(urls: Sequence[str], seconds: float) -> tuple[float, float]:
    """(segments/s, conflicts per segment) with one writer per URL for ``seconds``."""
    stores = [SegmentStore(url) for url in urls]
    counts = [0] * len(stores)
    start = threading.Barrier(len(stores) + 1)
    deadline: list[float] = []
    errors: list[BaseException] = []

    def write(index: int) -> None:
        start.wait()
        try:
            while time.monotonic() < deadline[0]:
                stores[index].allocate(BIZ)
                counts[index] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,), name=f"capacity-{i}")
               for i in range(len(stores))]
    for thread in threads:
        thread.start()
    deadline.append(time.monotonic() + seconds)
    began = time.monotonic()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    conflicts = sum(store.conflicts for store in stores)
    for store in stores:
        store.close()
    if errors:
        raise RuntimeError(f"{len(errors)} writers failed, the first: {errors[0]!r}")
    total = sum(counts)
    return total / elapsed, conflicts / max(total, 1)


def _on_server(url: str, statement: str) -> None:
    """Run ``statement`` on the MariaDB server of ``url`` (no database selected)."""
    import pymysql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conn = pymysql.connect(host=parsed.host or "127.0.0.1", port=parsed.port or 3306,
                           user=parsed.username or "root", password=parsed.password or "",
                           autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def _fresh_database(server_url: str) -> str:
    from sqlalchemy.engine import make_url

    from idgen_server.urls import normalize_url

    url = make_url(normalize_url(server_url))
    name = f"idgen_capacity_{uuid.uuid4().hex[:10]}"
    _on_server(str(url.render_as_string(hide_password=False)), f"CREATE DATABASE `{name}`")
    return url.set(database=name).render_as_string(hide_password=False)


def _drop(url: str) -> None:
    from sqlalchemy.engine import make_url

    _on_server(url, f"DROP DATABASE IF EXISTS `{make_url(url).database}`")


def _register(url: str) -> None:
    store = SegmentStore(url)
    try:
        store.create_schema()
        store.register(BIZ, step=STEP)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="window per case (default 5)")
    parser.add_argument("--writers", type=int, default=6, help="writers per case (default 6)")
    parser.add_argument("--mariadb", default="mysql://root@127.0.0.1:3306/test",
                        help="the MariaDB server of the baseline")
    args = parser.parse_args(argv)
    from tests.support.galera import GaleraCluster, galera_missing

    missing = galera_missing()
    if missing is not None:
        print(f"cannot start a Galera cluster: this machine lacks {missing}", file=sys.stderr)
        return 2
    n = args.writers
    single = _fresh_database(args.mariadb)
    _register(single)
    cluster = GaleraCluster()
    try:
        print("starting a 3-node Galera cluster ...", file=sys.stderr)
        cluster.start()
        database = cluster.create_database()
        _register(cluster.url(database))
        cases = [
            ("one MariaDB, 1 writer", [single]),
            ("Galera, 1 writer", [cluster.url(database, first=0)]),
            (f"one MariaDB, {n} writers", [single] * n),
            (f"Galera, {n} writers on node 0", [cluster.url(database, first=0)] * n),
            (f"Galera, {n} writers spread over 3 nodes",
             [cluster.url(database, first=i % 3) for i in range(n)]),
        ]
        results = []
        for name, urls in cases:
            rate, conflicts = measure(urls, args.seconds)
            results.append((name, rate, conflicts))
            print(f"  {name}: {rate:,.0f} segments/s, {conflicts:.2f} conflicts per segment",
                  file=sys.stderr)
    finally:
        cluster.close()
        _drop(single)
    print(f"\n| case (one row, {args.seconds:g} s each) | segments/s | ÷ one MariaDB, as many "
          "writers | conflicts per segment |")
    print("|---|--:|--:|--:|")
    baselines = {1: results[0][1], n: results[2][1]}
    for (name, rate, conflicts), (_, urls) in zip(results, cases, strict=True):
        print(f"| {name} | {rate:,.0f} | {rate / baselines[len(urls)]:.2f}× | {conflicts:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
