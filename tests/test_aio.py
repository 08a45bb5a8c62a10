"""The asyncio clients against real servers: the same guarantees, and a loop never blocked."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from idgen_client import (
    ConfigError,
    InvalidRequest,
    Lease,
    LocalGenerator,
    NotOwner,
    RemoteClient,
    Sequencer,
    ServiceUnavailable,
    Stamp,
    Unauthenticated,
    UnknownBizType,
)
from idgen_client.aio import AsyncLocalGenerator, AsyncRemoteClient, AsyncSequencer
from tests.support.chains import assert_chains
from tests.support.proxy import TcpProxy
from tests.support.servers import ServerProcess
from tests.support.stores import prepare, read_row
from tests.support.tasks import no_task_outlives_its_test  # noqa: F401 (autouse)

MAX_LAG = 0.010
"""The loop's worst lag while callers wait on a server that is down, hanging or slow."""
TRIALS = 3
"""Attempts at staying under MAX_LAG (see worst_lags)."""


@pytest.fixture
def order_db(sqlite_url):
    prepare([sqlite_url], "order", step=1000)
    return sqlite_url


@pytest.fixture
def msg_db(sqlite_url):
    prepare([sqlite_url], "msg", step=100)
    return sqlite_url


class LagProbe:
    """A task that sleeps 1 ms at a time and records how late each wake-up was."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.wakes = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - start - 0.001)
            self.wakes += 1

    async def __aenter__(self) -> LagProbe:
        self._task = asyncio.create_task(self._run(), name="lag-probe")
        await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.wait([self._task])


# -- the remote client -------------------------------------------------------------------

async def test_remote_client_hands_out_increasing_ids_and_segments(order_db, start_server):
    server = start_server([order_db])
    async with AsyncRemoteClient(server.address) as client:
        ids = await client.next_ids("order", 50)
        one = await client.next_id("order")
        segment = await client.next_segment("order", floor=one, steps=2)
        assert await client.serving()
    assert ids == sorted(set(ids)) and one > ids[-1]
    assert segment.start > one and len(segment) == 2000


async def test_remote_client_raises_the_same_errors_as_the_synchronous_one(order_db, start_server):
    server = start_server([order_db])
    async with AsyncRemoteClient(server.address) as client:
        with pytest.raises(UnknownBizType, match="nosuch"):
            await client.next_ids("nosuch", 1)
        with pytest.raises(InvalidRequest, match="count"):
            await client.next_ids("order", 0)
    with RemoteClient(server.address) as sync:
        with pytest.raises(UnknownBizType) as sync_error:
            sync.next_ids("nosuch", 1)
    async with AsyncRemoteClient(server.address) as client:
        with pytest.raises(UnknownBizType) as async_error:
            await client.next_ids("nosuch", 1)
    assert str(async_error.value) == str(sync_error.value)
    with pytest.raises(ConfigError, match="timeout"):
        AsyncRemoteClient(server.address, timeout=0)


async def test_remote_client_fails_over_when_a_server_is_killed(order_db, start_server):
    servers = [start_server([order_db]) for _ in range(2)]
    async with AsyncRemoteClient([s.address for s in servers], timeout=2, retries=4) as client:
        before = [i for _ in range(10) for i in await client.next_ids("order", 10)]
        servers[0].kill()
        after = [i for _ in range(10) for i in await client.next_ids("order", 10)]  # no error
    every = before + after
    assert len(every) == len(set(every)) == 200


async def test_a_closed_client_refuses_calls_and_a_call_in_flight_ends(order_db, start_server):
    server = start_server([order_db])
    proxy = TcpProxy("127.0.0.1", int(server.address.rsplit(":", 1)[1]))
    try:
        client = AsyncRemoteClient(proxy.address, timeout=5, retries=0)
        await client.next_ids("order", 1)
        proxy.hang()
        call = asyncio.create_task(client.next_ids("order", 1))
        await asyncio.sleep(0.1)
        await client.close()
        with pytest.raises(ServiceUnavailable, match="closed"):
            await call
        with pytest.raises(ServiceUnavailable, match="closed"):
            await client.next_ids("order", 1)
    finally:
        proxy.close()


# -- the local generator -----------------------------------------------------------------

async def test_local_generator_ids_are_unique_and_increasing_across_segments(order_db, start_server):
    server = start_server([order_db])
    async with AsyncLocalGenerator("order", server.address) as generator:
        ids = [await generator.next_id() for _ in range(20_000)]
        ids += await generator.next_ids(5000)
        assert generator.fetches >= 3
    assert ids == sorted(set(ids)) and len(ids) == 25_000
    # Every ID came from a segment the database allocated.
    assert ids[-1] <= read_row(order_db, "order").max_id


async def test_local_generators_on_one_loop_and_in_a_thread_never_share_an_id(order_db, start_server):
    server = start_server([order_db])

    async def draw(generator: AsyncLocalGenerator) -> list[int]:
        out = []
        for i in range(3000):
            out.append(await generator.next_id())
            if i % 100 == 0:
                await asyncio.sleep(0)
        return out

    with LocalGenerator("order", server.address) as sync:
        async with AsyncLocalGenerator("order", server.address) as a, \
                AsyncLocalGenerator("order", server.address) as b:
            drawn = await asyncio.gather(draw(a), draw(b), draw(a),
                                         asyncio.to_thread(lambda: [sync.next_id() for _ in range(3000)]))
    every = [i for d in drawn for i in d]
    assert len(every) == len(set(every)) == 12_000
    assert all(d == sorted(d) for d in drawn)


async def test_local_generator_raises_a_permanent_error_once_and_fetches_no_more(order_db, start_server):
    server = start_server([order_db])
    async with AsyncRemoteClient(server.address) as client:
        calls = 0
        real = client.next_segment

        async def counted(*args, **kwargs):
            nonlocal calls
            calls += 1
            return await real(*args, **kwargs)

        client.next_segment = counted  # type: ignore[method-assign]
        async with AsyncLocalGenerator("nosuch", client) as generator:
            with pytest.raises(UnknownBizType):
                await generator.next_id()
            await asyncio.sleep(0.3)  # a retry loop would have called again by now
            assert calls == 1


async def test_skip_past_all_moves_above_every_database(make_mariadb, start_server):
    urls = [make_mariadb(), make_mariadb()]
    prepare(urls, "order", step=100)
    server = start_server(urls)
    async with AsyncLocalGenerator("order", server.address) as generator:
        await generator.next_id()
        highest = max(read_row(u, "order").max_id for u in urls)
        segment = await generator.skip_past_all()
        assert segment.start > highest and await generator.next_id() == segment.start


# -- never blocking the loop ----------------------------------------------------------------

@contextlib.asynccontextmanager
async def proxied_generator(server: ServerProcess) -> AsyncIterator[tuple[TcpProxy, AsyncLocalGenerator]]:
    """A generator whose server is reached through a proxy, with its first segment in."""
    proxy = TcpProxy("127.0.0.1", int(server.address.rsplit(":", 1)[1]))
    client = AsyncRemoteClient(proxy.address, timeout=0.5, retries=2, backoff=0.05)
    generator = AsyncLocalGenerator("order", client, wait_timeout=1.0)
    try:
        await generator.next_id()
        yield proxy, generator
    finally:
        await generator.aclose()
        await client.close()
        proxy.close()


@pytest.fixture
async def proxied(order_db, start_server) -> AsyncIterator[tuple[TcpProxy, AsyncLocalGenerator]]:
    async with proxied_generator(start_server([order_db])) as both:
        yield both


async def drain(generator: AsyncLocalGenerator) -> None:
    """Use up what the generator has buffered."""
    buffered = generator._buffer.state().buffered
    if buffered:
        await generator.next_ids(buffered)


async def worst_lags(server: ServerProcess,
                     scenario: Callable[[TcpProxy, AsyncLocalGenerator], Awaitable[None]]) -> list[float]:
    """The loop's worst lag during ``scenario``, on a fresh generator each attempt, until one
    attempt stays under MAX_LAG or TRIALS were made.

    The machine's own load delays a wake-up now and then beyond MAX_LAG (15 ms seen once, in
    CI, where two workers and the servers they start share two cores); a loop that blocks
    while callers wait on the server blocks on every attempt.
    """
    worst: list[float] = []
    while len(worst) < TRIALS and (not worst or worst[-1] >= MAX_LAG):
        async with proxied_generator(server) as (proxy, generator), LagProbe() as probe:
            await scenario(proxy, generator)
        assert probe.wakes >= 50  # the probe ran all along
        worst.append(probe.worst)
    return worst


def stalls(worst: list[float]) -> str:
    return f"the loop stalled for {', '.join(f'{w * 1000:.1f}' for w in worst)} ms ({len(worst)} attempts)"


@pytest.mark.parametrize("fault", ["refuse", "hang"])
async def test_callers_waiting_on_a_server_that_is_down_never_block_the_loop(order_db, start_server, fault):
    outcomes: list[object] = []

    async def callers_wait(proxy: TcpProxy, generator: AsyncLocalGenerator) -> None:
        getattr(proxy, fault)()
        await drain(generator)  # from here on, the generator fetches from a server that is down
        callers = [asyncio.create_task(generator.next_id()) for _ in range(20)]
        outcomes.extend(await asyncio.gather(*callers, return_exceptions=True))
        await asyncio.sleep(0.3)  # the fetch task retries meanwhile
        outcomes.extend(await asyncio.gather(generator.next_id(), return_exceptions=True))

    worst = await worst_lags(start_server([order_db]), callers_wait)
    assert outcomes and all(isinstance(o, ServiceUnavailable) for o in outcomes), outcomes
    assert worst[-1] < MAX_LAG, stalls(worst)


async def test_callers_waiting_on_a_slow_server_get_their_ids_and_never_block_the_loop(order_db, start_server):
    got: list[list[int]] = []

    async def callers_wait(proxy: TcpProxy, generator: AsyncLocalGenerator) -> None:
        proxy.slow(0.1)
        await drain(generator)
        got.append(await asyncio.gather(*(generator.next_id() for _ in range(20))))

    worst = await worst_lags(start_server([order_db]), callers_wait)
    assert all(len(set(ids)) == 20 for ids in got)
    assert worst[-1] < MAX_LAG, stalls(worst)


async def test_a_cancelled_caller_and_a_close_during_a_fetch_leave_no_task(proxied):
    proxy, generator = proxied
    proxy.hang()
    await drain(generator)
    waiting = asyncio.create_task(generator.next_id())
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    fetch = generator._buffer._task
    assert fetch is not None and not fetch.done()  # the fetch goes on for other callers
    await generator.aclose()  # closed with the fetch in flight
    assert fetch.done()
    # The autouse fixture checks that no task is left pending.


# -- the sequencer --------------------------------------------------------------------------

async def test_sequencer_chains_each_group_with_a_coroutine_loader(msg_db, start_server):
    server = start_server([msg_db])
    stored = {"g1": 0, "g2": 0}
    loads: list[object] = []

    async def loader(group_id: object) -> int:
        loads.append(group_id)
        await asyncio.sleep(0.001)  # a query on an async driver
        return stored.get(group_id, 0)

    stamps: dict[object, list[Stamp]] = defaultdict(list)
    async with AsyncLocalGenerator("msg", server.address) as generator:
        async with AsyncSequencer(generator, loader=loader) as sequencer:
            async def send(group: str, n: int) -> None:
                for _ in range(n):
                    stamps[group].append(await sequencer.stamp(group))
                    await asyncio.sleep(0)

            await asyncio.gather(*(send(g, 600) for g in ("g1", "g2", "g3")), send("g1", 400))
            assert len(sequencer) == 3
    assert sorted(loads) == ["g1", "g1", "g2", "g3"] or sorted(set(loads)) == ["g1", "g2", "g3"]
    for group, chain in stamps.items():
        assert len(chain) == (1000 if group == "g1" else 600)
        assert_chains({group: chain})


async def test_sequencer_returns_the_first_stamp_to_a_retried_message(msg_db, start_server):
    server = start_server([msg_db])
    async with AsyncLocalGenerator("msg", server.address) as generator:
        sequencer = AsyncSequencer(generator)
        first = await sequencer.stamp("g", "client-msg-1")
        await sequencer.stamp("g", "client-msg-2")
        assert await sequencer.stamp("g", "client-msg-1") == first


async def test_a_restarted_sequencer_stamps_above_everything_stamped_before(msg_db, start_server):
    server = start_server([msg_db])
    async with AsyncLocalGenerator("msg", server.address) as generator:
        async with AsyncSequencer(generator) as sequencer:
            before = [await sequencer.stamp("g") for _ in range(150)]
    async with AsyncLocalGenerator("msg", server.address) as generator:
        async with AsyncSequencer(generator) as restarted:
            again = await restarted.stamp("g")
    assert again.seq > before[-1].seq and again.prev_seq >= before[-1].seq


async def test_sequencer_stamps_match_the_synchronous_sequencers_rules(msg_db, start_server):
    server = start_server([msg_db])
    async with AsyncLocalGenerator("msg", server.address) as generator:
        with pytest.raises(ConfigError, match="AsyncLocalGenerator"):
            AsyncSequencer(LocalGenerator("msg", server.address))  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="max_groups"):
            AsyncSequencer(generator, max_groups=0)
        sequencer = AsyncSequencer(generator, max_groups=2)
        with pytest.raises(InvalidRequest, match="group id"):
            await sequencer.stamp(1.5)  # type: ignore[arg-type]
        for group in ("a", "b", "c"):
            await sequencer.stamp(group)
        assert len(sequencer) == 2 and "a" not in sequencer
        assert sequencer.horizon > 0


async def test_sequencer_under_a_lease_stamps_only_while_it_holds_it(msg_db, start_server):
    server = start_server([msg_db])
    with Lease("msg", "shard-1", server.address, ttl=1.0) as lease:
        async with AsyncLocalGenerator("msg", server.address) as generator:
            sequencer = AsyncSequencer(generator, lease=lease)
            await asyncio.to_thread(lease.wait, 10)
            first = await sequencer.stamp("g")
            assert first.epoch == lease.epoch > 0
            # A second owner of the shard cannot stamp while this one holds it.
            with Lease("msg", "shard-1", server.address, ttl=1.0) as other, \
                    LocalGenerator("msg", server.address) as other_generator:
                with pytest.raises(NotOwner):
                    Sequencer(other_generator, lease=other).stamp("g")
            assert (await sequencer.stamp("g")).prev_seq == first.seq


async def test_a_stamp_the_loader_fails_raises_and_leaves_the_group_unknown(msg_db, start_server):
    server = start_server([msg_db])

    async def broken(group_id: object) -> int:
        raise ServiceUnavailable("the message store is down")

    async with AsyncLocalGenerator("msg", server.address) as generator:
        sequencer = AsyncSequencer(generator, loader=broken)
        with pytest.raises(ServiceUnavailable, match="message store"):
            await sequencer.stamp("g")
        assert "g" not in sequencer


async def test_remote_client_speaks_tls_and_sends_its_token(order_db, start_server, tmp_path):
    from tests.support.certs import make_certs
    from tests.support.tokens import cli_env, create_token

    certs = make_certs(tmp_path)
    token = create_token([order_db], "order")
    server = start_server([order_db], env=cli_env(), extra_args=[
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)])
    async with AsyncRemoteClient(server.address, ca_file=str(certs.ca), token=token, env={}) as client:
        assert len(await client.next_ids("order", 3)) == 3
    async with AsyncRemoteClient(server.address, ca_file=str(certs.ca), env={}, retries=0) as client:
        with pytest.raises(Unauthenticated):
            await client.next_ids("order", 1)
    async with AsyncLocalGenerator("order", server.address, ca_file=str(certs.ca),
                                   token=token) as generator:
        assert await generator.next_id() > 0
    # Plaintext to a TLS server: explained at once, the handshake probe run off the loop.
    async with LagProbe() as probe:
        async with AsyncRemoteClient(server.address, env={}, timeout=2) as plain:
            with pytest.raises(ServiceUnavailable, match="TLS"):
                await plain.next_ids("order", 1)
    assert probe.worst < MAX_LAG
