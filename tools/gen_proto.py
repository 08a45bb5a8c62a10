"""Regenerate the generated modules of idgen_wire from proto/idgen/v1/idgen.proto.

Run after editing the .proto: ``python tools/gen_proto.py``. The generated code
is committed; tests/test_proto.py fails when it drifts from the .proto.
"""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = "proto/idgen/v1/idgen.proto"
# Map the .proto's directory onto the package, so that the generated modules
# import each other as `idgen_wire.idgen_pb2`.
INCLUDE = "-Iidgen_wire=proto/idgen/v1"


def protoc_args(*outputs: str) -> list[str]:
    return ["grpc_tools.protoc", INCLUDE, *outputs, PROTO]


def main() -> int:
    from grpc_tools import protoc

    out = ["--python_out=.", "--grpc_python_out=.", "--pyi_out=."]
    import os

    os.chdir(ROOT)
    return protoc.main(protoc_args(*out))


if __name__ == "__main__":
    sys.exit(main())
