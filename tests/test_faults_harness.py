"""The fault harness: a short run of every fault kind under load, and its checker's own tests.

The long run is one command (see tests/fault/harness.py):
    python -m tests.fault.harness --mode mixed --duration 900 --ids 10000000
"""
from __future__ import annotations

import array

import pytest

from tests.fault.check import Call, CallerLog, Fault, check
from tests.fault.harness import KINDS, Config, run


@pytest.mark.slow
@pytest.mark.mariadb
def test_every_fault_kind_under_load_no_duplicate_and_every_error_explained(mariadb_server):
    lines: list[str] = []
    report = run(Config(seed=4, mode="each", servers=3, step=5000, remote_callers=2,
                        local_callers=2, hold_scale=0.6), say=lines.append)
    text = "\n".join(lines)
    found = report.findings
    assert report.ok, text
    assert set(found.faults_by_kind) == set(KINDS), text
    assert found.ids > 10_000 and found.duplicates == 0, text
    for trap in ("drop-commit", "orphan-commit"):
        [fault] = [f for f in report.faults if f.kind == trap]
        assert fault.detail["drops"], f"the {trap} trap was sprung"
    # The databases were cut for longer than the buffers last: every kind of caller ran dry,
    # saw ServiceUnavailable, and recovered by itself.
    by_caller_kind = {kind for (fault, _, kind) in found.explained if fault == "all-cut"}
    assert {"local", "remote"} <= by_caller_kind, text
    assert found.not_recovered == [], text
    # A restored backup undid allocations, and the servers moved the row past them again.
    [lowered] = [f for f in report.faults if f.kind == "lowered-max-id"]
    assert lowered.detail["undone"] > 0 and lowered.detail["moved_past_in"] is not None, text


# -- the checker finds what it must find ----------------------------------------------

def calls(*batches: list[int], start: float = 0.0) -> list[Call]:
    return [Call(start + i, start + i + 0.5, array.array("q", ids)) for i, ids in enumerate(batches)]


def verdict(callers: list[CallerLog], faults: list[Fault] = ()) -> object:
    return check(callers, list(faults), grace=1.0, step=100, delta=2)


def test_checker_passes_a_clean_history():
    found = verdict([CallerLog("a", "local", calls=calls([1, 3], [5, 7])),
                     CallerLog("b", "remote", calls=calls([2, 4], [6]))])
    assert found.ok and found.ids == 7


def test_checker_finds_an_id_handed_out_twice_across_callers():
    found = verdict([CallerLog("a", "remote", calls=calls([1, 3])),
                     CallerLog("b", "remote", calls=calls([5, 3]))])
    assert not found.ok and found.duplicates == 1 and found.duplicate_examples == [3]


def test_checker_finds_a_local_generator_going_backwards_and_unsorted_answers():
    found = verdict([CallerLog("a", "local", calls=calls([5, 7], [3])),
                     CallerLog("b", "remote", calls=calls([10, 8]))])
    assert len(found.order_violations) == 2 and not found.ok


def test_checker_explains_errors_only_by_a_fault_that_covers_them():
    errors = [{"t0": 10.0, "t1": 10.5, "type": "ServiceUnavailable", "message": "x"},
              {"t0": 50.0, "t1": 50.5, "type": "ServiceUnavailable", "message": "late"},
              {"t0": 11.0, "t1": 11.5, "type": "UnknownBizType", "message": "wrong kind"}]
    caller = CallerLog("a", "remote", calls=calls([1], start=60.0), errors=errors)
    found = verdict([caller], [Fault("all-cut", "all", 9.0, 12.0), Fault("refuse", "db0", 40, 60)])
    assert found.explained == {("all-cut", "ServiceUnavailable", "remote"): 1}
    assert found.unexplained_count == 2 and not found.ok


def test_checker_blames_a_kill_only_for_callers_pinned_to_that_server():
    error = {"t0": 10.0, "t1": 10.5, "type": "ServiceUnavailable", "message": "down"}
    kill = Fault("kill", "s1", 9.0, 12.0, {"max_ids": {"0": 0, "1": 0}})
    pinned = CallerLog("p", "pinned", "s1", calls=calls([1], start=20.0), errors=[error])
    other = CallerLog("r", "remote", calls=calls([3], start=20.0), errors=[error])
    found = verdict([pinned, other], [kill])
    assert found.explained == {("kill", "ServiceUnavailable", "pinned"): 1}
    assert found.unexplained_count == 1


def test_checker_finds_a_restarted_server_handing_out_what_the_dead_one_had_buffered():
    kill = Fault("kill", "s1", 9.0, 12.0, {"max_ids": {"0": 100, "1": 101}})
    pinned = CallerLog("p", "pinned", "s1", calls=calls([3], start=20.0) + calls([103], start=30.0))
    found = verdict([pinned], [kill])
    assert len(found.reissued_after_kill) == 1 and "3" in found.reissued_after_kill[0]


def test_checker_finds_an_id_from_a_segment_whose_commit_answer_was_lost():
    drop = Fault("drop-commit", "db1", 1.0, 2.0,
                 {"drops": [{"db": 1, "when": "after", "max_id": 300}]})
    found = verdict([CallerLog("a", "remote", calls=calls([201, 203], [301]))], [drop])
    assert len(found.reissued_wasted) == 2 and not found.ok
