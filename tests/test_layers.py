"""The layers, as the imports show them: each package imports only from below it.

    idgen_cli  ->  idgen_client, idgen_server  ->  idgen_wire  ->  idgen_core

The core is plain Python (no gRPC, no SQLAlchemy); the wire contract adds gRPC
and protobuf; the client and the server never import each other; only the
command line assembles both.
"""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("idgen_core", "idgen_wire", "idgen_client", "idgen_server", "idgen_cli")
ALLOWED = {
    "idgen_core": set(),
    "idgen_wire": {"idgen_core", "grpc", "grpc_status", "google"},
    "idgen_client": {"idgen_core", "idgen_wire", "grpc", "grpc_health", "google"},
    "idgen_server": {"idgen_core", "idgen_wire", "grpc", "grpc_status", "grpc_health",
                     "grpc_reflection", "google", "sqlalchemy", "prometheus_client", "platformdirs",
                     "cryptography", "aiohttp"},
    "idgen_cli": {"idgen_core", "idgen_wire", "idgen_client", "idgen_server", "google",
                  "pythonjsonlogger"},
}
"""What each package may import besides itself and the standard library."""


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    if "importlib" in names:  # import_module("idgen_x.y") names a module too
        text = path.read_text()
        names.update(p for p in PACKAGES if f'"{p}.' in text)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_lies_below_it(package):
    stdlib = sys.stdlib_module_names
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        outside = {n for n in _imports(path) - {package} - stdlib - {"__future__"}
                   if n not in ALLOWED[package]}
        if outside:
            wrong[str(path.relative_to(ROOT))] = sorted(outside)
    assert not wrong, f"imports across the layers: {wrong}"


# A process in which the packages below cannot be imported, as on a machine without them.
_BLOCK = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Blocker())
"""


def _run_without(blocked: set[str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCK.format(blocked=blocked) + code],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_core_and_the_receiver_run_without_grpc_or_sqlalchemy():
    done = _run_without({"grpc", "google", "sqlalchemy"}, """
import idgen_core.buffer, idgen_core.errors, idgen_core.retry, idgen_core.segment, idgen_core.sizing
from idgen_client import Gap, Receiver, Sequencer, Stamp, UnknownBizType
receiver = Receiver()
receiver.add("g", Stamp(5, 0), "hello")
print([message for _, message in receiver.ready("g")])
try:
    from idgen_client import RemoteClient
except ImportError as exc:
    print("RemoteClient needs", exc.name)
""")
    assert done.returncode == 0, done.stderr
    assert "hello" in done.stdout and "RemoteClient needs grpc" in done.stdout


def test_the_client_library_needs_no_server_package():
    done = _run_without({"sqlalchemy", "pymysql", "prometheus_client", "platformdirs"}, """
from idgen_client import LocalGenerator, RemoteClient, Sequencer
import idgen_client.local, idgen_client.remote
print("client ok")
""")
    assert done.returncode == 0, done.stderr
    assert "client ok" in done.stdout


def test_without_the_server_packages_the_command_line_says_what_to_install():
    done = _run_without({"sqlalchemy"}, """
import sys
from idgen_cli.main import main
sys.exit(main(["serve", "--listen", "127.0.0.1:0"]))
""")
    assert done.returncode == 2
    assert "pip install 'idgen[server]'" in done.stderr and "sqlalchemy" in done.stderr
    assert "Traceback" not in done.stderr
