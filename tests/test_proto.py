"""The committed generated code says exactly what idgen_wire/idgen.proto says."""
from __future__ import annotations

import pytest

import pathlib
import subprocess
import sys

from google.protobuf import descriptor_pb2

from idgen_wire import idgen_pb2

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_code_matches_the_proto(tmp_path):
    out = tmp_path / "idgen.desc"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.",
         f"--descriptor_set_out={out}", "idgen_wire/idgen.proto"],
        cwd=ROOT, check=True)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for message in fresh.message_type:  # generated code leaves out the derived json names
        for field in message.field:
            field.ClearField("json_name")
    committed = descriptor_pb2.FileDescriptorProto.FromString(idgen_pb2.DESCRIPTOR.serialized_pb)
    assert committed == fresh, "run `python tools/gen_proto.py` and commit the result"


@pytest.mark.parametrize(("service", "servicer"), [
    ("IdGenerator", "idgen_server.service:IdGenService"),
    ("Admin", "idgen_server.admin:AdminService"),
])
def test_the_server_implements_every_rpc_of_the_proto(service, servicer):
    """Every RPC the proto declares has a method of idgen's own, not the generated base's
    (which answers UNIMPLEMENTED): an RPC added to the proto and forgotten fails here."""
    import importlib

    from idgen_wire import idgen_pb2_grpc

    module, _, name = servicer.partition(":")
    ours = getattr(importlib.import_module(module), name)
    generated = getattr(idgen_pb2_grpc, f"{service}Servicer")
    methods = [m.name for m in idgen_pb2.DESCRIPTOR.services_by_name[service].methods]
    assert methods
    missing = [m for m in methods if getattr(ours, m, None) is getattr(generated, m, None)]
    assert missing == [], f"{name} leaves {missing} to the generated base (UNIMPLEMENTED)"


def test_public_names_are_the_documented_ones():
    service = idgen_pb2.DESCRIPTOR.services_by_name["IdGenerator"]
    assert idgen_pb2.DESCRIPTOR.package == "idgen.v1"
    assert {m.name for m in service.methods} >= {"NextId", "NextSegment"}
    request = idgen_pb2.NextIdRequest.DESCRIPTOR.fields_by_name
    assert request["biz_type"].type == request["biz_type"].TYPE_STRING
    assert request["count"].type == request["count"].TYPE_UINT32
    ids = idgen_pb2.NextIdResponse.DESCRIPTOR.fields_by_name["ids"]
    assert ids.type == ids.TYPE_INT64 and ids.is_repeated
