"""Sequencer stamps/s next to the local generator's next_id()/s, measured in the same run.

    python -m benchmarks.bench_sequencer [--quick]

Starts an ``idgen serve`` process on a throwaway SQLite file, builds one
``LocalGenerator`` and, per scenario, a fresh ``Sequencer`` on it. Each scenario
runs T threads; each thread calls ``stamp(group)`` for groups drawn uniformly
from G names (every group stamped once beforehand, so that the figure is the
steady state), and the same T threads call ``next_id()`` the same number of
times in the same kind of loop: the ratio is stamps/s over next_id()/s. A third
figure, ``least``, is what any sequencer written in Python must do at least per
stamp (a dict of last seqs, one ``next_id()``): it shows how much of the gap to
``next_id()`` is CPython's floor and how much is the sequencer's own cost.
The server is a separate process so that it takes no GIL time from the loops.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import tracemalloc
from collections.abc import Sequence

from benchmarks.harness import timed_threads
from benchmarks.processes import ServerProcess
from idgen_client import LocalGenerator, Sequencer
from idgen_client.sequencer import DEFAULT_MAX_GROUPS

BIZ = "default"  # what `idgen serve` registers on its zero-setup SQLite file


def next_id_rate(generator: LocalGenerator, threads: int, per_thread: int) -> float:
    def work(_: int) -> None:
        next_id = generator.next_id
        for _ in range(per_thread):
            next_id()

    return threads * per_thread / timed_threads(threads, work)


def stamp_rate(sequencer: Sequencer, draws: Sequence[Sequence[str]],
               msg_ids: bool = False, attempt: int = 0) -> float:
    # Message ids are made beforehand, unique per attempt: each stamp is a new message.
    ids = [[f"{attempt}-{index}-{n}" for n in range(len(d))] if msg_ids else []
           for index, d in enumerate(draws)]

    def work(index: int) -> None:
        stamp = sequencer.stamp
        if msg_ids:
            for group, msg_id in zip(draws[index], ids[index]):
                stamp(group, msg_id)
        else:
            for group in draws[index]:
                stamp(group)

    return sum(map(len, draws)) / timed_threads(len(draws), work)


def floor_rate(generator: LocalGenerator, draws: Sequence[Sequence[str]]) -> float:
    """The least any sequencer in Python must do per stamp, as a yardstick: read the
    group's last seq, take an ID, store it, return a pair. No lock, no LRU, no
    retries: not thread-safe, only ever timed."""
    last: dict[str, int] = {}

    def work(index: int) -> None:
        get, next_id = last.get, generator.next_id
        for group in draws[index]:
            prev = get(group, 0)
            seq = next_id()
            last[group] = seq
            (seq, prev)  # noqa: B018 - the pair a stamp returns

    return sum(map(len, draws)) / timed_threads(len(draws), work)


def bytes_per_group(generator: LocalGenerator, groups: int) -> float:
    sequencer = Sequencer(generator, max_groups=2 * groups)
    names = [f"group-{i}" for i in range(groups)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for name in names:
        sequencer.stamp(name)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / groups


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sequencer")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10x fewer stamps")
    args = parser.parse_args(argv)
    total = 200_000 if args.quick else 2_000_000
    rng = random.Random(3)
    # (groups, threads, client_msg_id per stamp, max_groups)
    scenarios = [(1_000, 1, False, None), (1_000, 8, False, None),
                 (1_000_000, 1, False, None), (1_000_000, 8, False, None),
                 (1_000, 1, True, None), (1_000_000, 1, False, 100_000)]
    with (tempfile.TemporaryDirectory() as directory,
          ServerProcess(["idgen_cli", "serve", "--listen", "127.0.0.1:0"],
                        ready=r"serving on (\S+)", cwd=directory, stops_on_eof=False) as server,
          LocalGenerator(BIZ, server.address) as generator):
        for _ in range(3):  # let the adaptive segment size settle
            next_id_rate(generator, 1, total)
        rows = []
        for groups, threads, msg_ids, max_groups in scenarios:
            names = [f"group-{i}" for i in range(groups)]
            per_thread = total // threads
            draws = [[names[rng.randrange(groups)] for _ in range(per_thread)]
                     for _ in range(threads)]
            kwargs = {} if max_groups is None else {"max_groups": max_groups}
            sequencer = Sequencer(generator, **kwargs)  # a fresh, small segment
            for name in names:  # steady state: every group known once
                sequencer.stamp(name)
            for _ in range(3):  # and segments grown back to the rate of use
                next_id_rate(generator, 1, total)
            # Best of 3, alternating, so that a hiccup of the machine (a segment
            # fetch, a collection, a neighbour) does not become the figure.
            ids = stamps = least = 0.0
            for attempt in range(3):
                ids = max(ids, next_id_rate(generator, threads, per_thread))
                least = max(least, floor_rate(generator, draws))
                stamps = max(stamps, stamp_rate(sequencer, draws, msg_ids, attempt))
            rows.append((groups, threads, msg_ids, max_groups or DEFAULT_MAX_GROUPS,
                         ids, least, stamps))
            print(f"  measured {groups:>9,} groups x {threads} threads", file=sys.stderr)
        per_group = bytes_per_group(generator, 100_000)
    print(f"\nSequencer.stamp() vs LocalGenerator.next_id(), {total:,} calls per figure, best of 3 "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)\n")
    print("| groups | threads | stamp() call | max_groups | next_id()/s | least/s | stamps/s "
          "| stamps / next_id | stamps / least |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for groups, threads, msg_ids, max_groups, ids, least, stamps in rows:
        call = "(group, msg_id)" if msg_ids else "(group)"
        print(f"| {groups:,} | {threads} | {call} | {max_groups:,} | {ids:,.0f} | "
              f"{least:,.0f} | {stamps:,.0f} | {stamps / ids:.2f} | {stamps / least:.2f} |")
    print("\nleast/s: dict get + next_id() + dict set + a pair per stamp, no lock, no LRU: "
          "the least any\nsequencer in CPython does (not thread-safe; a yardstick only).")
    print(f"\nmemory: {per_group:.0f} bytes per remembered group (tracemalloc, 100,000 "
          "groups; the group id strings themselves not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
