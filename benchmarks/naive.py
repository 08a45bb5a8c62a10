"""Scenario 4: the naive generator segments exist to beat, one round trip per ID.

``INSERT INTO idgen_bench_naive () VALUES ()`` on an ``AUTO_INCREMENT`` table
with autocommit, then the new key read from the insert's reply
(``cursor.lastrowid``): one round trip per ID over raw PyMySQL, no ORM, one
connection, the most generous form of the baseline. It is compared with the
``next_id()`` and ``NextId`` figures of scenarios 1 and 2 of the same run.
"""
from __future__ import annotations

import time

from sqlalchemy.engine import make_url

from benchmarks.harness import Context, Row, progress

TABLE = "idgen_bench_naive"


def connect(url: str, *, database: bool = True):  # type: ignore[no-untyped-def]
    """A PyMySQL connection with autocommit to the MariaDB server of ``url``, and to its
    database unless ``database`` is false."""
    import pymysql

    u = make_url(url)
    return pymysql.connect(host=u.host or "127.0.0.1", port=u.port or 3306,
                           user=u.username or "root", password=u.password or "",
                           database=u.database if database else None, autocommit=True,
                           connect_timeout=5)


def naive_rate(url: str, seconds: float) -> tuple[float, int]:
    """IDs/s of the naive generator, and how many IDs it made."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} "
                        "(id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB")
            insert = f"INSERT INTO {TABLE} () VALUES ()"
            for _ in range(20):  # warm up
                cur.execute(insert)
            made, last = 0, 0
            start = time.perf_counter()
            end = start + seconds
            while time.perf_counter() < end:
                cur.execute(insert)
                key = cur.lastrowid
                assert key > last
                last = key
                made += 1
            took = time.perf_counter() - start
            cur.execute(f"DROP TABLE {TABLE}")
        return made / took, made
    finally:
        conn.close()


_AGAINST = {
    "next_id": ("next_id(), 1 thread", "inproc.1t.itertools.count", "≥ 1000"),
    "nextid1": ("NextId count=1, 1 caller", "grpc.count1.callers1", ""),
    "nextid1000": ("NextId count=1000, 16 callers (IDs/s)", "grpc.count1000.callers16", ""),
}


def run(ctx: Context) -> None:
    rows = {
        name: ctx.run.declare(Row(
            key=f"naive.{name}", scenario=4, figure=f"{label} vs naive auto-increment",
            unit="IDs/s", baseline_name="MariaDB INSERT + lastrowid, 1 round trip per ID",
            target=target))
        for name, (label, _source, target) in _AGAINST.items()
    }
    ctx.run.start(4, "naive one-round-trip-per-ID auto-increment on MariaDB")
    if ctx.mariadb_url is None:
        ctx.run.skip(4, ctx.mariadb_reason)
        ctx.run.finish(4)
        return
    try:
        rate, made = naive_rate(ctx.mariadb_url, 0.5 if ctx.quick else 3.0)
    except Exception as exc:
        ctx.run.skip(4, f"the naive baseline failed on MariaDB: {type(exc).__name__}: {exc}")
        ctx.run.finish(4)
        return
    progress(f"  naive auto-increment: {rate:,.0f} IDs/s")
    for name, (_label, source, _target) in _AGAINST.items():
        row = rows[name]
        src = ctx.run.rows.get(source)
        row.baseline = rate
        row.details = {"naive_ids": made, "idgen_figure_from": source}
        if src is None or src.idgen is None:
            row.skipped = f"the {source} figure did not run in this run"
            continue
        row.idgen = src.idgen  # count=1: one ID per call, so calls/s are IDs/s
        row.note = f"idgen figure from {source}"
        if row.target:
            row.met = row.ratio is not None and row.ratio >= 1000
    ctx.run.finish(4)
