"""Many allocator processes racing on one MariaDB row never claim overlapping segments."""
from __future__ import annotations

import multiprocessing

import pytest

from idgen_server.store import SegmentStore
from tests.support.stores import registered

PROCESSES = 4
SEGMENTS_EACH = 1300  # 5,200 segments in all


def allocate_many(url: str, count: int) -> tuple[list[tuple[int, int]], int]:
    store = SegmentStore(url)
    try:
        claimed = [(s.start, s.end) for s in (store.allocate("race") for _ in range(count))]
        return claimed, store.conflicts
    finally:
        store.close()


@pytest.mark.mariadb
@pytest.mark.slow
def test_four_processes_racing_on_one_row_never_overlap(mariadb_url, capsys):
    [store] = registered([mariadb_url], "race", step=10)
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        results = pool.starmap(allocate_many, [(mariadb_url, SEGMENTS_EACH)] * PROCESSES)
    segments = sorted(s for claimed, _ in results for s in claimed)
    conflicts = sum(c for _, c in results)
    assert len(segments) == PROCESSES * SEGMENTS_EACH
    for (_, end), (start, _) in zip(segments, segments[1:]):
        assert start > end, "two segments overlap"
    # Every number claimed exactly once, nothing skipped: the row ends where the claims end.
    assert segments[0][0] == 1 and segments[-1][1] == store.read("race").max_id == 10 * len(segments)
    store.close()
    with capsys.disabled():
        print(f"\n[race] {PROCESSES} processes, {len(segments)} segments, "
              f"{10 * len(segments)} IDs, 0 overlaps, {conflicts} conflicts retried")
    assert conflicts > 0, "4 processes on one row should have collided at least once"
