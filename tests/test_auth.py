"""Who may call: bearer tokens, against real ``idgen serve`` processes and the real ``idgen``
command, and the ``Authenticator`` itself over fake token tables.

Policy under test (``idgen_server.auth``): a server on loopback with no token is open (zero
set-up); once any token row exists in any database (a revoked one too) every call needs
``authorization: Bearer <token>``; a server beyond loopback without ``--insecure`` needs a
token on every call even while none exists; a token revoked in any database is refused
within seconds; a database that cannot be read keeps its last-read tokens; nothing can be
checked before some token table was read (fail closed). No token ever appears in a log, a
message or an exception.
"""
from __future__ import annotations

import logging
import operator
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import idgen_server.auth as auth_module
from idgen_client import LocalGenerator, PermissionDenied, RemoteClient, Unauthenticated
from idgen_core.errors import ConfigError, IdGenError, ServiceUnavailable, StorageUnavailable
from idgen_server.auth import DEFAULT_REFRESH, Authenticator
from idgen_server.registry import register
from idgen_server.tokens import Grant, hash_token, new_token
from idgen_wire import idgen_pb2, idgen_pb2_grpc
from idgen_wire.auth import TOKEN_ENV, bearer
from tests.support.certs import CertFiles, make_certs
from tests.support.cli import add_biz, db_args, idgen, init_db
from tests.support.proxy import behind_proxy
from tests.support.servers import ServerProcess
from tests.support.stores import open_stores, prepare
from tests.support.tokens import (
    TOKEN_FORMAT,
    cli_env,
    create_token,
    list_tokens,
    revoke_token,
    secret_of,
    token_file,
    token_id,
    unknown_token,
)
from tests.support.waiting import poll, wait_until

REVOCATION_BOUND = 5.0
"""Seconds within which every server refuses a revoked token (the issue's promise)."""

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
OK = grpc.StatusCode.OK


# --- helpers -----------------------------------------------------------------------------------

def ready_line(server: ServerProcess) -> str:
    """The latest "idgen: serving on ..." line: it says whether tokens are required."""
    return [line for line in server.output if "idgen: serving on" in line][-1]


def on_loopback(server: ServerProcess) -> str:
    """The address of a server listening on 0.0.0.0, reached through 127.0.0.1 (loopback)."""
    return "127.0.0.1:" + server.address.rpartition(":")[2]


def call_status(stub: idgen_pb2_grpc.IdGeneratorStub, metadata: Sequence[tuple[str, str]],
                biz_type: str = "order") -> tuple[grpc.StatusCode, str]:
    """The status and message of one ``NextId`` sent with exactly this metadata."""
    try:
        stub.NextId(idgen_pb2.NextIdRequest(biz_type=biz_type, count=1), metadata=tuple(metadata),
                    timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return OK, ""


def refused(client: RemoteClient, biz_type: str = "order") -> bool:
    """Whether the client's token is refused now (``Unauthenticated``); False if it gets IDs."""
    try:
        client.next_ids(biz_type, 1)
    except Unauthenticated:
        return True
    return False


def sqlite_db(directory, name: str, *biz_types: str) -> str:
    """A SQLite database set up as ``idgen init-db`` and ``idgen add-biz`` set it up (through
    the stores directly: they are not under test here), each biz type registered."""
    url = f"sqlite:///{directory}/{name}.db"
    stores = open_stores([url])
    try:
        for biz_type in biz_types:
            register(stores, biz_type, step=1000)
    finally:
        for store in stores:
            store.close()
    return url


@pytest.fixture
def order_db(tmp_path) -> str:
    """A fresh SQLite database with the biz type ``order`` and no token."""
    return sqlite_db(tmp_path, "orders", "order")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"))


@dataclass
class Guarded:
    """A server whose database holds two tokens: ``order`` grants the biz type ``order``,
    ``every`` grants every biz type (``*``). ``user`` and ``later`` are registered too,
    ``later`` only after the tokens were made."""

    server: ServerProcess
    url: str
    order: str
    every: str

    @property
    def address(self) -> str:
        return self.server.address


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    # One server for the read-only tests of this module (start_server is per test).
    directory = tmp_path_factory.mktemp("guarded")
    url = sqlite_db(directory, "guarded", "order", "user")
    order = create_token([url], "order", name="orders")
    every = create_token([url], "*", name="everything")
    add_biz("later", url)  # a biz type younger than the tokens
    server = ServerProcess([url], cwd=str(directory)).start()
    try:
        yield Guarded(server, url, order, every)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def guarded_stub(guarded: Guarded) -> Iterator[idgen_pb2_grpc.IdGeneratorStub]:
    with grpc.insecure_channel(guarded.address) as channel:
        yield idgen_pb2_grpc.IdGeneratorStub(channel)


# --- 1. zero set-up stays open -----------------------------------------------------------------

def test_a_loopback_server_with_no_token_serves_idgen_next_without_one(start_server):
    server = start_server([])  # the embedded database: nothing set up, no token made
    assert "no token required" in ready_line(server)
    result = idgen("next", "default", "--count", "2", "--target", server.address, env=cli_env())
    assert result.returncode == 0, result.stderr
    first, second = (int(line) for line in result.stdout.split())
    assert 0 < first < second


# --- 2. once a token exists, every call needs one ----------------------------------------------

def test_once_a_token_exists_the_server_says_tokens_are_required(guarded):
    assert "tokens required" in ready_line(guarded.server)


def test_once_a_token_exists_a_remote_client_without_one_is_unauthenticated(guarded):
    with RemoteClient(guarded.address, env={}) as client:
        with pytest.raises(Unauthenticated, match="needs a token"):
            client.next_ids("order", 1)


def test_once_a_token_exists_a_local_generator_without_one_is_unauthenticated(guarded, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with LocalGenerator("order", guarded.address) as generator:
        with pytest.raises(Unauthenticated, match="needs a token"):
            generator.next_id()


def test_once_a_token_exists_idgen_next_without_one_exits_1_saying_a_token_is_needed(guarded):
    result = idgen("next", "order", "--target", guarded.address, env=cli_env())
    assert result.returncode == 1 and result.stdout == ""
    assert "needs a token" in result.stderr and TOKEN_ENV in result.stderr


def test_with_its_token_the_library_clients_get_ids(guarded):
    with RemoteClient(guarded.address, token=guarded.order, env={}) as client:
        remote = client.next_ids("order", 3)
    with LocalGenerator("order", guarded.address, token=guarded.order) as generator:
        local = [generator.next_id() for _ in range(3)]
    assert remote == sorted(remote) and local == sorted(local)
    assert len(set(remote + local)) == 6


def test_with_its_token_idgen_next_gets_ids_from_a_token_file_or_idgen_token(guarded, tmp_path):
    by_file = idgen("next", "order", "--count", "2", "--target", guarded.address,
                    "--token-file", token_file(tmp_path, guarded.order), env=cli_env())
    by_env = idgen("next", "order", "--count", "2", "--target", guarded.address,
                   env=cli_env(guarded.order))
    for result in (by_file, by_env):
        assert result.returncode == 0, result.stderr
    ids = [int(i) for i in by_file.stdout.split() + by_env.stdout.split()]
    assert len(ids) == len(set(ids)) == 4


def test_a_token_for_another_biz_type_is_permission_denied(guarded):
    with RemoteClient(guarded.address, token=guarded.order, env={}) as client:
        with pytest.raises(PermissionDenied, match="does not grant biz type 'user'"):
            client.next_ids("user", 1)
        assert client.next_ids("order", 1), "the same token still serves its own biz type"


def test_a_local_generator_with_a_token_for_another_biz_type_is_permission_denied(guarded):
    with LocalGenerator("user", guarded.address, token=guarded.order) as generator:
        with pytest.raises(PermissionDenied, match="'user'"):
            generator.next_id()


def test_idgen_next_with_a_token_for_another_biz_type_exits_1_saying_so(guarded):
    result = idgen("next", "user", "--target", guarded.address, env=cli_env(guarded.order))
    assert result.returncode == 1 and result.stdout == ""
    assert "does not grant biz type 'user'" in result.stderr


@pytest.mark.parametrize("metadata", [
    pytest.param([("authorization", "Basic {order}")], id="basic-scheme"),
    pytest.param([("authorization", "Basic x")], id="basic-x"),
    pytest.param([("authorization", "")], id="empty"),
    pytest.param([("authorization", "Bearer")], id="scheme-alone"),
    pytest.param([("authorization", "Bearer ")], id="scheme-and-nothing"),
    pytest.param([("authorization", "{order}")], id="token-without-scheme"),
    pytest.param([("authorization", "Bearer {order}"), ("authorization", "Bearer {order}")],
                 id="two-entries"),
    pytest.param([("authorization", "Bearer {order}"), ("authorization", "")], id="two-entries-one-empty"),
    pytest.param([("x-authorization", "Bearer {order}")], id="another-key"),
    pytest.param([("authorization", "Bearer {order}x")], id="token-with-a-tail"),
])
def test_a_malformed_authorization_is_unauthenticated(guarded, guarded_stub, metadata):
    filled = [(key, value.format(order=guarded.order)) for key, value in metadata]
    code, details = call_status(guarded_stub, filled)
    assert code is UNAUTHENTICATED, details
    assert guarded.order not in details and secret_of(guarded.order) not in details


def test_one_well_formed_bearer_entry_is_accepted(guarded, guarded_stub):
    # The counterpart of the malformed cases: the same stub, the same token, sent right.
    assert call_status(guarded_stub, [bearer(guarded.order)]) == (OK, "")


def test_a_token_for_every_biz_type_grants_each_one_including_one_registered_after_it(guarded):
    with RemoteClient(guarded.address, token=guarded.every, env={}) as client:
        for biz_type in ("order", "user", "later"):
            assert client.next_ids(biz_type, 1), biz_type


# --- 3. revocation ----------------------------------------------------------------------------

@pytest.mark.parametrize("by", ["name", "id", "token"])
def test_a_revoked_token_is_refused_within_five_seconds(order_db, start_server, by):
    token = create_token([order_db], "order", name="doomed")
    server = start_server([order_db])
    with RemoteClient(server.address, token=token, env={}) as client:
        assert not refused(client), "the token works before it is revoked"
        result = revoke_token([order_db], {"name": "doomed", "id": token_id(token), "token": token}[by])
        assert result.returncode == 0, result.stderr
        assert "revoked doomed" in result.stdout
        assert secret_of(token) not in result.stdout + result.stderr, "revoking by token shows no secret"
        wait_until(lambda: refused(client), REVOCATION_BOUND, "the revoked token to be refused")
    assert list_tokens([order_db])["doomed"].revoked


def test_revoking_a_token_revoked_already_says_there_is_none_to_revoke(order_db):
    create_token([order_db], "order", name="once")
    assert revoke_token([order_db], "once").returncode == 0
    again = revoke_token([order_db], "once")
    assert again.returncode == 1 and "no token 'once' that is not revoked already" in again.stderr


def test_revoking_the_last_token_does_not_open_the_server_not_even_after_a_restart(order_db,
                                                                                   start_server):
    token = create_token([order_db], "order", name="last")
    server = start_server([order_db])
    with RemoteClient(server.address, token=token, env={}) as client:
        assert not refused(client)
        assert revoke_token([order_db], "last").returncode == 0
        wait_until(lambda: refused(client), REVOCATION_BOUND, "the revoked token to be refused")
    with RemoteClient(server.address, env={}) as anonymous:
        assert refused(anonymous), "no token at all is still refused once the last one is revoked"
    server.stop()
    server.start()
    assert "tokens required" in ready_line(server)
    with RemoteClient(server.address, env={}) as anonymous:
        assert refused(anonymous)


# --- 4. two databases --------------------------------------------------------------------------

@pytest.fixture
def two_dbs(make_mariadb) -> list[str]:
    """Two MariaDB databases set up as one server's (init-db, add-biz order), without tokens."""
    urls = [make_mariadb(), make_mariadb()]
    prepare(urls, "order", step=1000)
    return urls


@pytest.mark.mariadb
def test_a_token_is_created_in_every_database(two_dbs):
    create_token(two_dbs, "order", name="both")
    assert list_tokens(two_dbs)["both"].databases == "2/2"
    for url in two_dbs:
        assert list_tokens([url])["both"].databases == "1/1"


@pytest.mark.mariadb
@pytest.mark.slow
def test_with_one_database_cut_off_tokens_keep_working_and_ids_keep_coming(two_dbs, start_server):
    token = create_token(two_dbs, "order", name="steady")
    # Known to the database about to be cut alone: only the server's last copy knows it then.
    lone = create_token(two_dbs[:1], "order", name="lone")
    proxy, through = behind_proxy(two_dbs[0])
    try:
        server = start_server([through, two_dbs[1]])
        with RemoteClient(server.address, token=token, env={}) as client, \
                RemoteClient(server.address, token=lone, env={}) as lone_client, \
                RemoteClient(server.address, token=unknown_token(token), env={}) as stranger:
            before = client.next_ids("order", 10)
            assert lone_client.next_ids("order", 1)
            proxy.refuse()
            ids: list[int] = []
            verdicts: list[str] = []

            def calls() -> bool:
                # A well-formed unknown token makes the server read its tables at once (at
                # most every 0.5 s): each round, the cut database fails a read for real.
                try:
                    stranger.next_ids("order", 1)
                    verdicts.append("let in")
                except Unauthenticated:
                    verdicts.append("unauthenticated")
                except IdGenError as exc:
                    verdicts.append(type(exc).__name__)
                ids.extend(client.next_ids("order", 500))  # beyond what the server buffers
                ids.extend(lone_client.next_ids("order", 1))
                return False  # keep going until the window ends

            # Past the periodic refresh (every DEFAULT_REFRESH s) too, calling every 0.1 s.
            poll(calls, DEFAULT_REFRESH + 1.5, interval=0.1)
            assert set(verdicts) == {"unauthenticated"}, verdicts
            assert len(ids) == len(set(ids)) >= 5000 and not set(ids) & set(before)
            assert "tokens required" in ready_line(server)
    finally:
        proxy.close()


@pytest.mark.mariadb
def test_a_server_that_could_read_no_token_table_yet_lets_nobody_in(make_mariadb, start_server):
    url = make_mariadb()
    prepare([url], "order", step=1000)
    token = create_token([url], "order")
    proxy, through = behind_proxy(url)
    try:
        proxy.refuse()
        server = start_server([through])  # starts without its database, for now
        with RemoteClient(server.address, env={}, retries=0) as anonymous:
            with pytest.raises(ServiceUnavailable, match="cannot check tokens yet"):
                anonymous.next_ids("order", 1)
            proxy.restore()
            wait_until(lambda: refused(anonymous), REVOCATION_BOUND, "tokens to be required",
                       ignoring=ServiceUnavailable)
        with RemoteClient(server.address, token=token, env={}) as client:
            assert client.next_ids("order", 1)
    finally:
        proxy.close()


@pytest.mark.mariadb
def test_a_token_revoked_in_only_one_database_is_refused(two_dbs, start_server):
    token = create_token(two_dbs, "order", name="half")
    server = start_server(two_dbs)
    with RemoteClient(server.address, token=token, env={}) as client:
        assert not refused(client)
        assert revoke_token([two_dbs[1]], "half").returncode == 0
        assert not list_tokens([two_dbs[0]])["half"].revoked, "the other database still has it valid"
        wait_until(lambda: refused(client), REVOCATION_BOUND, "the half-revoked token to be refused")
    assert list_tokens(two_dbs)["half"].revoked, "token list shows it revoked"


# --- 5. token create is all or nothing ---------------------------------------------------------

@pytest.mark.mariadb
@pytest.mark.parametrize("cut", [0, 1])
def test_token_create_with_a_database_unreachable_fails_and_writes_no_row(two_dbs, cut):
    proxy, through = behind_proxy(two_dbs[cut])
    try:
        proxy.refuse()
        urls = [through if k == cut else url for k, url in enumerate(two_dbs)]
        result = idgen("token", "create", "--biz", "order", "--name", "partial", *db_args(urls))
    finally:
        proxy.close()
    assert result.returncode != 0 and result.stdout == "", "no token is printed"
    assert not TOKEN_FORMAT.search(result.stderr)
    for url in two_dbs:
        assert "partial" not in list_tokens([url])


def test_token_create_that_fails_in_a_later_database_removes_its_row_from_the_earlier_ones(tmp_path):
    first, second = sqlite_db(tmp_path, "first", "order"), sqlite_db(tmp_path, "second", "order")
    create_token([second], "order", name="taken")
    result = idgen("token", "create", "--biz", "order", "--name", "taken", *db_args([first, second]))
    assert result.returncode == 2 and result.stdout == ""
    assert "exists already" in result.stderr
    assert list_tokens([first]) == {}, "the row written in the first database was taken back"


# --- 6. a database set up by an older idgen ----------------------------------------------------

@pytest.fixture
def old_schema_db(tmp_path) -> str:
    """A database as an idgen before tokens left it: no idgen_token table."""
    url = sqlite_db(tmp_path, "old", "order")
    with sqlite3.connect(str(tmp_path / "old.db")) as conn:
        conn.execute("DROP TABLE idgen_token")
    return url


@pytest.mark.slow
def test_a_database_without_the_token_table_is_served_open_with_a_warning_given_once(old_schema_db,
                                                                          start_server):
    server = start_server([old_schema_db])
    assert "no token required" in ready_line(server)

    def warnings() -> list[str]:
        return [line for line in server.output if "WARNING" in line and "idgen_token" in line]

    assert any("has no idgen_token table" in line and "idgen init-db" in line for line in warnings())
    with RemoteClient(server.address, env={}) as client:
        assert client.next_ids("order", 2)
    # Said once, not at every read of the token tables (every DEFAULT_REFRESH seconds).
    seen = len(warnings())
    assert not poll(lambda: len(warnings()) > seen, 2 * DEFAULT_REFRESH + 0.5), warnings()


def test_token_create_on_a_database_without_the_token_table_says_to_run_init_db(old_schema_db):
    result = idgen("token", "create", "--biz", "order", *db_args([old_schema_db]))
    assert result.returncode == 2 and result.stdout == ""
    assert "no idgen_token table" in result.stderr and "idgen init-db" in result.stderr


def test_once_init_db_adds_the_token_table_a_new_token_closes_the_running_server(old_schema_db,
                                                                                start_server):
    server = start_server([old_schema_db])
    with RemoteClient(server.address, env={}) as anonymous:
        assert not refused(anonymous)
        init_db(old_schema_db)
        token = create_token([old_schema_db], "order")
        wait_until(lambda: refused(anonymous), REVOCATION_BOUND, "the server to require tokens")
    with RemoteClient(server.address, token=token, env={}) as client:
        assert client.next_ids("order", 1)


# --- 7. secure by default ----------------------------------------------------------------------

def test_listening_beyond_loopback_without_tls_is_refused_naming_the_ways_out(order_db, tmp_path):
    result = idgen("serve", "--listen", "0.0.0.0:0", *db_args([order_db]), cwd=str(tmp_path),
                   timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--tls-cert" in result.stderr and "--insecure" in result.stderr
    assert "serving on" not in result.stdout


def test_insecure_beyond_loopback_starts_with_a_warning_and_is_open_while_no_token_exists(
        order_db, start_server):
    server = start_server([order_db], listen="0.0.0.0:0", extra_args=["--insecure"])
    warnings = [line for line in server.output if "WARNING" in line and "--insecure" in line]
    assert warnings and "beyond loopback" in warnings[0]
    assert "no token required" in ready_line(server)
    with RemoteClient(on_loopback(server), env={}) as client:  # loopback traffic to 0.0.0.0
        assert client.next_ids("order", 1)


def test_with_tls_beyond_loopback_every_call_needs_a_token_even_while_none_exists(
        order_db, start_server, certs):
    server = start_server([order_db], listen="0.0.0.0:0",
                          extra_args=["--tls-cert", str(certs.server_cert),
                                      "--tls-key", str(certs.server_key)])
    assert "tokens required" in ready_line(server)
    assert list_tokens([order_db]) == {}
    target = on_loopback(server)
    with RemoteClient(target, ca_file=str(certs.ca), env={}) as anonymous:
        with pytest.raises(Unauthenticated, match="needs a token"):
            anonymous.next_ids("order", 1)
    token = create_token([order_db], "order")
    with RemoteClient(target, ca_file=str(certs.ca), token=token, env={}) as client:
        assert wait_until(lambda: client.next_ids("order", 1), REVOCATION_BOUND,
                          "the new token to be accepted", ignoring=Unauthenticated)


# --- 8. no token in any log or message ---------------------------------------------------------

@pytest.mark.slow
def test_no_token_appears_in_the_servers_debug_log_or_in_client_errors(tmp_path, start_server,
                                                                     caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    url = sqlite_db(tmp_path, "logged", "order", "user")
    good = create_token([url], "order", name="good")
    doomed = create_token([url], "order", name="doomed")
    server = start_server([url], global_args=["-v"])  # `idgen -v serve`: debug logging
    unknown = unknown_token(good)  # well-formed, unknown: the server reads its tables for it
    malformed = [good[:-1], good + "x", good.replace("idgen_", "idgen-", 1), good.upper()]
    secrets = [good, doomed, unknown, *malformed]
    errors: list[BaseException] = []

    def expect(error: type[IdGenError], call) -> None:
        with pytest.raises(error) as raised:
            call()
        errors.append(raised.value)

    with RemoteClient(server.address, token=good, env={}) as client:
        assert client.next_ids("order", 2)
        expect(PermissionDenied, lambda: client.next_ids("user", 1))
        assert good not in repr(client)
    for bad in (unknown, *malformed):
        with RemoteClient(server.address, token=bad, env={}) as client:
            expect(Unauthenticated, lambda: client.next_ids("order", 1))
    with LocalGenerator("order", server.address, token=unknown) as generator:
        expect(Unauthenticated, generator.next_id)
    expect(ConfigError, lambda: RemoteClient(server.address, token=f"Bearer {good}", env={}))
    with grpc.insecure_channel(server.address) as channel:
        stub = idgen_pb2_grpc.IdGeneratorStub(channel)
        for metadata in ([("authorization", f"Basic {good}")], [bearer(good), bearer(good)],
                         [("authorization", good)], [bearer(unknown)]):
            code, details = call_status(stub, metadata)
            assert code is UNAUTHENTICATED
            errors.append(Exception(details))
    cli_output = []
    for token in (good, unknown, good[:-1]):
        for biz_type in ("order", "user"):
            result = idgen("next", biz_type, "--target", server.address,
                           "--token-file", token_file(tmp_path, token), env=cli_env())
            cli_output.append(result.stdout + result.stderr)
    with RemoteClient(server.address, token=doomed, env={}) as client:
        assert not refused(client)
        assert revoke_token([url], doomed).returncode == 0
        wait_until(lambda: refused(client), REVOCATION_BOUND, "the revoked token to be refused")
        expect(Unauthenticated, lambda: client.next_ids("order", 1))

    assert server.terminate() == 0
    wait_until(lambda: any("idgen: stopping" in line for line in server.output), 10,
               "the server's last words")
    server_log = "".join(server.output)
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    assert len(errors) == 13 and all(texts)
    needles = [*secrets, *(secret_of(t) for t in (good, doomed, unknown)), hash_token(good),
               hash_token(doomed)]
    for needle in needles:
        assert needle not in server_log, "a token (its secret, its hash) in the server's log"
        assert not any(needle in text for text in texts), "a token in a client exception"
        assert not any(needle in text for text in cli_output), "a token in idgen next's output"
        assert needle not in caplog.text, "a token in the client process's log"


# --- 9. fuzzing the authorization metadata -----------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)  # what gRPC lets a value hold
_TOKEN_CHARS = "0123456789abcdefABCDEF_-xyzXYZ"
_KEYS = st.sampled_from(["authorization"] * 4 + ["x-authorization", "proxy-authorization", "auth",
                                                 "token", "bearer", "x-idgen-token"])
_PREFIXES = st.sampled_from(["Bearer ", "bearer ", "BEARER ", "Bearer", "Bearer  ", " Bearer ",
                             "Basic ", "Token ", "", "Bearer idgen_", "Bearer Bearer ", "Bearer\x20\x20\x20"])


def _flip(token: str, at: int, char: str) -> str:
    at %= len(token)
    return token[:at] + char + token[at + 1:]


def _verdict(metadata: Sequence[tuple[str, str]], biz_type: str, grants: dict[str, str]) -> grpc.StatusCode:
    """What the server must answer: exactly one ``authorization`` entry, ``Bearer`` (any
    case) then one or more spaces then a valid token (spaces around it ignored)."""
    values = [value for key, value in metadata if key == "authorization"]
    if len(values) != 1 or values[0][:7].lower() != "bearer ":
        return UNAUTHENTICATED
    granted = grants.get(values[0][7:].strip(" "))
    if granted is None:
        return UNAUTHENTICATED
    return OK if granted in ("*", biz_type) else PERMISSION_DENIED


@FUZZ
@given(data=st.data())
def test_any_authorization_metadata_gets_an_authentication_verdict_never_an_internal_error(
        guarded, guarded_stub, data):
    tokens = st.sampled_from([guarded.order, guarded.every])
    token_like = st.one_of(
        tokens,
        st.builds(_flip, tokens, st.integers(0, 200), st.sampled_from(_TOKEN_CHARS)),  # almost valid
        st.builds(lambda token, n: token[:n], tokens, st.integers(0, 80)),  # cut short
        st.builds(operator.add, tokens, st.text(_PRINTABLE, min_size=1, max_size=4)),  # a tail
        st.from_regex(TOKEN_FORMAT, fullmatch=True),  # well-formed, unknown
        st.text(_PRINTABLE, max_size=100),
        st.builds(operator.mul, st.sampled_from(["a", "X", "_", " ", "idgen_", "Bearer "]),
                  st.integers(500, 1000)),  # very long: up to 7000 characters
    )
    value = st.one_of(st.builds(operator.add, _PREFIXES, token_like), st.text(_PRINTABLE, max_size=200))
    metadata = data.draw(st.lists(st.tuples(_KEYS, value), max_size=3), label="metadata")
    biz_type = data.draw(st.sampled_from(["order", "user"]), label="biz_type")
    code, details = call_status(guarded_stub, metadata, biz_type)
    expected = _verdict(metadata, biz_type, {guarded.order: "order", guarded.every: "*"})
    assert code is expected, (code, details)
    for token in (guarded.order, guarded.every):
        assert secret_of(token) not in details
    assert guarded.server.proc is not None and guarded.server.proc.poll() is None, "the server is up"


# --- 10. the Authenticator, over fake token tables ---------------------------------------------

class FakeTable:
    """A ``TokenTable`` in memory: its grants, whether it has the table, whether it answers,
    and how often it was read."""

    def __init__(self, *grants: Grant, name: str = "db0", has_table: bool = True) -> None:
        self.name = name
        self.grants = list(grants)
        self.has_table = has_table
        self.down = False
        self.reads = 0
        self.hold: threading.Event | None = None  # set: read() waits for it
        self.reading = threading.Event()

    def read(self, *, logged: bool = True) -> list[Grant]:
        self.reads += 1
        self.reading.set()
        if self.hold is not None:
            assert self.hold.wait(10)
        if self.down:
            raise StorageUnavailable(f"{self.name} is unreachable")
        if not self.has_table:
            raise StorageUnavailable(f"{self.name}: no such table")
        return list(self.grants)

    def exists(self, *, logged: bool = True) -> bool:
        if self.down:
            raise StorageUnavailable(f"{self.name} is unreachable")
        return self.has_table


def grant_of(token: str, *biz_types: str, name: str = "t", revoked: bool = False) -> Grant:
    return Grant(token_id=token_id(token), name=name, secret_hash=hash_token(token),
                 biz_types=frozenset(biz_types or ("order",)),
                 revoked_at=datetime.now(timezone.utc) if revoked else None)


def sent(token: str) -> list[tuple[str, str]]:
    return [bearer(token)]


class Clock:
    """``time.monotonic`` for the Authenticator, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
def authenticators() -> Iterator[list[Authenticator]]:
    made: list[Authenticator] = []
    yield made
    for auth in made:
        auth.close()


def authenticator(made: list[Authenticator], *tables: FakeTable, always: bool = False) -> Authenticator:
    auth = Authenticator(tables, always=always)  # type: ignore[arg-type]
    made.append(auth)
    return auth


def test_auth_an_unknown_id_and_a_wrong_secret_are_refused_alike_the_secret_compared_in_constant_time(
        authenticators, monkeypatch):
    token, _ = new_token()
    auth = authenticator(authenticators, FakeTable(grant_of(token)))
    compared: list[tuple[str, str]] = []

    def compare_digest(a: str, b: str) -> bool:
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(auth_module, "hmac", SimpleNamespace(compare_digest=compare_digest))
    wrong_secret = unknown_token(token)
    unknown_id, _ = new_token()
    refusals = []
    for presented in (wrong_secret, unknown_id):
        with pytest.raises(Unauthenticated) as raised:
            auth.identify(sent(presented))
        refusals.append(str(raised.value))
    assert refusals[0] == refusals[1], "the caller cannot tell a known id from an unknown one"
    assert compared == [(hash_token(wrong_secret), hash_token(token))], \
        "the wrong secret's hash was compared with hmac.compare_digest"
    assert auth.identify(sent(token)) is not None
    assert compared[-1] == (hash_token(token), hash_token(token))


def test_auth_a_burst_of_unknown_tokens_reads_the_tables_at_most_once_per_half_second(
        authenticators, clock):
    token, _ = new_token()
    table = FakeTable(grant_of(token))
    auth = authenticator(authenticators, table)
    assert table.reads == 1  # the read at start

    def burst(count: int) -> None:
        for _ in range(count):
            with pytest.raises(Unauthenticated):
                auth.identify(sent(new_token()[0]))

    burst(200)
    assert table.reads == 2, "one early read for the whole burst"
    clock.now += 0.4
    burst(200)
    assert table.reads == 2, "none again within half a second"
    clock.now += 0.1
    burst(200)
    assert table.reads == 3
    with pytest.raises(Unauthenticated):  # malformed tokens never cause a read
        auth.identify(sent("not-a-token"))
    clock.now += 10
    with pytest.raises(Unauthenticated):
        auth.identify(sent("idgen_short"))
    assert table.reads == 3


def test_auth_a_token_created_since_the_last_read_works_at_once(authenticators, clock):
    table = FakeTable(grant_of(new_token()[0]))
    auth = authenticator(authenticators, table)
    fresh, _ = new_token()
    table.grants.append(grant_of(fresh, name="fresh"))
    grant = auth.identify(sent(fresh))
    assert grant is not None and grant.name == "fresh"


def test_auth_never_reads_early_twice_at_once(authenticators, clock):
    table = FakeTable(grant_of(new_token()[0]))
    auth = authenticator(authenticators, table)
    table.hold, table.reading = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    def first() -> None:
        try:
            auth.identify(sent(new_token()[0]))
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    reader = threading.Thread(target=first, name="early-reader")
    reader.start()
    try:
        assert table.reading.wait(10)
        clock.now += 5  # long past the gap: only the read in progress holds the second back
        with pytest.raises(Unauthenticated):
            auth.identify(sent(new_token()[0]))
        assert table.reads == 2, "the second unknown token did not start a read of its own"
    finally:
        table.hold.set()
        reader.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], Unauthenticated)


def test_auth_fails_closed_while_no_token_table_could_be_read(authenticators):
    token, _ = new_token()
    table = FakeTable(grant_of(token))
    table.down = True
    auth = authenticator(authenticators, table)
    for metadata in ([], sent(token)):
        with pytest.raises(ServiceUnavailable) as raised:
            auth.identify(metadata)
        assert not isinstance(raised.value, Unauthenticated)
    table.down = False
    auth.refresh()
    assert auth.identify(sent(token)) is not None
    with pytest.raises(Unauthenticated):
        auth.identify([])


def test_auth_a_database_that_stops_answering_keeps_its_last_copy_of_the_tokens(authenticators):
    token, _ = new_token()
    tables = FakeTable(grant_of(token), name="db0"), FakeTable(name="db1")
    auth = authenticator(authenticators, *tables)
    tables[0].down = True
    auth.refresh()
    assert auth.identify(sent(token)) is not None
    assert auth.required


@pytest.mark.parametrize("revoked_in", [0, 1])
def test_auth_a_token_revoked_in_any_database_is_refused(authenticators, revoked_in):
    token, _ = new_token()
    tables = [FakeTable(grant_of(token, revoked=k == revoked_in), name=f"db{k}") for k in range(2)]
    auth = authenticator(authenticators, *tables)
    with pytest.raises(Unauthenticated):
        auth.identify(sent(token))
    assert auth.tokens == 0 and auth.required


def test_auth_a_revocation_seen_before_a_database_went_down_still_counts(authenticators):
    token, _ = new_token()
    tables = FakeTable(grant_of(token), name="db0"), FakeTable(grant_of(token), name="db1")
    auth = authenticator(authenticators, *tables)
    assert auth.identify(sent(token)) is not None
    tables[1].grants = [grant_of(token, revoked=True)]
    auth.refresh()
    tables[1].down = True  # its last copy, with the revocation, is kept
    auth.refresh()
    with pytest.raises(Unauthenticated):
        auth.identify(sent(token))


def test_auth_only_revoked_tokens_keep_every_call_needing_a_token(authenticators):
    auth = authenticator(authenticators, FakeTable(grant_of(new_token()[0], revoked=True)))
    assert auth.required
    with pytest.raises(Unauthenticated):
        auth.identify([])


def test_auth_no_token_anywhere_lets_calls_in_unless_tokens_are_always_needed(authenticators):
    empty, without_table = FakeTable(name="db0"), FakeTable(name="db1", has_table=False)
    assert authenticator(authenticators, empty, without_table).identify([]) is None
    always = authenticator(authenticators, FakeTable(), always=True)
    assert always.required
    with pytest.raises(Unauthenticated, match="needs a token"):
        always.identify([])


def test_auth_a_database_without_the_token_table_is_read_again_only_once_it_has_one(authenticators):
    table = FakeTable(name="db0", has_table=False)
    auth = authenticator(authenticators, table)
    for _ in range(3):
        auth.refresh()
    assert table.reads == 1, "no failed read (and its logged warning) at every refresh"
    token, _ = new_token()
    table.has_table, table.grants = True, [grant_of(token)]
    auth.refresh()
    assert table.reads == 2 and auth.required and auth.identify(sent(token)) is not None


def test_auth_a_grant_allows_its_biz_types_or_every_one_with_a_star(authenticators):
    order, every = new_token()[0], new_token()[0]
    auth = authenticator(authenticators, FakeTable(grant_of(order, "order"), grant_of(every, "*")))
    assert auth.check(sent(order), "order") is not None
    with pytest.raises(PermissionDenied, match="'user'"):
        auth.check(sent(order), "user")
    for biz_type in ("order", "user", "anything"):
        assert auth.check(sent(every), biz_type) is not None


def test_auth_messages_never_hold_the_token(authenticators, clock):
    token, _ = new_token()
    auth = authenticator(authenticators, FakeTable(grant_of(token, "order")))
    presented = [token, unknown_token(token), token[:-1], token + "x"]
    for candidate in presented:
        for biz_type in ("order", "user"):
            try:
                auth.check(sent(candidate), biz_type)
            except IdGenError as exc:
                assert candidate not in str(exc) and secret_of(token) not in str(exc)


def test_auth_a_database_that_stops_answering_is_logged_once_per_outage(authenticators, caplog):
    table = FakeTable(grant_of(new_token()[0]))
    auth = authenticator(authenticators, table)
    table.down = True
    with caplog.at_level("INFO", logger=auth_module.__name__):
        for _ in range(3):
            auth.refresh()
        table.down = False
        auth.refresh()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot read the token table of db0" in m for m in messages) == 1, messages
    assert sum("can be read again" in m for m in messages) == 1, messages
    assert auth.tokens == 1, "the last copy was kept meanwhile"
