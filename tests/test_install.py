"""``pip install idgen`` as a user runs it: a fresh virtualenv, the built wheel, no extras.

It gets the client library (gRPC and protobuf, nothing of the server's), talks to
a running server, and its ``idgen`` command says what to install for the rest; a
wheel installed without any dependency still gives ``Receiver``.
"""
from __future__ import annotations

import importlib.metadata
import pathlib
import subprocess
import sys
import venv

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

CLIENT_SCRIPT = """
import importlib.util, sys
for name in ("sqlalchemy", "pymysql", "prometheus_client", "platformdirs"):
    assert importlib.util.find_spec(name) is None, name + " came with the client-only install"
from idgen_client import LocalGenerator, RemoteClient, Sequencer
address = sys.argv[1]
with RemoteClient(address) as client:
    ids = client.next_ids("default", 3)
with LocalGenerator("default", address) as generator:
    more = [generator.next_id() for _ in range(3)]
    stamps = Sequencer(generator)
    first, second = stamps.stamp("g"), stamps.stamp("g")
assert ids == sorted(set(ids)) and more == sorted(set(more)) and second.prev_seq == first.seq
print("client-only ok", ids[0] > 0)
"""


def _run(*args: str | pathlib.Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, ROOT)
    assert built.returncode == 0, built.stderr
    [path] = out.glob("idgen-*.whl")
    return path


def _venv(where: pathlib.Path) -> pathlib.Path:
    venv.EnvBuilder(with_pip=True).create(where)
    return where / "bin" / "python"


def test_a_client_only_install_serves_ids_from_a_running_server(wheel, tmp_path, start_server):
    python = _venv(tmp_path / "client")
    installed = _run(python, "-m", "pip", "install", "-q", wheel)
    assert installed.returncode == 0, installed.stderr
    server = start_server([])  # the embedded database, with its biz type "default"
    used = _run(python, "-c", CLIENT_SCRIPT, server.address, timeout=120)
    assert used.returncode == 0, used.stderr
    assert "client-only ok True" in used.stdout
    idgen = tmp_path / "client" / "bin" / "idgen"
    nxt = _run(idgen, "next", "default", "--count", "2", "--target", server.address, timeout=60)
    assert nxt.returncode == 0, nxt.stderr
    assert len(nxt.stdout.split()) == 2
    serve = _run(idgen, "serve", timeout=60)
    assert serve.returncode == 2 and "pip install 'idgen[server]'" in serve.stderr, serve.stderr
    # The client commands an operator uses, from the wheel alone: the contract it ships, the
    # health check, the version.
    proto = _run(idgen, "proto", timeout=60)
    assert proto.returncode == 0, proto.stderr
    assert (ROOT / "idgen_wire" / "idgen.proto").read_text() == proto.stdout
    health = _run(idgen, "health", "--target", server.address, timeout=60)
    assert (health.returncode, health.stdout) == (0, f"{server.address}: SERVING\n"), health.stderr
    version = _run(idgen, "--version", timeout=60)
    assert version.stdout.strip() == f"idgen {importlib.metadata.version('idgen')}", version.stderr


def test_the_receiver_needs_no_dependency_at_all(wheel, tmp_path):
    python = _venv(tmp_path / "bare")
    installed = _run(python, "-m", "pip", "install", "-q", "--no-deps", wheel)
    assert installed.returncode == 0, installed.stderr
    used = _run(python, "-c", (
        "import importlib.util\n"
        "assert importlib.util.find_spec('grpc') is None\n"
        "from idgen_client import Receiver, Stamp\n"
        "r = Receiver(); r.add('g', Stamp(7, 0), 'hi'); print(r.ready('g'))\n"), timeout=60)
    assert used.returncode == 0, used.stderr
    assert "'hi'" in used.stdout
