"""A client process for the fault harness and the load test: callers that record everything.

    python -m tests.fault.worker --mode remote|pinned|local --targets A,B --biz NAME \
        --threads N --out DIR --name PREFIX [--rate CALLS_PER_S] [--max-count K] [--seed S]

Each thread is one *caller*:
- ``remote``: a ``RemoteClient`` over all targets (round robin, failover), ``NextId``;
- ``pinned``: a ``RemoteClient`` over one target (thread i gets target i mod n), ``NextId``;
- ``local``: a ``LocalGenerator`` over all targets, ``next_ids``.

A caller writes every call to ``DIR/<caller>.bin``: a header ``<ddI`` (monotonic
time the call started and ended, number of IDs) then the IDs as int64; and every
error to ``DIR/<caller>.err`` as a JSON line (times, exception class, message).
``time.monotonic`` is the system-wide CLOCK_MONOTONIC, so the harness can lay
these times against the times of its faults.

The worker stops when its stdin closes (or after ``--duration``), finishes each
caller's call in flight, closes every client and prints ``done`` with totals.
Every second it prints ``progress <ids> <errors>``.
"""
from __future__ import annotations

import argparse
import array
import json
import os
import random
import struct
import sys
import threading
import time

from idgen_client import IdGenError, LocalGenerator, RemoteClient

HEADER = struct.Struct("<ddI")


class Caller(threading.Thread):
    def __init__(self, name: str, args: argparse.Namespace, targets: list[str],
                 stop: threading.Event, seed: int) -> None:
        super().__init__(name=f"caller-{name}", daemon=True)
        self.caller = name
        self.args = args
        self.targets = targets
        self.stop = stop
        self.rng = random.Random(seed)
        self.ids = 0
        self.errors = 0
        self.failure: str | None = None

    def run(self) -> None:
        args = self.args
        out = os.path.join(args.out, self.caller)
        client = RemoteClient(self.targets, timeout=args.timeout, retries=args.retries)
        generator = None
        if args.mode == "local":
            generator = LocalGenerator(args.biz, client, wait_timeout=args.wait_timeout)
        interval = 1.0 / args.rate if args.rate > 0 else 0.0
        due = time.monotonic()
        try:
            with open(out + ".bin", "wb") as ids_file, open(out + ".err", "w") as err_file:
                while not self.stop.is_set():
                    count = self.rng.randint(1, args.max_count)
                    t0 = time.monotonic()
                    try:
                        if generator is not None:
                            got = generator.next_ids(count)
                        else:
                            got = client.next_ids(args.biz, count)
                    except IdGenError as exc:
                        t1 = time.monotonic()
                        self.errors += 1
                        err_file.write(json.dumps({"t0": t0, "t1": t1, "type": type(exc).__name__,
                                                   "message": str(exc)}) + "\n")
                    else:
                        t1 = time.monotonic()
                        ids_file.write(HEADER.pack(t0, t1, len(got)))
                        ids_file.write(array.array("q", got).tobytes())
                        self.ids += len(got)
                    if interval:
                        due += interval
                        if due < t1 - 1.0:
                            due = t1  # fell behind (a fault): do not burst to catch up
                        wait = due - time.monotonic()
                        if wait > 0 and self.stop.wait(wait):
                            break
        except Exception as exc:  # anything but IdGenError is a bug the harness must report
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            if generator is not None:
                generator.close()
            client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fault.worker")
    parser.add_argument("--mode", choices=("remote", "pinned", "local"), required=True)
    parser.add_argument("--targets", required=True)
    parser.add_argument("--biz", required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", default="w")
    parser.add_argument("--rate", type=float, default=20.0, help="calls per second per caller; 0: unpaced")
    parser.add_argument("--max-count", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--retries", type=int, default=4)
    parser.add_argument("--wait-timeout", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    stop = threading.Event()
    callers = []
    for i in range(args.threads):
        mine = [targets[i % len(targets)]] if args.mode == "pinned" else targets
        callers.append(Caller(f"{args.name}-{i}", args, mine, stop, args.seed * 1000 + i))

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + args.duration
    while not stop.wait(1.0):
        print(f"progress {sum(c.ids for c in callers)} {sum(c.errors for c in callers)}", flush=True)
        if time.monotonic() > deadline:
            stop.set()
    for caller in callers:
        caller.join(60)
    failures = {c.caller: c.failure or "did not stop within 60 s"
                for c in callers if c.failure or c.is_alive()}
    print("done " + json.dumps({"ids": sum(c.ids for c in callers),
                                "errors": sum(c.errors for c in callers),
                                "failures": failures}), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
