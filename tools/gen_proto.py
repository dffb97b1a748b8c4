"""Generates the protobuf/gRPC Python code into serving/grpc/_gen (never committed).

The one definition of the generation step: `make setup` (Makefile) and the image build
(k8s/Dockerfile) both run `python tools/gen_proto.py`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
PROTOS = ("driftgate/v1/gateway.proto",)
GEN = ROOT / "serving" / "grpc" / "_gen"
IMPORT_FROM = "from driftgate.v1 import"
IMPORT_TO = "from serving.grpc._gen.driftgate.v1 import"


def generate() -> None:
    from grpc_tools import protoc

    shutil.rmtree(GEN, ignore_errors=True)
    GEN.mkdir(parents=True)
    for proto in PROTOS:
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={GEN}",
            f"--grpc_python_out={GEN}",
            f"--pyi_out={GEN}",
        ]
        if protoc.main([*args, str(PROTO_DIR / proto)]) != 0:
            raise SystemExit(f"protoc failed on {proto}")
    for stub in GEN.rglob("*_pb2_grpc.py"):  # generated imports are absolute from the proto root
        stub.write_text(stub.read_text().replace(IMPORT_FROM, IMPORT_TO))
    for package in {GEN, *(p.parent for p in GEN.rglob("*.py"))}:
        while package != GEN.parent:
            (package / "__init__.py").touch()
            package = package.parent


if __name__ == "__main__":
    generate()
    sys.exit(0)
