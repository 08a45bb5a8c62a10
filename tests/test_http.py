"""The HTTP/JSON API against real ``idgen serve --http-listen`` processes."""
from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sqlite3
import ssl
from pathlib import Path

import aiohttp
import pytest

from idgen_client import RemoteClient
from idgen_server.http_api import MAX_BODY, openapi_document
from tests.support.certs import make_certs
from tests.support.servers import ServerProcess
from tests.support.stores import prepare, read_row
from tests.support.tokens import cli_env, create_token
from tests.support.waiting import wait_until

BIZ = "order"
HTTP = ["--http-listen", "127.0.0.1:0"]


@pytest.fixture
def order_db(sqlite_url):
    prepare([sqlite_url], BIZ, step=1000)
    return sqlite_url


@pytest.fixture
def http_server(order_db, start_server) -> ServerProcess:
    return start_server([order_db], extra_args=HTTP, env=cli_env())


async def call(method: str, url: str, *, ssl_context: ssl.SSLContext | bool | None = None,
               **kwargs: object) -> tuple[int, dict[str, str], dict]:
    """One request: its status, headers and JSON body."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, ssl=ssl_context, **kwargs) as reply:
            return reply.status, dict(reply.headers), json.loads(await reply.read())


async def get(url: str, **kwargs: object) -> tuple[int, dict[str, str], dict]:
    return await call("GET", url, **kwargs)


# -- IDs ------------------------------------------------------------------------------------

async def test_ids_are_strings_increasing_and_never_cached(http_server):
    status, headers, body = await get(f"{http_server.http_url}/v1/ids/{BIZ}?count=5")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "no-store"  # a cache replaying IDs would hand them out twice
    ids = body["ids"]
    assert len(ids) == 5 and all(isinstance(i, str) for i in ids)
    assert [int(i) for i in ids] == sorted({int(i) for i in ids})
    status, _, body = await get(f"{http_server.http_url}/v1/ids/{BIZ}")
    assert status == 200 and len(body["ids"]) == 1 and int(body["ids"][0]) > int(ids[-1])


async def test_http_and_grpc_draw_from_one_buffer_and_never_share_an_id(http_server):
    url = f"{http_server.http_url}/v1/ids/{BIZ}"
    async with aiohttp.ClientSession() as session:
        async def over_http(count: int) -> list[int]:
            got = []
            for _ in range(40):
                async with session.get(url, params={"count": str(count)}) as reply:
                    assert reply.status == 200
                    got += [int(i) for i in (await reply.json())["ids"]]
            return got

        def over_grpc() -> list[int]:
            with RemoteClient(http_server.address) as client:
                return [i for _ in range(40) for i in client.next_ids(BIZ, 300)]

        drawn = await asyncio.gather(over_http(1), over_http(1000), over_http(7),
                                     asyncio.to_thread(over_grpc))
    every = [i for d in drawn for i in d]
    assert len(every) == len(set(every)) == 40 * (1 + 1000 + 7 + 300)
    assert all(d == sorted(d) for d in drawn[:3])  # one caller's IDs increase
    assert max(every) <= read_row(http_server.db_urls[0], BIZ).max_id


async def test_a_segment_is_the_callers_alone(http_server):
    url = http_server.http_url
    status, headers, segment = await call("POST", f"{url}/v1/segments/{BIZ}", json={"steps": 2})
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert segment["biz_type"] == BIZ and all(isinstance(segment[k], str) for k in
                                             ("start", "end", "delta", "remainder"))
    start, end = int(segment["start"]), int(segment["end"])
    assert end - start + 1 == 2000
    _, _, body = await get(f"{url}/v1/ids/{BIZ}?count=3000")
    assert not {int(i) for i in body["ids"]} & set(range(start, end + 1))
    # An empty body asks for the defaults; a floor may be a string or a number, as in proto JSON.
    status, _, again = await call("POST", f"{url}/v1/segments/{BIZ}")
    assert status == 200 and int(again["start"]) > end
    for floor in (str(end), end):
        status, _, above = await call("POST", f"{url}/v1/segments/{BIZ}", json={"floor": floor})
        assert status == 200 and int(above["start"]) > end


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "body", "status", "code", "says"), [
    ("GET", "/v1/ids/nosuch", None, 404, "NOT_FOUND", "not registered"),
    ("GET", "/v1/ids/-bad", None, 400, "INVALID_ARGUMENT", "biz type"),
    ("GET", f"/v1/ids/{'x' * 65}", None, 400, "INVALID_ARGUMENT", "64"),
    ("GET", f"/v1/ids/{BIZ}?count=0", None, 400, "INVALID_ARGUMENT", "count"),
    ("GET", f"/v1/ids/{BIZ}?count=abc", None, 400, "INVALID_ARGUMENT", "count"),
    ("GET", f"/v1/ids/{BIZ}?count=100001", None, 400, "INVALID_ARGUMENT", "100000"),
    ("GET", f"/v1/ids/{BIZ}?count=1&count=2", None, 400, "INVALID_ARGUMENT", "once"),
    ("GET", f"/v1/ids/{BIZ}?cnt=5", None, 400, "INVALID_ARGUMENT", "cnt"),
    ("GET", f"/v1/ids/{BIZ}?token=secret", None, 400, "INVALID_ARGUMENT", "Authorization: Bearer"),
    ("POST", f"/v1/segments/{BIZ}", b"{not json", 400, "INVALID_ARGUMENT", "JSON"),
    ("POST", f"/v1/segments/{BIZ}", b"[1, 2]", 400, "INVALID_ARGUMENT", "object"),
    ("POST", f"/v1/segments/{BIZ}", b'{"stepz": 2}', 400, "INVALID_ARGUMENT", "stepz"),
    ("POST", f"/v1/segments/{BIZ}", b'{"biz_type": "x"}', 400, "INVALID_ARGUMENT", "path"),
    ("POST", f"/v1/segments/{BIZ}", b'{"steps": 2000}', 400, "INVALID_ARGUMENT", "steps"),
    ("POST", f"/v1/segments/{BIZ}", b'{"steps": "many"}', 400, "INVALID_ARGUMENT", "steps"),
    ("POST", f"/v1/segments/{BIZ}", b'{"floor": -1}', 400, "INVALID_ARGUMENT", "floor"),
    ("POST", f"/v1/segments/{BIZ}", b'{"floor": "99999999999"}', 400, "INVALID_ARGUMENT", "floor"),
    ("POST", f"/v1/segments/{BIZ}", b"\xff\xfe", 400, "INVALID_ARGUMENT", "UTF-8"),
    ("POST", f"/v1/segments/{BIZ}", b" " * (MAX_BODY + 1), 413, "INVALID_ARGUMENT", "larger"),
    ("DELETE", f"/v1/ids/{BIZ}", None, 405, "UNIMPLEMENTED", "GET"),
    ("GET", f"/v1/segments/{BIZ}", None, 405, "UNIMPLEMENTED", "POST"),
    ("GET", "/v2/ids/order", None, 404, "NOT_FOUND", "no such path"),
])
async def test_bad_requests_get_a_json_error_with_the_status_of_its_code(
        http_server, method, path, body, status, code, says):
    got, headers, reply = await call(method, f"{http_server.http_url}{path}", data=body)
    assert (got, reply["error"]["code"]) == (status, code), reply
    assert says in reply["error"]["message"]
    assert set(reply) == {"error"} and set(reply["error"]) == {"code", "message"}
    if status == 405:
        assert headers["Allow"] == ("GET" if method != "GET" else "POST")


async def test_over_quota_is_429_with_retry_after(order_db, start_server):
    server = start_server([order_db], extra_args=[*HTTP, "--quota-calls", "3"], env=cli_env())
    statuses = []
    for _ in range(10):
        status, headers, body = await get(f"{server.http_url}/v1/ids/{BIZ}")
        statuses.append(status)
        if status == 429:
            assert body["error"]["code"] == "RESOURCE_EXHAUSTED"
            assert int(headers["Retry-After"]) >= 1
    assert 200 in statuses and 429 in statuses


# -- tokens and TLS -------------------------------------------------------------------------

async def test_tokens_are_bearer_headers_checked_like_grpc_metadata(order_db, start_server):
    prepare([order_db], "other", step=100)
    token = create_token([order_db], BIZ)
    server = start_server([order_db], extra_args=HTTP, env=cli_env())
    url = f"{server.http_url}/v1/ids/{BIZ}"
    status, _, body = await get(url)
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
    status, _, body = await get(url, headers={"Authorization": f"Bearer {token}x"})
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
    status, _, body = await get(f"{server.http_url}/v1/ids/other",
                                headers={"Authorization": f"Bearer {token}"})
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED")
    status, _, body = await get(url, headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and len(body["ids"]) == 1
    # A token created while the server runs works at once (the tables are read early,
    # in a worker thread, not on the server's event loop).
    later = create_token([order_db], "other")
    status, _, body = await get(f"{server.http_url}/v1/ids/other",
                                headers={"Authorization": f"Bearer {later}"})
    assert status == 200, body
    # Health and the document need no token: probes and tools send none.
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await get(f"{server.http_url}{path}"))[0] == 200
    assert token not in "".join(server.output)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


async def test_tls_serves_https_only_with_the_grpc_certificate(order_db, start_server, certs):
    server = start_server([order_db], extra_args=[
        *HTTP, "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)],
        env=cli_env())
    assert server.http_url.startswith("https://")
    trusting = ssl.create_default_context(cafile=str(certs.ca))
    status, _, body = await get(f"{server.http_url}/v1/ids/{BIZ}", ssl_context=trusting)
    assert status == 200 and body["ids"]
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(f"{server.http_url}/v1/ids/{BIZ}", ssl_context=ssl.create_default_context())
    with pytest.raises(aiohttp.ClientError):  # plaintext to the TLS port
        await get(server.http_url.replace("https://", "http://") + f"/v1/ids/{BIZ}")


async def test_mutual_tls_requires_a_client_certificate(order_db, start_server, certs):
    server = start_server([order_db], extra_args=[
        *HTTP, "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
        "--tls-client-ca", str(certs.ca)], env=cli_env())
    context = ssl.create_default_context(cafile=str(certs.ca))
    with pytest.raises(aiohttp.ClientError):
        await get(f"{server.http_url}/v1/ids/{BIZ}", ssl_context=context)
    context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    status, _, _ = await get(f"{server.http_url}/v1/ids/{BIZ}", ssl_context=context)
    assert status == 200


def test_http_beyond_loopback_needs_tls_or_insecure(order_db, tmp_path):
    server = ServerProcess([order_db], extra_args=["--http-listen", "0.0.0.0:0"],
                           cwd=str(tmp_path), env=cli_env())
    with pytest.raises(RuntimeError, match=r"0\.0\.0\.0:0 \(HTTP\) is reachable beyond this host"):
        server.start()


def test_a_taken_http_port_stops_the_server_with_one_line(order_db, http_server, tmp_path):
    taken = http_server.http_url.rsplit("//", 1)[1]
    server = ServerProcess([order_db], extra_args=["--http-listen", taken], cwd=str(tmp_path),
                           env=cli_env())
    with pytest.raises(RuntimeError, match=f"cannot serve HTTP on {taken}"):
        server.start()


# -- health ---------------------------------------------------------------------------------

async def test_readyz_turns_503_while_the_server_drains_and_ids_are_still_served(order_db, start_server):
    server = start_server([order_db], extra_args=[*HTTP, "--drain", "5"], env=cli_env())
    status, _, body = await get(f"{server.http_url}/readyz")
    assert (status, body) == (200, {"status": "SERVING"})
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: any("draining" in line for line in server.output), 10, "the drain")
    status, _, body = await get(f"{server.http_url}/readyz")
    assert (status, body) == (503, {"status": "NOT_SERVING"})
    status, _, body = await get(f"{server.http_url}/healthz")
    assert (status, body) == (200, {"status": "SERVING"})  # alive: not to be restarted
    status, _, body = await get(f"{server.http_url}/v1/ids/{BIZ}")
    assert status == 200 and body["ids"]


# -- the document ---------------------------------------------------------------------------

async def test_the_served_openapi_document_is_the_one_in_the_repository(http_server):
    root = Path(__file__).resolve().parent.parent
    kept = json.loads((root / "idgen_server" / "openapi.json").read_text())
    status, _, served = await get(f"{http_server.http_url}/openapi.json")
    assert status == 200 and served == kept == json.loads(openapi_document())


def test_the_document_describes_every_route_and_no_other():
    from idgen_server.http_api import HttpApi

    app = HttpApi(None, None, lambda: True).application()  # type: ignore[arg-type]
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()}
    document = json.loads(openapi_document())
    described = {(method.upper(), path) for path, item in document["paths"].items()
                 for method in item}
    assert routes == described


async def test_a_call_waiting_on_the_database_holds_up_no_other(order_db, start_server):
    server = start_server([order_db], extra_args=[*HTTP, "--db-timeout", "5"], env=cli_env())
    url = server.http_url
    assert (await get(f"{url}/v1/ids/{BIZ}"))[0] == 200  # IDs buffered from here on
    lock = sqlite3.connect(order_db.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # every allocation now waits for the database
    try:
        waiting = asyncio.create_task(call("POST", f"{url}/v1/segments/{BIZ}"))
        await asyncio.sleep(0.3)
        assert (await get(f"{url}/healthz"))[0] == 200
        status, _, body = await get(f"{url}/v1/ids/{BIZ}?count=10")
        assert status == 200 and len(body["ids"]) == 10
        assert not waiting.done()  # both were answered while the allocation still waited
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    status, _, segment = await waiting
    assert status == 200 and int(segment["start"]) > 0


def test_malformed_http_gets_400_and_no_traceback_in_the_log(http_server):
    host, port = http_server.http_url.removeprefix("http://").rsplit(":", 1)
    for garbage in (b"GET /v1/ids/order HTTP/1.1\r\nX-Probe: \x00\r\n\r\n", b"\x16\x03\x01garbage\r\n\r\n",
                    b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(garbage)
            assert re.match(rb"HTTP/1\.[01] 4\d\d ", raw.recv(64))
    with RemoteClient(http_server.address) as client:  # the server still serves
        assert client.next_ids(BIZ, 1)
    assert not any("Traceback" in line for line in http_server.output), "".join(http_server.output)


async def test_the_http_address_may_come_from_the_environment(order_db, start_server):
    server = start_server([order_db], env={**cli_env(), "IDGEN_HTTP_LISTEN": "127.0.0.1:0"})
    status, _, body = await get(f"{server.http_url}/v1/ids/{BIZ}?count=2")
    assert status == 200 and len(body["ids"]) == 2


async def test_the_largest_count_is_served_whole(http_server):
    status, _, body = await get(f"{http_server.http_url}/v1/ids/{BIZ}?count=100000")
    ids = [int(i) for i in body["ids"]]
    assert status == 200 and len(set(ids)) == 100_000 and ids == sorted(ids)


async def test_compressed_or_deeply_nested_bodies_get_a_400_and_no_traceback(http_server):
    url = f"{http_server.http_url}/v1/segments/{BIZ}"
    status, _, body = await call("POST", url, data=b"xx", headers={"Content-Encoding": "gzip"})
    assert (status, body["error"]["code"]) == (400, "INVALID_ARGUMENT")
    assert "compressed" in body["error"]["message"]
    status, _, _ = await call("GET", f"{http_server.http_url}/healthz", data=b"xx",
                              headers={"Content-Encoding": "gzip"})
    assert status == 200
    status, _, body = await call("POST", url, data=b"[" * 5000 + b"]" * 5000)
    assert (status, body["error"]["code"]) == (400, "INVALID_ARGUMENT")
    assert not any("Traceback" in line for line in http_server.output), "".join(http_server.output)


async def test_a_caller_has_one_quota_over_grpc_and_http_on_ipv6(order_db, start_server):
    server = start_server([order_db], listen="[::1]:0", env=cli_env(),
                          extra_args=["--http-listen", "[::1]:0", "--quota-calls", "1"])
    with RemoteClient(server.address, retries=0) as client:
        client.next_ids(BIZ, 1)  # the one call of this second
    status, _, body = await get(f"{server.http_url}/v1/ids/{BIZ}")
    assert (status, body["error"]["code"]) == (429, "RESOURCE_EXHAUSTED")


async def test_stopping_answers_a_call_waiting_on_the_database_with_503(order_db, start_server):
    server = start_server([order_db], extra_args=[*HTTP, "--db-timeout", "30"], env=cli_env())
    await get(f"{server.http_url}/v1/ids/{BIZ}")
    lock = sqlite3.connect(order_db.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        waiting = asyncio.create_task(get(f"{server.http_url}/v1/ids/{BIZ}?count=100000"))
        await asyncio.sleep(0.5)
        assert not waiting.done() and server.proc is not None
        server.proc.send_signal(signal.SIGINT)
        status, _, body = await asyncio.wait_for(waiting, 20)
        assert (status, body["error"]["code"]) == (503, "UNAVAILABLE")
        assert await asyncio.to_thread(server.proc.wait, 20) == 0
    finally:
        lock.execute("ROLLBACK")
        lock.close()
