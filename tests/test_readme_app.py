"""The README's FastAPI chat app, run exactly as printed there, against a real server."""
from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from tests.support.chains import assert_chains
from tests.support.stores import prepare
from idgen_client import Stamp

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def readme_app(directory: pathlib.Path) -> ModuleType:
    """The README's ``chat_app.py`` block, written to ``directory`` and imported."""
    blocks = re.findall(r"```python\n(# chat_app\.py\n.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) == 1, "the README has one chat_app.py block"
    path = directory / "chat_app.py"
    path.write_text(blocks[0])
    spec = importlib.util.spec_from_file_location("chat_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chat_app"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["chat_app"]
    return module


@pytest.fixture
def server(sqlite_url, start_server):
    prepare([sqlite_url], "message", step=100)
    return start_server([sqlite_url])


def test_the_readme_app_stamps_each_groups_messages_in_one_chain(server, tmp_path, monkeypatch):
    monkeypatch.setenv("IDGEN_TARGET", server.address)
    app = readme_app(tmp_path).app
    stamps: dict[object, list[Stamp]] = {"g1": [], "g2": []}
    with TestClient(app) as http:
        for n in range(150):
            group = "g1" if n % 3 else "g2"
            reply = http.post(f"/groups/{group}/messages",
                              json={"client_msg_id": f"m{n}", "text": f"hello {n}"})
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert isinstance(body["seq"], str)  # strings: JavaScript loses integers above 2^53
            stamps[group].append(Stamp(int(body["seq"]), int(body["prev_seq"])))
        resent = http.post("/groups/g1/messages", json={"client_msg_id": "m1", "text": "hello 1"})
        nameless = http.post("/groups/g1/messages", json={"client_msg_id": "", "text": "x"})
        assert nameless.status_code == 422  # an empty ID would make every such message one
        saved = app.state.store.groups
    assert_chains(stamps)
    assert Stamp(int(resent.json()["seq"]), int(resent.json()["prev_seq"])) == stamps["g1"][0]
    assert sorted(saved["g1"]) == [s.seq for s in stamps["g1"]]


def test_the_readme_app_starts_a_group_above_what_its_store_holds(server, tmp_path, monkeypatch):
    monkeypatch.setenv("IDGEN_TARGET", server.address)
    app = readme_app(tmp_path).app
    with TestClient(app) as http:
        first = http.post("/groups/g/messages", json={"client_msg_id": "a", "text": "x"}).json()
    # A new process of the app, whose store already holds the group's messages.
    restarted = readme_app(tmp_path).app
    with TestClient(restarted) as http:
        restarted.state.store.groups["g"] = {int(first["seq"]): (0, "x")}
        again = http.post("/groups/g/messages", json={"client_msg_id": "b", "text": "y"}).json()
    # The chain goes on from the stored message: the loader was asked, not just the horizon.
    assert int(again["prev_seq"]) == int(first["seq"]) < int(again["seq"])
