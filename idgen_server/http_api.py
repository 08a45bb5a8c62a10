"""The HTTP/JSON API: the gRPC API's IDs for curl and any language's HTTP client.

    GET  /v1/ids/{biz_type}?count=N   {"ids": ["...", ...]}                      NextId
    POST /v1/segments/{biz_type}      {"biz_type", "start", "end", "delta", "remainder"}
                                      (body: NextSegment's fields, as JSON)      NextSegment
    GET  /healthz                     200 while the process runs
    GET  /readyz                      200 while it can serve IDs, else 503        (health)
    GET  /openapi.json                the OpenAPI document (``openapi.json`` beside this module)

Like the servicer it is a thin translation over the same objects: the same buffers hand out
the IDs, so no ID goes out twice whichever API it went through; every call passes the same
``Gate`` (its token as ``Authorization: Bearer``, its grant, its quota) before its request is
read. Errors are ``{"error": {"code": <the gRPC code's name>, "message": ...}}`` with that
code's HTTP status (``idgen_wire.status.HTTP_STATUS``), and a quota refusal says when to
retry (``Retry-After``).

IDs are JSON strings: JavaScript's numbers are doubles and lose integers above 2^53, and
the proto's JSON mapping writes int64 as strings for the same reason. Responses carrying IDs
are ``Cache-Control: no-store``: a cache that replayed one would hand its IDs out twice.

It never blocks its event loop: the steady state (IDs buffered, the token cached) is served
on the loop, and whatever may wait on a database (a fetch when both segments are used up, an
allocation, a token read early, a biz type not served yet) runs in a worker thread.
"""
from __future__ import annotations

import asyncio
import functools
import importlib.resources
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from idgen_core.errors import BizTypeMoving, IdGenError, InvalidRequest, QuotaExceeded
from idgen_core.segment import (
    MAX_COUNT,
    MAX_STEP_MULTIPLIER,
    validate_biz_type,
    validate_count,
    validate_floor,
)
from idgen_server.auth import TokenNotCached
from idgen_server.gate import Gate
from idgen_server.service import IdGenService
from idgen_server.tokens import Grant
from idgen_wire import idgen_pb2
from idgen_wire.auth import HEADER
from idgen_wire.status import MOVING_RETRY, code_for, http_status_for

__all__ = ["MAX_BODY", "HttpApi", "openapi_document"]

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
"""The largest request body read (bytes); a ``NextSegment`` request takes under 100."""

_T = TypeVar("_T")
_COUNT = re.compile(r"[0-9]{1,9}")
_NO_STORE = {"Cache-Control": "no-store"}
# The router's own refusals, as the gRPC codes a caller would get for them.
_ROUTER_CODES = {404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "INVALID_ARGUMENT"}


def openapi_document() -> bytes:
    """The OpenAPI document of this API, as served at ``/openapi.json``."""
    return importlib.resources.files("idgen_server").joinpath("openapi.json").read_bytes()


class HttpApi:
    """The HTTP routes over the gRPC servicer's objects. ``ready()`` says whether the server
    can serve IDs (the health service's SERVING); blocking work runs on the loop's default
    executor (``HttpServer`` gives it a pool of its own)."""

    def __init__(self, service: IdGenService, gate: Gate, ready: Callable[[], bool]) -> None:
        self._service = service
        self._gate = gate
        self._ready = ready
        self._openapi = openapi_document()

    def application(self) -> web.Application:
        """The aiohttp application serving the routes."""
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_BODY)
        app.router.add_get("/v1/ids/{biz_type}", self.ids, allow_head=False)
        app.router.add_post("/v1/segments/{biz_type}", self.segments)
        app.router.add_get("/healthz", self.healthz, allow_head=False)
        app.router.add_get("/readyz", self.readyz, allow_head=False)
        app.router.add_get("/openapi.json", self.openapi, allow_head=False)
        return app

    # -- routes ---------------------------------------------------------------------------

    async def ids(self, request: web.Request) -> web.Response:
        grant = await self._identify(request)
        biz_type = validate_biz_type(request.match_info["biz_type"])
        count = _count(request)
        self._gate.admit(grant, functools.partial(_peer, request), biz_type, count)
        buffers = self._service.buffers
        ids = buffers.next_ids_nowait(biz_type, count)
        if len(ids) < count:  # both segments used up, or a biz type not served yet
            ids += await self._blocking(buffers.next_ids, biz_type, count - len(ids))
        body = _ids_template(count) % tuple(ids)
        return web.Response(text=body, content_type="application/json", headers=_NO_STORE)

    async def segments(self, request: web.Request) -> web.Response:
        grant = await self._identify(request)
        biz_type = validate_biz_type(request.match_info["biz_type"])
        self._gate.admit(grant, functools.partial(_peer, request), biz_type, 0)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise InvalidRequest(f"the request body must not be compressed (Content-Encoding: "
                                 f"{encoding[:32]!r}): a NextSegment request takes under 100 bytes")
        message = _segment_request(await request.read())
        segment = await self._blocking(self._service.next_segment, biz_type, message.floor,
                                       message.steps, message.above_all)
        return web.json_response(
            {"biz_type": biz_type, "start": str(segment.start), "end": str(segment.end),
             "delta": str(segment.delta), "remainder": str(segment.remainder)},
            headers=_NO_STORE)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "SERVING"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self._ready()
        return web.json_response({"status": "SERVING" if ready else "NOT_SERVING"},
                                 status=200 if ready else 503)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    # -- what every route shares ------------------------------------------------------------

    async def _identify(self, request: web.Request) -> Grant | None:
        """The caller's grant, from ``Authorization``, before anything of its request is read."""
        metadata = [(HEADER, value) for value in request.headers.getall("Authorization", ())]
        peer = functools.partial(_peer, request)
        try:
            return self._gate.identify(metadata, peer, read_early=False)
        except TokenNotCached:  # perhaps created a moment ago: reading the tables may block
            return await self._blocking(self._gate.identify, metadata, peer)

    def _blocking(self, function: Callable[..., _T], *args: object) -> Awaitable[_T]:
        return asyncio.get_running_loop().run_in_executor(None, functools.partial(function, *args))

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        """Every failure as a JSON error with the HTTP status of its gRPC code."""
        try:
            return await handler(request)
        except IdGenError as exc:
            code = code_for(exc)
            message = self._service.public_message(exc, request.match_info.get("biz_type", ""))
            headers = dict(_NO_STORE)
            if isinstance(exc, QuotaExceeded):
                headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
            elif isinstance(exc, BizTypeMoving):  # a pause: ask again shortly
                headers["Retry-After"] = str(max(1, math.ceil(MOVING_RETRY)))
            return _error(http_status_for(code), code.name, message, headers)
        except RequestPayloadError:  # a body cut short, or a chunked encoding gone wrong
            return _error(400, "INVALID_ARGUMENT", "the request body could not be read whole")
        except web.HTTPException as exc:  # the router's: no such path or method, a body too big
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
            return _error(exc.status, _ROUTER_CODES.get(exc.status, "INVALID_ARGUMENT"),
                          _router_message(exc, request), headers)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return _error(500, "INTERNAL", "internal error in the ID server; its log has the details")


def _ids_template(count: int) -> str:
    """``{"ids":["%d",...]}`` for ``count`` IDs. Formatting the IDs into it takes half the
    time of joining their ``str()`` (51 against 94 µs for 1,000 on the benchmark machine),
    the most of what a ``count=1000`` request costs; the IDs are only digits, nothing to
    escape. The templates of small counts are kept (at most 64 of up to 1,024 IDs: 0.3 MB)."""
    return _small_template(count) if count <= 1024 else _template(count)


def _template(count: int) -> str:
    return '{"ids":["' + '","'.join(["%d"] * count) + '"]}'


_small_template = functools.lru_cache(maxsize=64)(_template)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None
           ) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


def _router_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return (f"no such path: {request.path!r}; the API is GET /v1/ids/{{biz_type}}, "
                "POST /v1/segments/{biz_type}, GET /healthz, GET /readyz, GET /openapi.json")
    if exc.status == 405:
        return f"{request.method} is not served at {request.path!r}: use {exc.headers.get('Allow', '')}"
    if exc.status == 413:
        return f"the request body is larger than {MAX_BODY} bytes"
    return exc.reason


def _count(request: web.Request) -> int:
    """``count`` from the query (1 if absent); ``InvalidRequest`` for anything else there."""
    query = request.query
    unknown = sorted(set(query) - {"count"})
    if "token" in unknown:  # as Tinyid takes it
        raise InvalidRequest("send the token as an `Authorization: Bearer <token>` header, not in "
                             "the query (a query string ends up in access logs)")
    if unknown:
        raise InvalidRequest(f"unknown query parameter {unknown[0][:64]!r}: the only one is count")
    values = query.getall("count", ["1"])
    if len(values) > 1:
        raise InvalidRequest("give count once")
    if not _COUNT.fullmatch(values[0]):
        raise InvalidRequest(f"count must be a whole number in 1..{MAX_COUNT}, got {values[0][:20]!r}")
    return validate_count(int(values[0]))


_SEGMENT_FIELDS = ("floor", "steps", "above_all")
_INT64_TEXT = re.compile(r"[0-9]{1,19}")


def _segment_request(body: bytes) -> idgen_pb2.NextSegmentRequest:
    """The body's ``NextSegmentRequest`` fields, each optional: ``floor`` an int64 as a number
    or a decimal string (as in the proto's JSON mapping), ``steps`` a number, ``above_all``
    true or false. An empty body asks for the defaults. ``InvalidRequest`` names what is
    wrong, and anything the OpenAPI document does not allow is wrong (a null too)."""
    if not body.strip():
        return idgen_pb2.NextSegmentRequest()
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"the request body is not UTF-8 JSON ({exc})") from None
    except RecursionError:  # thousands of nested brackets
        raise InvalidRequest("the request body is nested too deeply to be a NextSegment request") from None
    if not isinstance(data, dict):
        raise InvalidRequest('the request body must be a JSON object: {"floor": "...", '
                             '"steps": N, "above_all": true|false}, each optional')
    unknown = sorted(set(data) - set(_SEGMENT_FIELDS))
    if unknown:
        where = " (the biz type goes in the path)" if unknown[0] in ("biz_type", "bizType") else ""
        raise InvalidRequest(f"unknown field {unknown[0][:64]!r} in the request body{where}: "
                             "the fields are floor, steps and above_all")
    floor, steps, above_all = data.get("floor", 0), data.get("steps", 0), data.get("above_all", False)
    if isinstance(floor, str) and _INT64_TEXT.fullmatch(floor):
        floor = int(floor)
    if isinstance(floor, bool) or not isinstance(floor, int):
        raise InvalidRequest(f"floor must be a whole number in 0..2^63-1, as a number or a string "
                             f"of digits, not {json.dumps(floor)[:40]}")
    validate_floor(floor)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEP_MULTIPLIER:
        raise InvalidRequest(f"steps must be a whole number in 0..{MAX_STEP_MULTIPLIER} (0: 1), "
                             f"not {json.dumps(steps)[:40]}")
    if not isinstance(above_all, bool):
        raise InvalidRequest(f"above_all must be true or false, not {json.dumps(above_all)[:40]}")
    return idgen_pb2.NextSegmentRequest(floor=floor, steps=steps, above_all=above_all)


def _peer(request: web.Request) -> str:
    """The caller exactly as gRPC names it (``ipv4:10.0.0.7:51234``, ``ipv6:%5B::1%5D:51234``),
    so that a caller's quota is one bucket over both APIs."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if not peername:
        return f"ipv4:{request.remote or 'unknown'}:0"
    host, port = peername[0], peername[1]
    if host.lower().startswith("::ffff:") and "." in host:  # IPv4 on a dual-stack socket
        host = host[7:]
    return f"ipv6:%5B{host}%5D:{port}" if ":" in host else f"ipv4:{host}:{port}"
