"""Per-caller quotas (idgen_server.quota), with a clock the tests move."""
from __future__ import annotations

import pytest

from idgen_core.errors import ConfigError, QuotaExceeded
from idgen_core.segment import MAX_COUNT
from idgen_server.quota import Quotas, peer_host
from tests.support.fakes import Clock


def test_a_caller_may_burst_one_second_of_calls_then_is_held_to_its_rate():
    clock = Clock()
    quotas = Quotas(calls_per_second=10, ids_per_second=0, clock=clock)
    for _ in range(10):
        quotas.charge("a")
    with pytest.raises(QuotaExceeded) as refused:
        quotas.charge("a")
    assert refused.value.retry_after == pytest.approx(0.1)
    clock.now += 0.1
    quotas.charge("a")
    assert quotas.refused == 1


def test_ids_are_charged_by_count_and_a_refused_call_takes_nothing():
    clock = Clock()
    quotas = Quotas(calls_per_second=0, ids_per_second=MAX_COUNT, clock=clock)
    quotas.charge("a", ids=MAX_COUNT - 10)
    with pytest.raises(QuotaExceeded) as refused:
        quotas.charge("a", ids=20)
    assert refused.value.retry_after == pytest.approx(10 / MAX_COUNT)
    quotas.charge("a", ids=10)  # the refused call took none of the 10 left


def test_callers_have_separate_buckets():
    quotas = Quotas(calls_per_second=1, ids_per_second=0, clock=Clock())
    quotas.charge("a")
    quotas.charge("b")
    with pytest.raises(QuotaExceeded):
        quotas.charge("a")


def test_memory_is_bounded_and_forgetting_idle_callers_changes_nothing():
    clock = Clock()
    quotas = Quotas(calls_per_second=1, ids_per_second=0, max_callers=3, clock=clock)
    for caller in "abc":
        quotas.charge(caller)
    quotas.charge("d")  # beyond max_callers: shares the overflow bucket
    with pytest.raises(QuotaExceeded):
        quotas.charge("e")
    clock.now += 1.0  # a, b, c are full again: forgotten, nothing lost
    quotas.charge("e")
    quotas.charge("a")
    assert len(quotas._buckets) <= 3


def test_the_ids_quota_cannot_be_set_below_one_call_of_the_largest_count():
    with pytest.raises(ConfigError, match="at least 100000"):
        Quotas(ids_per_second=MAX_COUNT - 1)
    assert not Quotas(calls_per_second=0, ids_per_second=0).enabled


@pytest.mark.parametrize("peer, host", [
    ("ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"),
    ("ipv6:[::1]:40000", "ipv6:[::1]"),
    ("unix:/tmp/socket", "unix:/tmp/socket"),
])
def test_a_peer_is_its_host_whatever_its_port(peer, host):
    assert peer_host(peer) == host


def test_a_rate_below_one_call_a_second_still_admits_a_call_now_and_then():
    clock = Clock()
    quotas = Quotas(calls_per_second=0.5, ids_per_second=0, clock=clock)
    quotas.charge("a")  # a full bucket holds one call
    with pytest.raises(QuotaExceeded) as refused:
        quotas.charge("a")
    assert refused.value.retry_after == pytest.approx(2.0)
    clock.now += 2.0
    quotas.charge("a")
