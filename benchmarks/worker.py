"""A benchmark worker process: reads JSON commands on stdin, answers each on stdout.

``load``: many concurrent ``NextId`` callers against one server (grpc.aio, so
that one process keeps dozens of calls in flight without a thread each), with a
warm-up, a measured window and every call's latency; over TLS with ``ca_file``,
and with ``authorization: Bearer`` metadata with ``token``. ``allocate``: one
allocator racing the others on one segment row for a fixed window.

Commands carry an absolute start time (``time.time()``), so that the workers of
one measurement start together.
"""
from __future__ import annotations

import asyncio
import functools
import json
import sys
import time


def _perf_at(wall: float) -> float:
    """The ``perf_counter()`` reading at wall-clock time ``wall``."""
    return wall - (time.time() - time.perf_counter())


def _sleep_until(perf: float) -> None:
    delay = perf - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def _channel(target: str, ca_file: str | None):  # type: ignore[no-untyped-def]
    """A grpc.aio channel: TLS checked against ``ca_file`` if given, else plaintext."""
    import grpc

    if ca_file is None:
        return grpc.aio.insecure_channel(target)
    with open(ca_file, "rb") as f:
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=f.read()))


async def _load(target: str, biz: str, count: int, callers: int, warmup: float,
                seconds: float, start_at: float, ca_file: str | None = None,
                token: str | None = None) -> dict[str, object]:
    from idgen_wire import idgen_pb2, idgen_pb2_grpc
    from idgen_wire.auth import bearer

    # The same calls with or without security: only the channel and the metadata differ.
    metadata = (bearer(token),) if token is not None else None
    async with _channel(target, ca_file) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        call = functools.partial(idgen_pb2_grpc.IdGeneratorStub(channel).NextId, metadata=metadata)
        request = idgen_pb2.NextIdRequest(biz_type=biz, count=count)
        await call(request, timeout=10)  # connection and first-call costs out of the window
        begin = _perf_at(start_at)
        measure_from = int((begin + warmup) * 1e9)
        end = int((begin + warmup + seconds) * 1e9)
        await asyncio.sleep(max(0.0, begin - time.perf_counter()))
        latencies: list[int] = []
        totals = {"calls": 0, "ids": 0, "short": 0}
        clock = time.perf_counter_ns

        async def caller() -> None:
            record = latencies.append
            while True:
                t0 = clock()
                if t0 >= end:
                    return
                reply = await call(request, timeout=10)
                t1 = clock()
                if t0 >= measure_from and t1 <= end:
                    record(t1 - t0)
                    totals["calls"] += 1
                    got = len(reply.ids)
                    totals["ids"] += got
                    if got != count:
                        totals["short"] += 1

        async def cpu_in_window() -> float:
            await asyncio.sleep(max(0.0, measure_from / 1e9 - time.perf_counter()))
            used = time.process_time()
            await asyncio.sleep(max(0.0, end / 1e9 - time.perf_counter()))
            return time.process_time() - used

        window = asyncio.create_task(cpu_in_window())
        await asyncio.gather(*(caller() for _ in range(callers)))
        cpu = await window
    return {**totals, "seconds": seconds, "cpu": cpu / seconds, "latencies_ns": latencies}


def _allocate(url: str, biz: str, seconds: float, start_at: float) -> dict[str, object]:
    from idgen_server.store import SegmentStore

    store = SegmentStore(url)
    try:
        store.read(biz)  # open the connection before the window
        begin = _perf_at(start_at)
        end = begin + seconds
        _sleep_until(begin)
        segments = 0
        while time.perf_counter() < end:
            store.allocate(biz)
            segments += 1
        took = time.perf_counter() - begin
        return {"segments": segments, "conflicts": store.conflicts, "seconds": took}
    finally:
        store.close()


def _handle(command: dict[str, object]) -> dict[str, object]:
    op = command.pop("op")
    if op == "load":
        return asyncio.run(_load(**command))  # type: ignore[arg-type]
    if op == "allocate":
        return _allocate(**command)  # type: ignore[arg-type]
    if op == "ping":
        return {"pong": True}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    for line in sys.stdin:
        try:
            answer = _handle(json.loads(line))
        except Exception as exc:  # reported to the parent, which marks the figure skipped
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
