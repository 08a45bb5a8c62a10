"""Regenerate the generated modules of idgen_wire from idgen_wire/idgen.proto.

Run after editing the .proto: ``python tools/gen_proto.py``. The generated code
is committed; tests/test_proto.py fails when it drifts from the .proto.
"""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The .proto lives in the package (it ships with it: `idgen proto` prints it), so
# the generated modules import each other as `idgen_wire.idgen_pb2`.
PROTO = "idgen_wire/idgen.proto"
INCLUDE = "-I."


def protoc_args(*outputs: str) -> list[str]:
    from importlib import resources

    # The well-known types (google/protobuf/timestamp.proto) ship with grpc_tools.
    well_known = f"-I{resources.files('grpc_tools') / '_proto'}"
    return ["grpc_tools.protoc", INCLUDE, well_known, *outputs, PROTO]


def main() -> int:
    from grpc_tools import protoc

    out = ["--python_out=.", "--grpc_python_out=.", "--pyi_out=."]
    import os

    os.chdir(ROOT)
    return protoc.main(protoc_args(*out))


if __name__ == "__main__":
    sys.exit(main())
