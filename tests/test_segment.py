"""The segment model: bounds, alignment, int64 limits."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idgen_client import INT64_MAX, IdSpaceExhausted, InvalidRequest, Segment, validate_biz_type
from idgen_core.segment import (
    MAX_COUNT,
    MAX_STEP_MULTIPLIER,
    validate_count,
    validate_floor,
    validate_steps,
)
from idgen_server.rows import residue_class


@given(low=st.integers(0, INT64_MAX - 1), step=st.integers(1, 10**6),
       delta=st.integers(1, 16), data=st.data())
def test_claimed_segment_holds_exactly_the_ids_of_its_residue_class(low, step, delta, data):
    remainder = data.draw(st.integers(0, delta - 1))
    end = min(low + step, INT64_MAX)
    expected_first = next((i for i in range(low + 1, min(end, low + delta) + 1)
                           if i % delta == remainder), None)
    if expected_first is None:
        with pytest.raises(IdSpaceExhausted):
            Segment.claimed(low, end, delta, remainder)
        return
    segment = Segment.claimed(low, end, delta, remainder)
    ids = segment.ids()
    assert ids[0] == expected_first and ids[-1] <= end < ids[-1] + delta
    assert all(i % delta == remainder for i in (ids[0], ids[-1]))
    assert len(segment) == len(ids) and segment.last == ids[-1]
    # Every ID of the class in (low, end], none skipped: the count the range must hold.
    assert len(ids) == (end - expected_first) // delta + 1


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 3)), min_size=1, max_size=30))
def test_segments_from_consecutive_claims_never_overlap_across_residues(claims):
    """Two DBs (delta 2) claiming arbitrary steps from their own max_ids never collide."""
    max_ids = [0, 0]
    seen: set[int] = set()
    for step, which in claims:
        db = which % 2
        step = max(step, 2)
        segment = Segment.claimed(max_ids[db], max_ids[db] + step, *residue_class(db, 2))
        max_ids[db] += step
        ids = set(segment.ids())
        assert not ids & seen
        seen |= ids


def test_top_of_int64_is_reachable_and_never_exceeded():
    segment = Segment.claimed(INT64_MAX - 10, INT64_MAX)
    assert segment.ids()[-1] == INT64_MAX
    with pytest.raises(IdSpaceExhausted, match="int64"):
        Segment.claimed(INT64_MAX - 1, INT64_MAX, 2, 0)  # INT64_MAX is odd: no even ID left


@pytest.mark.parametrize("bad", [
    dict(start=0, end=5), dict(start=3, end=2), dict(start=1, end=INT64_MAX + 1),
    dict(start=2, end=10, delta=2, remainder=1), dict(start=1, end=2, delta=0),
    dict(start=1, end=2, delta=2, remainder=2),
])
def test_malformed_segments_are_refused(bad):
    with pytest.raises(InvalidRequest):
        Segment(**bad)


@pytest.mark.parametrize("name", ["order", "a", "Order_2.v1:eu-west", "9lives", "x" * 64])
def test_well_formed_biz_types_pass(name):
    assert validate_biz_type(name) == name


@pytest.mark.parametrize("name,why", [
    ("", "empty"), ("x" * 65, "65 characters"), ("-lead", "start with"), ("a b", "characters"),
    ("a'; DROP TABLE x;--", "characters"), ("caf\u00e9", "characters"), ("a\x00b", "characters"),
    (None, "string"),
])
def test_malformed_biz_types_get_a_reason(name, why):
    with pytest.raises(InvalidRequest, match=why):
        validate_biz_type(name)


@pytest.mark.parametrize("bad,why", [
    (dict(start=0, end=5), "segment bounds must satisfy 1 <= start <= end <= 2^63-1, got [0, 5]"),
    (dict(start=3, end=2), "segment bounds must satisfy 1 <= start <= end <= 2^63-1, got [3, 2]"),
    (dict(start=2, end=10, delta=2, remainder=1), "segment start 2 is not = 1 (mod 2)"),
    (dict(start=1, end=2, delta=0), "segment delta must be at least 1, got 0"),
    (dict(start=1, end=2, delta=2, remainder=2), "segment remainder must be in [0, 2), got 2"),
])
def test_a_malformed_segment_is_refused_saying_which_rule_it_breaks(bad, why):
    with pytest.raises(InvalidRequest) as refused:
        Segment(**bad)
    assert str(refused.value) == why


@pytest.mark.parametrize("edge", [
    dict(start=1, end=1), dict(start=7, end=7), dict(start=1, end=INT64_MAX),
    dict(start=3, end=3, delta=2, remainder=1), dict(start=4, end=9, delta=4, remainder=0),
])
def test_segments_at_the_edges_of_the_rules_are_well_formed(edge):
    segment = Segment(**edge)
    assert segment.ids()[0] == edge["start"]


@pytest.mark.parametrize("name,why", [
    ("", "biz type is empty: name the ID space, e.g. 'order'"),
    ("a b", "biz type 'a b' has characters outside [A-Za-z0-9_.:-] "
            "or does not start with a letter or digit"),
    (7, "biz type must be a string, not int"),
])
def test_a_malformed_biz_type_is_refused_with_the_whole_reason(name, why):
    with pytest.raises(InvalidRequest) as refused:
        validate_biz_type(name)
    assert str(refused.value) == why


@pytest.mark.parametrize("check,edges", [
    (validate_count, (1, MAX_COUNT)), (validate_floor, (0, INT64_MAX)),
    (validate_steps, (1, MAX_STEP_MULTIPLIER)),
])
def test_numbers_at_either_end_of_their_range_are_accepted(check, edges):
    assert [check(n) for n in edges] == list(edges)


@pytest.mark.parametrize("check,bad,why", [
    (validate_count, 0, f"count must be between 1 and {MAX_COUNT}, got 0"),
    (validate_count, MAX_COUNT + 1, f"count must be between 1 and {MAX_COUNT}, got {MAX_COUNT + 1}"),
    (validate_count, True, "count must be a whole number, not bool"),
    (validate_count, "3", "count must be a whole number, not str"),
    (validate_floor, -1, "floor must be a whole number in 0..2^63-1, got -1"),
    (validate_floor, INT64_MAX + 1, f"floor must be a whole number in 0..2^63-1, got {INT64_MAX + 1}"),
    (validate_floor, False, "floor must be a whole number in 0..2^63-1, got False"),
    (validate_floor, "3", "floor must be a whole number in 0..2^63-1, got '3'"),
    (validate_steps, 0, f"steps must be a whole number in 1..{MAX_STEP_MULTIPLIER}, got 0"),
    (validate_steps, MAX_STEP_MULTIPLIER + 1,
     f"steps must be a whole number in 1..{MAX_STEP_MULTIPLIER}, got {MAX_STEP_MULTIPLIER + 1}"),
    (validate_steps, True, f"steps must be a whole number in 1..{MAX_STEP_MULTIPLIER}, got True"),
    (validate_steps, 2.0, f"steps must be a whole number in 1..{MAX_STEP_MULTIPLIER}, got 2.0"),
])
def test_numbers_outside_their_range_or_not_whole_are_refused_with_the_reason(check, bad, why):
    with pytest.raises(InvalidRequest) as refused:
        check(bad)
    assert str(refused.value) == why
