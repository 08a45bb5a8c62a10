"""The asyncio sequencer over an in-memory generator: the sequencer's rules, awaited.

Real servers are in test_aio.py; here the generator is an ``AsyncDoubleBuffer`` over an
in-memory source, so that a test can hold a fetch, change the lease, and count calls.
"""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from idgen_client import ConfigError, Stamp
from idgen_client.aio import AsyncSequencer
from idgen_core.async_buffer import AsyncDoubleBuffer
from idgen_core.segment import Segment
from tests.support.chains import assert_chains
from tests.support.fakes import AsyncSource, Clock
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
            await asyncio.gather(*tasks, return_exceptions=True)
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


async def test_a_synchronous_sequencer_refuses_an_asyncio_generator():
    from idgen_client import Sequencer
    from idgen_client.aio import AsyncLocalGenerator

    async with AsyncLocalGenerator("msg", "127.0.0.1:1") as generator:
        with pytest.raises(ConfigError, match="AsyncSequencer"):
            Sequencer(generator)  # type: ignore[arg-type]
