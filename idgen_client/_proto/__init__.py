"""Code generated from proto/idgen/v1/idgen.proto by tools/gen_proto.py. Do not edit."""
