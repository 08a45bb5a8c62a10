"""Dynamic step: segments grow when used up fast, shrink when they linger."""
from __future__ import annotations

from idgen_client import Segment
from idgen_core.segment import MAX_STEP_MULTIPLIER
from idgen_core.sizing import AdaptiveSteps
from tests.support.fakes import Clock


def fetcher(asked: list[int]):
    def fetch(floor: int, steps: int) -> Segment:
        asked.append(steps)
        return Segment(floor + 1, floor + 10 * steps)
    return fetch


def test_fast_use_doubles_the_steps_up_to_the_cap():
    asked: list[int] = []
    clock = Clock()
    sized = AdaptiveSteps(fetcher(asked), target=1.0, clock=clock)
    floor = 0
    for _ in range(15):
        floor = sized(floor).end
        clock.now += 0.001  # each segment lasted 1 ms
    # The first interval is a preload threshold, not a segment's life: not measured.
    assert asked[:6] == [1, 1, 1, 2, 4, 8]
    assert asked[-2:] == [MAX_STEP_MULTIPLIER, MAX_STEP_MULTIPLIER] and max(asked) == MAX_STEP_MULTIPLIER


def test_short_segments_double_however_short_they_were():
    asked: list[int] = []
    clock = Clock()
    sized = AdaptiveSteps(fetcher(asked), target=1.0, clock=clock)
    for lasted in (0.9, 0.9, 0.9, 0.9, 0.25, 0.9, 0.9):
        sized(0)
        clock.now += lasted
    assert asked == [1, 1, 1, 2, 4, 8, 16]


def test_slow_use_halves_the_steps_back_to_one_and_steady_use_keeps_them():
    asked: list[int] = []
    clock = Clock()
    sized = AdaptiveSteps(fetcher(asked), target=1.0, clock=clock)
    for _ in range(6):
        sized(0)
        clock.now += 0.1
    sized(0)  # the last fast segment's interval is measured here
    clock.now += 2.0
    grown = sized.steps
    for _ in range(3):  # lasting between target and 8 x target: unchanged
        sized(0)
        clock.now += 2.0
    assert asked[-3:] == [grown] * 3 and grown > 1
    for _ in range(12):
        sized(0)
        clock.now += 60.0
    assert asked[-1] == 1


def test_a_failed_fetch_does_not_count_as_a_short_segment():
    clock = Clock()
    calls = {"n": 0}

    def flaky(floor: int, steps: int) -> Segment:
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise ConnectionError("down")
        return Segment(floor + 1, floor + steps)

    sized = AdaptiveSteps(flaky, target=1.0, clock=clock)
    sized(0)
    for _ in range(5):
        clock.now += 0.001
        try:
            sized(0)
        except ConnectionError:
            pass
        clock.now += 5.0
    assert sized.steps == 1
