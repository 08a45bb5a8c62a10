"""A benchmark server process: the real ``IdGenServer``, or the same with a do-nothing servicer.

``python -m benchmarks.server --mode idgen|null --db URL`` prints
``ready HOST:PORT`` once it serves and stops when its stdin closes.

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
import sys

from idgen_server.allocator import Allocator
from idgen_server.buffers import BufferPool
from idgen_server.config import ServerConfig
from idgen_server.server import IdGenServer
from idgen_server.service import IdGenService
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("idgen", "null"), required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--id-base", type=int, default=1)
    args = parser.parse_args()

    def null(buffers: BufferPool, allocator: Allocator) -> NullService:
        return NullService(args.id_base)

    extra = {"workers": args.workers} if args.workers else {}
    config = ServerConfig(db_urls=(args.db,), listen="127.0.0.1:0", grace=1.0, **extra)
    with IdGenServer(config, servicer=null if args.mode == "null" else IdGenService) as server:
        print(f"ready {server.address}", flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)
        stats = {biz: {"fetches": b.fetches, "waits": b.waits} for biz, b in server.buffers}
        print("stats " + json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
