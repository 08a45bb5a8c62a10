"""The Admin service's ``Status`` and ``idgen status``: what a server holds, for operators.

Real servers (in-process ``IdGenServer``) over real databases: two SQLite files,
and a MariaDB reached through a ``TcpProxy`` by a user with a password, to cut it
off and to check that its password shows nowhere. The command runs as a user runs
it, a process of its own.
"""
from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format

from idgen_client import RemoteClient
from idgen_core.segment import INT64_MAX
from idgen_server.config import ServerConfig
from idgen_server.server import IdGenServer
from idgen_wire import idgen_pb2, idgen_pb2_grpc
from idgen_wire.auth import bearer
from tests.support.cli import idgen
from tests.support.proxy import TcpProxy, behind_proxy
from tests.support.servers import free_port
from tests.support.stores import prepare, read_row
from tests.support.tokens import cli_env, create_token, secret_of, token_file
from tests.support.users import DbUser, database_user
from tests.support.waiting import wait_until

STEP = 100


@pytest.fixture
def two_sqlite(tmp_path: Path) -> list[str]:
    """Two SQLite databases serving "order" together (step 100: 50 IDs a segment each)."""
    urls = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    prepare(urls, "order", step=STEP)
    return urls


@contextmanager
def running(urls: Sequence[str], **settings: object) -> Iterator[IdGenServer]:
    config = ServerConfig(db_urls=tuple(urls), listen="127.0.0.1:0", **settings)  # type: ignore[arg-type]
    with IdGenServer(config) as server:
        yield server


def status_of(server: IdGenServer, token: str | None = None, timeout: float = 10.0
              ) -> idgen_pb2.StatusResponse:
    """One ``Status`` call, no retry: it fails if the server does not answer within ``timeout``."""
    with RemoteClient(server.address, token=token, timeout=timeout, retries=0, env={}) as client:
        return client.status()


def take_ids(server: IdGenServer, *counts: int) -> list[int]:
    with RemoteClient(server.address, env={}) as client:
        return [i for count in counts for i in client.next_ids("order", count)]


# -- the RPC ---------------------------------------------------------------------------------


def test_status_says_release_start_and_serving(two_sqlite):
    before = time.time()
    with running(two_sqlite) as server:
        reply = status_of(server)
    assert reply.version == version("idgen")
    assert before - 0.001 <= reply.started_at.ToMicroseconds() / 1e6 <= time.time()
    assert reply.serving
    assert not reply.biz_types, "no biz type is served before a first call"


def test_status_counts_the_ids_handed_out_by_biz_type(two_sqlite):
    with running(two_sqlite) as server:
        ids = take_ids(server, 1, 5, 12)
        reply = status_of(server)
    [biz] = reply.biz_types
    assert biz.biz_type == "order"
    assert biz.ids_issued == len(ids) == 18
    current, last = biz.current, ids[-1]
    assert current.start <= last <= current.end and last % current.delta == current.remainder
    assert current.ids_left == len(range(last + current.delta, current.end + 1, current.delta))
    assert biz.step == STEP and biz.step_multiplier >= 1 and biz.fetches >= 1
    if biz.HasField("next"):
        assert biz.next.start > current.end and biz.next.ids_left > 0


def test_status_shows_every_database_with_its_rows_as_last_read(two_sqlite):
    with running(two_sqlite) as server:
        take_ids(server, 60)  # more than one segment: both databases allocate

        def caught_up() -> idgen_pb2.StatusResponse | None:
            reply = status_of(server)
            real = [[row.max_id] if (row := read_row(url, "order")) else [] for url in two_sqlite]
            seen = [[row.max_id for row in db.rows] for db in reply.databases]
            return reply if seen == real else None

        reply = wait_until(caught_up, 15, "Status to show each database's max_id")
    assert [db.label for db in reply.databases] == ["db0", "db1"]
    assert [db.name for db in reply.databases] == two_sqlite
    assert all(db.reachable and db.last_error == "" for db in reply.databases)
    for index, db in enumerate(reply.databases):
        [row] = db.rows
        assert (row.biz_type, row.step, row.delta, row.remainder) == ("order", STEP, 2, index)
        assert row.max_id > 0 and row.range_used == row.max_id / INT64_MAX


def test_status_answers_bytes_that_are_no_message_with_invalid_argument(two_sqlite):
    with running(two_sqlite) as server, grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary("/idgen.v1.Admin/Status")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\x0a\x05ab", timeout=10)  # a field 5 bytes long, cut after 2
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "idgen.v1.StatusRequest" in info.value.details()


def test_status_calls_count_against_the_callers_quota(two_sqlite):
    with running(two_sqlite, quota_calls=1.0, quota_ids=0.0) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = idgen_pb2_grpc.AdminStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            for _ in range(5):  # one call a second: the second of them in a row is refused
                stub.Status(idgen_pb2.StatusRequest(), timeout=10)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_status_needs_a_token_with_the_admin_scope_once_tokens_exist(two_sqlite):
    admin = create_token(two_sqlite, "order", admin=True, name="ops")
    app = create_token(two_sqlite, "order", name="app")
    with running(two_sqlite) as server, grpc.insecure_channel(server.address) as channel:
        stub = idgen_pb2_grpc.AdminStub(channel)

        def refusal(*metadata: tuple[str, str]) -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.RpcError) as info:
                stub.Status(idgen_pb2.StatusRequest(), metadata=metadata, timeout=10)
            return info.value.code(), info.value.details()

        assert refusal()[0] is grpc.StatusCode.UNAUTHENTICATED
        code, details = refusal(bearer(app))
        assert code is grpc.StatusCode.PERMISSION_DENIED and "admin" in details
        assert secret_of(app) not in details
        reply = stub.Status(idgen_pb2.StatusRequest(), metadata=[bearer(admin)], timeout=10)
    assert [db.label for db in reply.databases] == ["db0", "db1"]
    shown = text_format.MessageToString(reply)
    assert secret_of(admin) not in shown and secret_of(app) not in shown


# -- a database cut off (MariaDB through a proxy, as a user with a password) ---------------------


def with_password(user: DbUser) -> str:
    """``user``'s URL with the password in it, percent-encoded as a URL needs."""
    name = user.url.partition("://")[2].partition("@")[0]
    return user.url.replace(f"://{name}@", f"://{name}:{urllib.parse.quote(user.password, safe='')}@")


@contextmanager
def proxied_mariadb(mariadb_server, sqlite_url: str) -> Iterator[tuple[TcpProxy, list[str], DbUser]]:
    """SQLite as db0 and MariaDB as db1 (through a proxy, its password in the URL), serving
    "order" together."""
    with database_user(mariadb_server) as user:
        proxy, proxied = behind_proxy(with_password(user))
        try:
            urls = [sqlite_url, proxied]
            prepare(urls, "order", step=STEP)
            yield proxy, urls, user
        finally:
            proxy.close()


def benched(server: IdGenServer, timeout: float = 10.0) -> idgen_pb2.StatusResponse | None:
    """The server's status if it shows db1 benched, else None."""
    reply = status_of(server, timeout=timeout)
    return None if reply.databases[1].reachable else reply


def no_password(text: str, user: DbUser) -> bool:
    return not any(form in text for form in user.forms())


@pytest.mark.mariadb
def test_status_shows_a_cut_database_benched_since_the_cut_and_why(mariadb_server, sqlite_url):
    with proxied_mariadb(mariadb_server, sqlite_url) as (proxy, urls, user), \
            running(urls, db_timeout=2.0) as server:
        take_ids(server, 1)  # the server watches its databases once it serves
        cut = time.time()
        proxy.refuse()
        reply = wait_until(lambda: benched(server), 20, "Status to show db1 benched")
    db0, db1 = reply.databases
    assert db0.reachable and not db1.reachable
    assert db1.since.ToMicroseconds() / 1e6 >= cut - 0.001
    assert db1.last_error
    name = user.url.partition("://")[2].partition("@")[0]
    assert db1.name.endswith(f"://{name}:***@{proxy.address}/{user.database}")
    assert no_password(text_format.MessageToString(reply), user)


@pytest.mark.mariadb
def test_status_answers_while_a_database_hangs(mariadb_server, sqlite_url):
    with proxied_mariadb(mariadb_server, sqlite_url) as (proxy, urls, user), \
            running(urls, db_timeout=3.0) as server:
        take_ids(server, 1)
        proxy.hang()
        try:
            # Each call must be answered within 2 s, while every read of db1 hangs for 3 s
            # (db_timeout): every check of this wait is a Status answered during the hang.
            reply = wait_until(lambda: benched(server, timeout=2), 30, "Status to show the hung db1 benched")
            for _ in range(3):  # benched and still hung: the probes of it block, Status does not
                assert not status_of(server, timeout=2).databases[1].reachable
        finally:
            proxy.restore()
    assert reply.databases[0].reachable and reply.databases[1].last_error
    assert no_password(text_format.MessageToString(reply), user)


# -- the command ------------------------------------------------------------------------------


def cells(line: str) -> list[str]:
    """A table line's cells: columns are two spaces or more apart, cells hold single spaces."""
    return re.split(r"\s{2,}", line.strip())


def test_status_command_prints_tables_for_people(two_sqlite):
    with running(two_sqlite) as server:
        ids = take_ids(server, 3)
        result = idgen("status", "--target", server.address, env=cli_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"idgen {version('idgen')} at {server.address}: serving, started ")
    biz = dict(zip(cells(lines[2]), cells(lines[3]), strict=True))
    assert biz["BIZ TYPE"] == "order" and biz["ISSUED"] == "3" and biz["STEP"] == f"{STEP} x 1"
    low, _, high = biz["CURRENT SEGMENT"].partition(" ")[0].partition("..")
    assert int(low) <= ids[-1] <= int(high)
    header = lines.index(next(line for line in lines if line.startswith("DATABASE")))
    for index, url in enumerate(two_sqlite):
        db = dict(zip(cells(lines[header]), cells(lines[header + 1 + index]), strict=True))
        assert db["DATABASE"] == f"db{index}" and db["NAME"] == url
        assert db["STATE (UTC)"].startswith("up since ") and db["LAST ERROR"] == "-"
    assert "db0: its rows as the server last read them" in lines


def test_status_command_prints_json_for_scripts(two_sqlite):
    with running(two_sqlite) as server:
        take_ids(server, 3)
        result = idgen("status", "--json", "--target", server.address, env=cli_env())
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert list(status) == ["version", "started_at", "serving", "biz_types", "databases"]
    assert status["version"] == version("idgen") and status["serving"] is True
    assert status["started_at"].endswith("Z")
    [biz] = status["biz_types"]
    # int64 and uint64 are strings in protobuf's JSON mapping: exact in JavaScript too.
    assert biz["biz_type"] == "order" and biz["ids_issued"] == "3" and biz["step"] == str(STEP)
    assert isinstance(biz["current"]["start"], str) and isinstance(biz["step_multiplier"], int)
    assert {"fetches", "waits"} <= set(biz)
    assert [db["label"] for db in status["databases"]] == ["db0", "db1"]
    for db in status["databases"]:
        assert db["reachable"] is True and db["last_error"] == "" and "since" in db
        for row in db["rows"]:
            assert isinstance(row["max_id"], str) and isinstance(row["range_used"], float)


def test_status_command_sends_the_token_from_a_file(two_sqlite, tmp_path):
    admin = create_token(two_sqlite, "order", admin=True)
    with running(two_sqlite) as server:
        without = idgen("status", "--target", server.address, env=cli_env())
        with_token = idgen("status", "--target", server.address,
                           "--token-file", token_file(tmp_path, admin), env=cli_env())
    assert without.returncode == 1 and "token" in without.stderr
    assert with_token.returncode == 0, with_token.stderr
    assert secret_of(admin) not in with_token.stdout + with_token.stderr


@pytest.mark.mariadb
def test_status_command_never_shows_a_database_password(mariadb_server, sqlite_url):
    with proxied_mariadb(mariadb_server, sqlite_url) as (proxy, urls, user), \
            running(urls, db_timeout=2.0) as server:
        take_ids(server, 1)
        proxy.refuse()  # so that db1 has a last error to show
        wait_until(lambda: benched(server), 20, "Status to show db1 benched")
        table = idgen("status", "--target", server.address, env=cli_env())
        as_json = idgen("status", "--json", "--target", server.address, env=cli_env())
    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    assert "BENCHED since" in table.stdout
    assert json.loads(as_json.stdout)["databases"][1]["last_error"]
    for result in (table, as_json):
        assert "***@" in result.stdout
        assert no_password(result.stdout + result.stderr, user)


def test_status_command_exits_1_when_no_server_answers():
    result = idgen("status", "--target", f"127.0.0.1:{free_port()}", "--timeout", "0.5", env=cli_env())
    assert result.returncode == 1
    assert result.stderr.startswith("idgen: error: no ID server answered") and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1


def test_status_command_exits_2_for_bad_usage():
    result = idgen("status", "--target", "not an address", env=cli_env())
    assert result.returncode == 2 and "HOST:PORT" in result.stderr
