"""The asyncio sequencer over an in-memory generator: the sequencer's rules, awaited.

Real servers are in test_aio.py; here the generator is an ``AsyncDoubleBuffer`` over an
in-memory source, so that a test can hold a fetch, change the lease, and count calls.
"""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from idgen_client import ConfigError, ServiceUnavailable, Stamp
from idgen_client.aio import AsyncSequencer
from idgen_core.async_buffer import AsyncDoubleBuffer, WouldWait
from idgen_core.segment import Segment
from tests.support.chains import assert_chains
from tests.support.fakes import AsyncSource, Clock, Source
from tests.support.tasks import no_task_outlives_its_test  # noqa: F401 (autouse)


class Generator:
    """What ``AsyncLocalGenerator`` offers, over one in-memory source; ``skip_past_all``
    moves above everything the source allocated, and can be held (``above_gate``)."""

    def __init__(self, step: int = 1000) -> None:
        self.source = AsyncSource(step=step)
        self.buffer = AsyncDoubleBuffer(self.source, preload_at=0.5)
        self.above_calls = 0
        self.above_gate: asyncio.Event | None = None

    def next_id_nowait(self) -> int:
        return self.buffer.next_id_nowait()

    async def ready(self) -> None:
        await self.buffer.ready()

    async def skip_past(self, floor: int) -> Segment:
        return await self.buffer.skip_past(floor)

    async def skip_past_all(self) -> Segment:
        self.above_calls += 1
        if self.above_gate is not None:
            await self.above_gate.wait()
        return await self.buffer.skip_past(self.source.source.max_id)

    @property
    def floor(self) -> int:
        return self.buffer.floor


class DryGenerator:
    """A generator that says it is ready, then has nothing: it keeps running dry."""

    floor = 0

    def next_id_nowait(self) -> int:
        raise WouldWait("dry")

    async def ready(self) -> None:
        pass

    async def skip_past(self, floor: int) -> Segment:
        return Segment(floor + 1, floor + 10)

    async def skip_past_all(self) -> Segment:
        return Segment(1, 10)


class FakeLease:
    name = "shard"

    def __init__(self, epoch: int = 1) -> None:
        self.clock = Clock(0.0)
        self.term = (epoch, 1e9)


@pytest.fixture
async def generator():
    gen = Generator()
    yield gen
    await gen.buffer.aclose()


async def test_concurrent_first_stamps_share_one_fetch_above_all(generator):
    generator.above_gate = asyncio.Event()
    sequencer = AsyncSequencer(generator)  # no start(): the first stamps start it
    stamps = [asyncio.create_task(sequencer.stamp(f"g{i}")) for i in range(100)]
    await asyncio.sleep(0.01)
    generator.above_gate.set()
    done = await asyncio.gather(*stamps)
    assert generator.above_calls == 1
    assert len({s.seq for s in done}) == 100


async def test_a_take_over_awaited_by_many_stamps_fetches_above_all_once(generator):
    lease = FakeLease(epoch=1)
    sequencer = AsyncSequencer(generator, lease=lease)
    before = await sequencer.stamp("g")
    lease.term = (2, 1e9)
    generator.above_gate, generator.above_calls = asyncio.Event(), 0
    stamps = [asyncio.create_task(sequencer.stamp(f"g{i % 10}")) for i in range(100)]
    await asyncio.sleep(0.01)
    generator.above_gate.set()
    done = await asyncio.gather(*stamps)
    assert generator.above_calls == 1
    assert all(s.epoch == 2 and s.seq > before.seq for s in done)


async def test_a_group_loaded_before_a_take_over_is_loaded_again_after_it(generator):
    lease = FakeLease(epoch=1)
    stored = {"H": 0}
    loads: list[int] = []

    async def loader(group_id: object) -> int:
        loads.append(lease.term[0])
        if len(loads) == 1:  # meanwhile: another owner's epoch 2 stamps H; then ours, 3
            stored["H"] = (await generator.source(generator.source.source.max_id)).end
            lease.term = (3, 1e9)
            return 0
        return stored["H"]

    stamp = await AsyncSequencer(generator, loader=loader, lease=lease).stamp("H")
    assert loads == [1, 3]
    assert stamp.epoch == 3 and stamp.prev_seq == stored["H"] < stamp.seq


async def test_concurrent_stamps_with_small_segments_and_cancellations_keep_every_chain():
    generator = Generator(step=7)  # a fetch every few stamps
    generator.source.delay = 0.0005
    rng = random.Random(4)
    stamps: dict[object, list[Stamp]] = defaultdict(list)

    async def loader(group_id: object) -> int:
        await asyncio.sleep(rng.random() / 1000)
        return 0

    async with AsyncSequencer(generator, loader=loader) as sequencer:
        async def send(group: str) -> None:
            stamps[group].append(await sequencer.stamp(group))

        for _ in range(20):
            tasks = [asyncio.create_task(send(f"g{rng.randrange(8)}")) for _ in range(30)]
            await asyncio.sleep(0)
            for task in rng.sample(tasks, 8):
                task.cancel()  # callers that give up while their stamp waits
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            # Only the callers that gave up failed: a stamp that raised would pass unseen below.
            assert all(o is None or isinstance(o, asyncio.CancelledError) for o in outcomes)
    await generator.buffer.aclose()
    # A cancelled stamp was never handed out; every stamp that was links to the one before.
    assert_chains(stamps)


async def test_bad_settings_are_refused_at_construction(generator):
    with pytest.raises(ConfigError, match="loader"):
        AsyncSequencer(generator, loader=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="AsyncLocalGenerator"):
        AsyncSequencer(generator.buffer)  # type: ignore[arg-type] # no skip_past_all
    with pytest.raises(ConfigError, match="lease"):
        AsyncSequencer(generator, lease=object())  # type: ignore[arg-type]


async def test_a_synchronous_generator_is_refused_saying_what_to_use_instead():
    from idgen_core.buffer import DoubleBuffer

    what_to_use = r"not DoubleBuffer \(a Sequencer takes a LocalGenerator\)"
    with DoubleBuffer(Source()) as synchronous:
        with pytest.raises(ConfigError, match=what_to_use):
            AsyncSequencer(synchronous)  # type: ignore[arg-type]


async def test_a_synchronous_sequencer_refuses_an_asyncio_generator():
    from idgen_client import Sequencer
    from idgen_client.aio import AsyncLocalGenerator

    async with AsyncLocalGenerator("msg", "127.0.0.1:1") as generator:
        with pytest.raises(ConfigError, match="AsyncSequencer"):
            Sequencer(generator)  # type: ignore[arg-type]


async def test_a_stamp_that_finds_the_generator_dry_awaits_the_next_segment():
    generator = Generator(step=5)
    async with AsyncSequencer(generator) as sequencer:
        # Stamps that do not suspend never let the preload run: every 5th finds nothing.
        stamps = {"g": [await sequencer.stamp("g") for _ in range(12)]}
    await generator.buffer.aclose()
    assert generator.buffer.waits >= 1  # a stamp did find it dry
    assert_chains(stamps)


async def test_a_generator_that_keeps_running_dry_fails_the_stamp_naming_the_group():
    async with AsyncSequencer(DryGenerator()) as sequencer:
        with pytest.raises(ServiceUnavailable, match=r"'g'.* ID generator.*retry later"):
            await sequencer.stamp("g")


async def test_a_group_stored_above_the_generator_moves_it_past_the_groups_last_seq(generator):
    async def loader(group_id: object) -> int:
        return 50_000

    async with AsyncSequencer(generator, loader=loader) as sequencer:
        stamp = await sequencer.stamp("g")
    assert stamp.prev_seq == 50_000 < stamp.seq and sequencer.skips == 1


async def test_each_group_starts_above_what_the_loader_returns_for_it(generator):
    stored = {"a": 10_000, "b": 20_000}

    async def loader(group_id: str) -> int:
        return stored[group_id]

    async with AsyncSequencer(generator, loader=loader) as sequencer:
        a, b = await sequencer.stamp("a"), await sequencer.stamp("b")
    assert (a.prev_seq, b.prev_seq) == (10_000, 20_000) and a.seq > 10_000 and b.seq > 20_000


async def test_a_plain_function_serves_as_loader(generator):
    async with AsyncSequencer(generator, loader={"g": 70}.__getitem__) as sequencer:
        stamp = await sequencer.stamp("g")
    assert stamp.prev_seq == 70 < stamp.seq


async def test_a_retried_message_gets_its_first_stamp_again(generator):
    sequencer = AsyncSequencer(generator, loader=lambda group: 0)
    first = await sequencer.stamp("g", "msg-1")  # starts the sequencer and loads the group
    assert await sequencer.stamp("g", "msg-1") == first
    assert (await sequencer.stamp("g", "msg-2")).seq > first.seq


async def test_it_tells_which_groups_it_remembers(generator):
    sequencer = AsyncSequencer(generator)
    assert "g" not in sequencer and len(sequencer) == 0  # not started yet
    await sequencer.stamp("g")
    assert "g" in sequencer and "h" not in sequencer and len(sequencer) == 1
