"""The log lines operators rely on, as a real ``idgen --log-format json serve`` writes them.

Every line is one JSON object with ``timestamp`` (ISO 8601, UTC), ``level``,
``logger`` and ``event``, then the fields of the event. Notable events each log one
line: the start with the server's settings (never a password); a database lost
and back; a row's step changed; a biz type passing 50%, 90%, 99% of the int64
range (once per threshold); refused calls (never the token, at most one line per
peer per minute, counting the ones left out). The step multiplier's changes and the
rate limit's count use the objects themselves, with a clock the test moves.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timezone

import grpc
import pytest

from idgen_cli.logs import JSON_FIELDS
from idgen_core.errors import Unauthenticated
from idgen_core.segment import INT64_MAX, Segment
from idgen_core.sizing import AdaptiveSteps
from idgen_server.gate import REFUSALS_EVERY, RefusalLog
from idgen_wire import idgen_pb2
from idgen_wire.auth import bearer
from tests.support.cli import add_biz, idgen, init_db
from tests.support.databases import MariaDB
from tests.support.proxy import behind_proxy
from tests.support.servers import ServerProcess, stub_to
from tests.support.stores import edit_row
from tests.support.tokens import create_token, secret_of, token_id, unknown_token
from tests.support.users import database_user
from tests.support.waiting import wait_until

JSON = ("--log-format", "json")
NO_DRAIN = ["--drain", "0"]  # stopping at once: what draining does is not tested here


def records(server: ServerProcess) -> list[dict[str, object]]:
    """Every log line the server wrote so far, parsed (its other lines are ``idgen: ...``)."""
    lines = [line for line in list(server.output) if not line.startswith("idgen: ")]
    return [json.loads(line) for line in lines]


def wait_for(server: ServerProcess, event: str, count: int = 1) -> list[dict[str, object]]:
    """The log records whose event contains ``event``, once there are ``count`` of them."""
    def found() -> list[dict[str, object]]:
        hits = [r for r in records(server) if event in str(r["event"])]
        return hits if len(hits) >= count else []

    return wait_until(found, 20, lambda: f"{count} line(s) with {event!r} in:\n"
                      + "".join(server.output))


def test_every_line_is_one_json_object_with_the_four_fields_first(start_server, sqlite_url):
    init_db(sqlite_url)
    server = start_server([sqlite_url], global_args=JSON, extra_args=NO_DRAIN)
    [start] = wait_for(server, "idgen serving on")
    assert list(start)[:4] == list(JSON_FIELDS)
    assert start["level"] == "INFO" and start["logger"] == "idgen_server.server"
    stamp = datetime.fromisoformat(str(start["timestamp"]).replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 120


@pytest.mark.mariadb
def test_the_start_line_carries_the_settings_and_never_the_password(start_server, mariadb_server:
                                                                    MariaDB):
    with database_user(mariadb_server) as user:
        user_name, _, rest = user.url.removeprefix("mysql://").partition("@")
        url = f"mysql://{user_name}:{urllib.parse.quote(user.password, safe='')}@{rest}"
        init_db(url)
        server = start_server([f"main={url}"], global_args=JSON,
                              extra_args=["--workers", "3", "--drain", "0.5", "--quota-calls", "7",
                                          "--metrics-port", "0", "--no-reflection"])
        [start] = wait_for(server, "idgen serving on")
        assert start["listen"] == server.address
        assert start["security"] == "plaintext" and start["tokens_required"] is False
        [(label, name)] = dict(start["databases"]).items()  # type: ignore[call-overload]
        assert label == "main" and f"{user_name}:***@" in name and name.endswith(rest)
        assert start["workers"] == 3 and start["drain"] == 0.5 and start["quota_calls"] == 7
        assert str(start["metrics"]).startswith("127.0.0.1:") and start["reflection"] is False
        server.stop()
        assert not [form for form in user.forms() if form in "".join(server.output)]


@pytest.mark.mariadb
def test_a_database_lost_and_back_is_logged_with_its_name(start_server, mariadb_url):
    init_db(mariadb_url)
    proxy, via_proxy = behind_proxy(mariadb_url)
    try:
        server = start_server([via_proxy], global_args=JSON, extra_args=["--db-timeout", "1", *NO_DRAIN])
        proxy.refuse()
        [lost] = wait_for(server, "is lost")
        assert lost["level"] == "WARNING" and lost["db"] == via_proxy and lost["reachable"] is False
        assert lost["error"]
        proxy.restore()
        [back] = wait_for(server, "is back")
        assert back["level"] == "INFO" and back["db"] == via_proxy and back["reachable"] is True
    finally:
        proxy.close()


def test_a_step_changed_in_the_database_is_logged_once(start_server, sqlite_url):
    init_db(sqlite_url)
    add_biz("order", sqlite_url, step=1000)
    server = start_server([sqlite_url], global_args=JSON, extra_args=NO_DRAIN)
    with stub_to(server.address) as stub:
        stub.NextSegment(idgen_pb2.NextSegmentRequest(biz_type="order"))  # the row is known
        edit_row(sqlite_url, "order", "step = 5000")
        [changed] = wait_for(server, "the step of 'order' changed")
        stub.NextSegment(idgen_pb2.NextSegmentRequest(biz_type="order"))  # read again, unchanged
    assert changed["level"] == "INFO" and changed["db"] == sqlite_url
    assert (changed["biz_type"], changed["previous"], changed["step"]) == ("order", 1000, 5000)
    assert len([r for r in records(server) if "the step of" in str(r["event"])]) == 1


def test_passing_50_90_and_99_percent_of_the_range_warns_once_each(start_server, sqlite_url):
    init_db(sqlite_url)
    add_biz("order", sqlite_url, step=1000)
    edit_row(sqlite_url, "order", f"max_id = {int(INT64_MAX * 0.6)}")  # past 50%
    server = start_server([sqlite_url], global_args=JSON, extra_args=NO_DRAIN)
    with stub_to(server.address) as stub:
        def allocate() -> None:
            stub.NextSegment(idgen_pb2.NextSegmentRequest(biz_type="order"))

        for share in (0.95, 0.995):  # past 90% (and 50% again), then past 99%
            for _ in range(5):
                allocate()
            edit_row(sqlite_url, "order", f"max_id = {int(INT64_MAX * share)}")
        for _ in range(5):
            allocate()
        # Every allocation has been answered, so its warning, if any, has been written; the
        # server is stopped before its lines are counted, so a late one would be counted too.
    server.stop()
    warnings = [r for r in records(server) if "of the int64 range" in str(r["event"])]
    assert [(w["level"], w["threshold"], w["biz_type"], w["db"]) for w in warnings] == [
        ("WARNING", 0.5, "order", sqlite_url), ("WARNING", 0.9, "order", sqlite_url),
        ("WARNING", 0.99, "order", sqlite_url)]
    assert int(str(warnings[2]["max_id"])) > INT64_MAX * 0.99


def test_refused_calls_are_logged_without_the_token_and_not_once_per_call(start_server, sqlite_url):
    init_db(sqlite_url)
    add_biz("order", sqlite_url)
    add_biz("other", sqlite_url)
    token = create_token([sqlite_url], "order", name="orders-app")
    wrong = unknown_token(token)
    server = start_server([sqlite_url], global_args=JSON, extra_args=NO_DRAIN)
    with stub_to(server.address) as stub:
        for _ in range(30):  # a burst of calls with a wrong secret
            with pytest.raises(grpc.RpcError) as refused:
                stub.NextId(idgen_pb2.NextIdRequest(biz_type="order"), metadata=[bearer(wrong)])
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as denied:  # logged after every line of the burst
            stub.NextId(idgen_pb2.NextIdRequest(biz_type="other"), metadata=[bearer(token)])
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    [permission] = wait_for(server, "does not grant biz type 'other'")
    assert permission["token_name"] == "orders-app" and permission["token_id"] == token_id(token)
    [unauthenticated] = [r for r in records(server) if r.get("refusal") == "Unauthenticated"]
    assert unauthenticated["level"] == "WARNING" and unauthenticated["token_id"] == token_id(token)
    assert str(unauthenticated["peer"]).startswith("ipv4:127.0.0.1:")
    output = "".join(server.output)
    assert secret_of(token) not in output and secret_of(wrong) not in output


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    yield caplog


def test_refusals_left_out_are_counted_on_the_next_line_of_that_peer(captured):
    now = [0.0]
    refusals = RefusalLog(clock=lambda: now[0])
    refused = Unauthenticated("the token is not valid here: unknown, revoked, or mistyped")
    for _ in range(100):
        refusals.record(refused, "ipv4:10.0.0.7:5000")
    refusals.record(refused, "ipv4:10.0.0.8:5000")  # another peer has its own line
    now[0] = REFUSALS_EVERY
    refusals.record(refused, "ipv4:10.0.0.7:6000")  # another port of the same host
    lines = [r for r in captured.records if r.name == "idgen_server.gate"]
    assert [(r.peer, r.suppressed) for r in lines] == [  # type: ignore[attr-defined]
        ("ipv4:10.0.0.7:5000", 0), ("ipv4:10.0.0.8:5000", 0), ("ipv4:10.0.0.7:6000", 99)]
    assert "99 more refused since the last line" in lines[-1].getMessage()


def test_refusals_of_more_peers_than_it_tracks_share_one_line(captured):
    refusals = RefusalLog(max_peers=4, clock=lambda: 0.0)
    for host in range(100):
        refusals.record(Unauthenticated("no token"), f"ipv4:10.0.{host}.1:5000")
    assert len([r for r in captured.records if r.name == "idgen_server.gate"]) == 5


def test_the_step_multiplier_is_logged_when_it_changes_not_at_every_fetch(captured):
    now = [0.0]
    sized = AdaptiveSteps(lambda floor, steps: Segment.claimed(floor, floor + steps, 1, 0),
                          target=1.0, max_steps=4, clock=lambda: now[0], name="order")
    for _ in range(20):  # segments lasting 0.1 s: double, double, then stay at the maximum
        now[0] += 0.1
        sized(0)
    lines = [r for r in captured.records if r.name == "idgen_core.sizing"]
    assert [(r.biz_type, r.previous, r.step_multiplier) for r in lines] == [  # type: ignore[attr-defined]
        ("order", 1, 2), ("order", 2, 4)]


def test_the_log_format_and_level_come_from_the_environment_when_no_flag_says(tmp_path):
    env = {"IDGEN_LOG_FORMAT": "json", "IDGEN_LOG_LEVEL": "debug"}
    server = ServerProcess([], cwd=str(tmp_path), env=env, extra_args=NO_DRAIN).start()
    try:
        [start] = wait_for(server, "idgen serving on")
        assert start["level"] == "INFO"
    finally:
        server.stop()
    flagged = ServerProcess([], cwd=str(tmp_path), env=env, global_args=["--log-format", "text"],
                            extra_args=NO_DRAIN)
    try:
        flagged.start()
        assert any(" INFO idgen_server.server: idgen serving on" in line for line in flagged.output)
    finally:
        flagged.stop()
    # The level alone from the environment: at warning, the start line (INFO, logged before
    # the server reports ready) is left out.
    quiet = ServerProcess([], cwd=str(tmp_path), env={"IDGEN_LOG_FORMAT": "json",
                                                      "IDGEN_LOG_LEVEL": "warning"},
                          extra_args=NO_DRAIN)
    try:
        quiet.start()
    finally:
        quiet.stop()
    assert [r for r in records(quiet) if r["level"] in ("INFO", "DEBUG")] == []


def test_a_bad_log_setting_in_the_environment_is_one_line_naming_it():
    result = idgen("proto", env={**os.environ, "IDGEN_LOG_FORMAT": "xml"})
    assert result.returncode == 2
    assert result.stderr == "idgen: error: IDGEN_LOG_FORMAT must be one of text, json, not 'xml'\n"
