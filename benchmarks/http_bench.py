"""Scenario 9: the HTTP/JSON API against the same framework's do-nothing handler.

Both servers are ``HttpServer`` (``idgen_server.http_server``: aiohttp on a loop of its own,
the same settings), each in a process of its own: idgen's real server with ``--http``, and
``benchmarks.server --mode http-null``, whose handler answers ``GET /v1/ids/{biz}?count=N``
with a prebuilt body of the same size (``count`` IDs as strings), without validation, gate or
buffer. So the ratio is what idgen's own code costs per request.

The load is ``CALLERS`` concurrent aiohttp clients on keep-alive connections, in this
process, for a fixed window; the two servers are measured alternately, best of 3 each, at
count=1 and count=1000. Target at count=1: at least 0.7x.
"""
from __future__ import annotations

import asyncio
import time

from benchmarks.harness import BIZ_BENCH, Context, Row, progress
from benchmarks.processes import benchmark_server

CALLERS = 16
COUNTS = (1, 1000)


async def _rate(url: str, seconds: float) -> float:
    """Requests per second that ``CALLERS`` clients get answered with 200 in ``seconds``."""
    import aiohttp

    done = 0
    connector = aiohttp.TCPConnector(limit=CALLERS)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(CALLERS):  # open the connections first
            async with session.get(url) as reply:
                await reply.read()
        end = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < end:
                async with session.get(url) as reply:
                    await reply.read()
                    if reply.status != 200:
                        raise RuntimeError(f"{url} answered {reply.status}")
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        return done / (time.perf_counter() - start)


def run(ctx: Context) -> None:
    rows = {
        count: ctx.run.declare(Row(
            key=f"http.count{count}", scenario=9,
            figure=f"HTTP GET /v1/ids?count={count}, {CALLERS} callers", unit="requests/s",
            baseline_name="aiohttp do-nothing handler, same server settings",
            target=">= 0.7x" if count == 1 else ""))
        for count in COUNTS
    }
    ctx.run.start(9, "HTTP/JSON API")
    try:
        idgen = ctx.add_server("idgen-http", benchmark_server("idgen", ctx.sqlite_url, http=True))
        null = ctx.add_server("http-null", benchmark_server("http-null", ctx.sqlite_url,
                                                            id_base=10**12))
        seconds = 1.0 if ctx.quick else 3.0
        for count, row in rows.items():
            path = f"/v1/ids/{BIZ_BENCH}?count={count}"
            ours = floor = 0.0
            for _ in range(3):
                ours = max(ours, asyncio.run(_rate(f"http://{idgen.http_address}{path}", seconds)))
                floor = max(floor, asyncio.run(_rate(f"http://{null.http_address}{path}", seconds)))
            row.idgen, row.baseline = ours, floor
            if row.target:
                row.met = ours / floor >= 0.7
            row.details = {"callers": CALLERS, "seconds": seconds}
            progress(f"  {row.figure}: {ours:,.0f} vs {floor:,.0f} /s ({ours / floor:.2f}x)")
    except Exception as exc:  # a server that did not start, a package missing
        ctx.run.skip(9, f"{type(exc).__name__}: {exc}", only_missing=True)
    ctx.run.finish(9)
