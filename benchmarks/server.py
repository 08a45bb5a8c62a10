"""A benchmark server process: the real ``IdGenServer``, or the same with a do-nothing servicer.

``python -m benchmarks.server --mode idgen|null --db URL`` prints
``ready HOST:PORT`` once it serves and stops when its stdin closes; ``--http`` serves idgen's
HTTP API too (``ready HOST:PORT http HOST:PORT``), and ``--mode http-null`` serves only the
HTTP floor (``serve_http_null``).
``--tls-cert F --tls-key F`` serve TLS; ``--token-biz NAME --token-file F`` first
create a token granting biz type NAME in the database (which then makes every
call need one) and write it to F (mode 0600), so that it never shows in output.

The do-nothing servicer is the floor of Python gRPC on this machine: the same
``IdGenServer`` (same executor, same worker count, same options, same port
handling) given a servicer whose ``NextId`` answers a prebuilt response of the
size idgen's has: ``count`` consecutive IDs from ``--id-base``, which the
scenario sets to an ID idgen's server has just handed out (IDs from 1 would be
shorter varints and make the floor's replies smaller than idgen's). Only the
servicer differs, so the ratio of the two is what idgen's own code costs per call.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from idgen_server.allocator import Allocator
from idgen_server.buffers import BufferPool
from idgen_server.config import ServerConfig
from idgen_server.server import IdGenServer
from idgen_server.store import SegmentStore
from idgen_server.tokens import Grant, hash_token, new_token
from idgen_wire import idgen_pb2, idgen_pb2_grpc


class NullService(idgen_pb2_grpc.IdGeneratorServicer):
    """``NextId`` returns a cached response of ``count`` IDs; no validation, no buffer."""

    def __init__(self, id_base: int) -> None:
        self._replies: dict[int, idgen_pb2.NextIdResponse] = {}
        self._id_base = id_base

    def NextId(self, request: idgen_pb2.NextIdRequest, context: object
               ) -> idgen_pb2.NextIdResponse:
        reply = self._replies.get(request.count)
        if reply is None:
            base = self._id_base
            reply = idgen_pb2.NextIdResponse(ids=range(base, base + request.count))
            self._replies[request.count] = reply
        return reply


def create_token(db_url: str, biz_type: str, path: str) -> None:
    """A token granting ``biz_type`` in the database at ``db_url``, written to ``path``:
    what ``idgen token create --biz NAME`` does, without a process of its own."""
    token, token_id = new_token()
    store = SegmentStore(db_url)
    try:
        store.tokens.add(Grant(token_id=token_id, name=f"bench-{token_id}",
                               secret_hash=hash_token(token), biz_types=frozenset({biz_type})))
    finally:
        store.close()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("idgen", "null", "http-null"), required=True)
    parser.add_argument("--http", action="store_true", help="idgen: serve the HTTP API too")
    parser.add_argument("--db", required=True)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--id-base", type=int, default=1)
    parser.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="... and this key (PEM)")
    parser.add_argument("--token-biz", help="create a token for this biz type before serving")
    parser.add_argument("--token-file", help="where to write that token")
    args = parser.parse_args()
    if (args.token_biz is None) != (args.token_file is None):
        parser.error("--token-biz and --token-file go together")
    if args.token_biz is not None:
        create_token(args.db, args.token_biz, args.token_file)
    if args.mode == "http-null":
        serve_http_null(args.id_base)
        return

    def null(buffers: BufferPool, allocator: Allocator) -> NullService:
        return NullService(args.id_base)

    extra: dict[str, object] = {"workers": args.workers} if args.workers else {}
    if args.tls_cert or args.tls_key:
        extra.update(tls_cert=args.tls_cert, tls_key=args.tls_key)
    # Quotas stay on (their per-call cost is part of every figure) but out of reach: every
    # caller here is one host, and a fast machine would otherwise meet the per-host limit.
    if args.http:
        extra["http_listen"] = "127.0.0.1:0"
    config = ServerConfig(db_urls=(args.db,), listen="127.0.0.1:0", grace=1.0,
                          quota_calls=1e9, quota_ids=1e12, **extra)
    with IdGenServer(config, servicer=null if args.mode == "null" else None) as server:
        http = f" http {server.http_address}" if server.http_address else ""
        print(f"ready {server.address}{http}", flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)
        stats = {biz: {"fetches": b.fetches, "waits": b.waits} for biz, b in server.buffers}
        print("stats " + json.dumps(stats), flush=True)


def serve_http_null(id_base: int) -> None:
    """The HTTP floor: the same ``HttpServer`` (same loop, thread and aiohttp settings) and a
    handler that answers ``GET /v1/ids/{biz_type}?count=N`` with a prebuilt body of the size
    idgen's has (``count`` IDs from ``id_base``, as strings), with no validation and no buffer."""
    from aiohttp import web

    from idgen_server.http_server import HttpServer

    bodies: dict[str, str] = {}

    async def ids(request: web.Request) -> web.Response:
        count = request.query.get("count", "1")
        body = bodies.get(count)
        if body is None:
            body = bodies[count] = json.dumps(
                {"ids": [str(i) for i in range(id_base, id_base + int(count))]},
                separators=(",", ":"))
        return web.Response(text=body, content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/v1/ids/{biz_type}", ids, allow_head=False)
    with HttpServer(app, "127.0.0.1:0", grace=1.0) as server:
        print(f"ready {server.address} http {server.address}", flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
