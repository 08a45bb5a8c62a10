"""TLS end to end: real ``idgen serve`` processes serving TLS and mutual TLS, and every client
idgen has (``RemoteClient``, ``LocalGenerator``, a ``Sequencer`` over one, ``idgen next``).

What ``tests/test_tls.py`` checks on a trivial gRPC server (each file problem, each handshake
failure's explanation), this checks once more where a user meets it: the settings from flags,
environment and config file, the refusals that must come at once rather than after the client's
retry budget, and ``idgen serve`` refusing to start (never falling back to plaintext).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from idgen_client import LocalGenerator, RemoteClient, Sequencer, ServiceUnavailable, Unauthenticated
from tests.support.certs import OTHER_NAME, CertFiles, make_certs
from tests.support.cli import add_biz, idgen, init_db
from tests.support.servers import ServerProcess

BIZ = "orders"

QUICK = 2.0
"""Seconds within which a refusal no retry can fix must be raised."""

PATIENT = {"retries": 20, "backoff": 1.0, "max_backoff": 1.0}
"""A client that, were it to retry, would wait 20 draws of up to a second each (about 10 s):
a refusal raised within ``QUICK`` with it was not retried."""

CLIENT_ENV = ("IDGEN_TOKEN", "IDGEN_TLS_CA", "IDGEN_TLS_CERT", "IDGEN_TLS_KEY", "IDGEN_TARGET",
              "IDGEN_SERVER_TLS_CERT", "IDGEN_SERVER_TLS_KEY", "IDGEN_SERVER_TLS_CLIENT_CA", "IDGEN_CONFIG")


def _env(**settings: str) -> dict[str, str]:
    """This process's environment without any idgen TLS or token setting, plus ``settings``."""
    return {**{k: v for k, v in os.environ.items() if k not in CLIENT_ENV}, **settings}


def _database(directory: Path) -> str:
    """A fresh SQLite database in ``directory`` with the biz type ``BIZ``."""
    url = f"sqlite:///{directory}/idgen.db"
    init_db(url)
    add_biz(BIZ, url)
    return url


@contextmanager
def _serving(directory: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """``idgen serve ARGS`` on a fresh database, for a whole module."""
    server = ServerProcess([_database(directory)], extra_args=args, cwd=str(directory), env=_env(**(env or {})))
    try:
        yield server.start()
    finally:
        server.stop()


def _client(address: str, **options: object) -> RemoteClient:
    """A ``RemoteClient`` that reads nothing from this process's environment."""
    options.setdefault("env", {})
    return RemoteClient(address, **options)  # type: ignore[arg-type]


def _refused_quickly(address: str, **options: object) -> str:
    """The message of the ``ServiceUnavailable`` a patient client's call must raise at once."""
    with _client(address, **PATIENT, **options) as client:
        began = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            client.next_ids(BIZ, 1)
        took = time.monotonic() - began
    message = str(raised.value)
    assert "no ID server answered" not in message, f"retried instead of explaining: {message}"
    assert took < QUICK, f"refused after {took:.1f}s, not at once: {message}"
    return message


def _is_ids(ids: list[int], count: int) -> bool:
    """Whether ``ids`` are ``count`` positive IDs, increasing."""
    return len(ids) == count and ids[0] > 0 and all(later > earlier for earlier, later in zip(ids, ids[1:]))


# --- servers, shared by the module's tests (none changes them) ------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(certs: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with _serving(tmp_path_factory.mktemp("tls"), "--tls-cert", str(certs.server_cert),
                  "--tls-key", str(certs.server_key)) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(certs: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with _serving(tmp_path_factory.mktemp("mtls"), "--tls-cert", str(certs.server_cert),
                  "--tls-key", str(certs.server_key), "--tls-client-ca", str(certs.ca)) as server:
        yield server


@pytest.fixture(scope="module")
def plaintext_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with _serving(tmp_path_factory.mktemp("plaintext")) as server:
        yield server


@pytest.fixture(scope="module")
def wrong_host_server(certs: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A TLS server whose certificate is valid for ``OTHER_NAME`` only."""
    with _serving(tmp_path_factory.mktemp("wrong-host"), "--tls-cert", str(certs.wrong_host_cert),
                  "--tls-key", str(certs.wrong_host_key)) as server:
        yield server


@pytest.fixture(scope="module")
def token_server(certs: CertFiles, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[ServerProcess, str]]:
    """A TLS server whose database holds a token for ``BIZ``: the server, and the token."""
    directory = tmp_path_factory.mktemp("tokens")
    url = _database(directory)
    created = idgen("token", "create", "--biz", BIZ, "--db", url, env=_env())
    assert created.returncode == 0, created.stderr
    server = ServerProcess([url], extra_args=["--tls-cert", str(certs.server_cert), "--tls-key",
                                              str(certs.server_key)], cwd=str(directory), env=_env())
    try:
        yield server.start(), created.stdout.strip()
    finally:
        server.stop()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return _database(tmp_path)


@pytest.fixture
def serve_tls(db: str, start_server: Callable[..., ServerProcess], tmp_path: Path
              ) -> Callable[..., ServerProcess]:
    """Starts ``idgen serve`` on this test's database with extra arguments and environment."""
    def serve(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        return start_server([db], extra_args=list(args), env=_env(**(env or {})))
    return serve


def _next(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[str], list[str]]:
    """``idgen next BIZ ARGS``: its exit status, stdout lines and stderr lines."""
    result = idgen("next", BIZ, *args, env=env if env is not None else _env())
    return result.returncode, result.stdout.splitlines(), result.stderr.splitlines()


# --- 1. TLS: every client, and the settings from flags, environment and config file ------------

def test_the_server_announces_that_it_serves_tls(tls_server):
    ready = next(line for line in tls_server.output if "idgen: serving on" in line)
    assert "(TLS," in ready


def test_a_remote_client_trusting_the_ca_gets_ids_from_a_tls_server(tls_server, certs):
    with _client(tls_server.address, ca_file=str(certs.ca)) as client:
        assert _is_ids(client.next_ids(BIZ, 5), 5)


def test_a_local_generator_trusting_the_ca_gets_increasing_ids_from_a_tls_server(tls_server, certs):
    with LocalGenerator(BIZ, tls_server.address, ca_file=str(certs.ca)) as generator:
        ids = [generator.next_id() for _ in range(100)]
        assert generator.fetches >= 1
    assert _is_ids(ids, 100)


def test_a_sequencer_over_a_tls_local_generator_stamps_messages(tls_server, certs):
    with LocalGenerator(BIZ, tls_server.address, ca_file=str(certs.ca)) as generator:
        sequencer = Sequencer(generator)
        seqs = [sequencer.stamp("group-1").seq for _ in range(3)]
        other = sequencer.stamp("group-2").seq
    assert seqs == sorted(set(seqs)) and seqs[0] > 0 and other > 0


def test_idgen_next_with_a_ca_file_prints_ids_from_a_tls_server(tls_server, certs):
    status, out, err = _next("--count", "3", "--target", tls_server.address, "--ca-file", str(certs.ca))
    assert status == 0, err
    assert _is_ids([int(line) for line in out], 3)


def test_tls_files_from_the_config_file_serve_tls(serve_tls, certs, tmp_path):
    config = tmp_path / "idgen.toml"
    config.write_text(f"tls_cert = {json.dumps(str(certs.server_cert))}\n"
                      f"tls_key = {json.dumps(str(certs.server_key))}\n")
    server = serve_tls("--config", str(config))
    with _client(server.address, ca_file=str(certs.ca)) as client:
        assert _is_ids(client.next_ids(BIZ, 2), 2)


def test_tls_files_from_the_environment_serve_tls(serve_tls, certs):
    server = serve_tls(env={"IDGEN_SERVER_TLS_CERT": str(certs.server_cert),
                            "IDGEN_SERVER_TLS_KEY": str(certs.server_key)})
    with _client(server.address, ca_file=str(certs.ca)) as client:
        assert _is_ids(client.next_ids(BIZ, 2), 2)


def test_tls_flags_win_over_the_environment(serve_tls, certs, tmp_path):
    nowhere = str(tmp_path / "nowhere.pem")
    server = serve_tls("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
                       env={"IDGEN_SERVER_TLS_CERT": nowhere, "IDGEN_SERVER_TLS_KEY": nowhere})
    with _client(server.address, ca_file=str(certs.ca)) as client:
        assert _is_ids(client.next_ids(BIZ, 2), 2)


def test_the_tls_environment_wins_over_the_config_file(serve_tls, certs, tmp_path):
    nowhere = json.dumps(str(tmp_path / "nowhere.pem"))
    config = tmp_path / "idgen.toml"
    config.write_text(f"tls_cert = {nowhere}\ntls_key = {nowhere}\n")
    server = serve_tls("--config", str(config), env={"IDGEN_SERVER_TLS_CERT": str(certs.server_cert),
                                                     "IDGEN_SERVER_TLS_KEY": str(certs.server_key)})
    with _client(server.address, ca_file=str(certs.ca)) as client:
        assert _is_ids(client.next_ids(BIZ, 2), 2)


# --- 2. mutual TLS -----------------------------------------------------------------------------

def test_a_client_with_a_certificate_signed_by_the_client_ca_gets_ids_under_mutual_tls(mtls_server, certs):
    with _client(mtls_server.address, ca_file=str(certs.ca), cert_file=str(certs.client_cert),
                 key_file=str(certs.client_key)) as client:
        assert _is_ids(client.next_ids(BIZ, 3), 3)


def test_a_remote_client_takes_its_mutual_tls_files_from_the_environment(mtls_server, certs):
    env = {"IDGEN_TLS_CA": str(certs.ca), "IDGEN_TLS_CERT": str(certs.client_cert),
           "IDGEN_TLS_KEY": str(certs.client_key)}
    with _client(mtls_server.address, env=env) as client:
        assert _is_ids(client.next_ids(BIZ, 3), 3)


def test_idgen_next_with_a_client_certificate_gets_ids_under_mutual_tls(mtls_server, certs):
    status, out, err = _next("--target", mtls_server.address, "--ca-file", str(certs.ca),
                             "--cert-file", str(certs.client_cert), "--key-file", str(certs.client_key))
    assert status == 0, err
    assert _is_ids([int(line) for line in out], 1)


def test_idgen_next_takes_its_mutual_tls_files_from_the_environment(mtls_server, certs):
    status, out, err = _next("--target", mtls_server.address, env=_env(
        IDGEN_TLS_CA=str(certs.ca), IDGEN_TLS_CERT=str(certs.client_cert), IDGEN_TLS_KEY=str(certs.client_key)))
    assert status == 0, err
    assert _is_ids([int(line) for line in out], 1)


def test_a_client_without_a_certificate_is_refused_at_once_told_one_is_required(mtls_server, certs):
    message = _refused_quickly(mtls_server.address, ca_file=str(certs.ca))
    assert "requires a client certificate" in message


def test_a_client_certificate_signed_by_another_ca_is_refused_at_once(mtls_server, certs):
    message = _refused_quickly(mtls_server.address, ca_file=str(certs.ca),
                               cert_file=str(certs.other_client_cert), key_file=str(certs.other_client_key))
    assert "refused this client's certificate" in message


# --- 3. refusals: at once, explained, never after the retry budget ----------------------------

def test_a_tls_client_meeting_a_plaintext_server_is_refused_at_once(plaintext_server, certs):
    message = _refused_quickly(plaintext_server.address, ca_file=str(certs.ca))
    assert "speaks plaintext" in message and plaintext_server.address in message


def test_a_plaintext_client_meeting_a_tls_server_is_refused_at_once_told_it_requires_tls(tls_server):
    message = _refused_quickly(tls_server.address)
    assert "requires TLS" in message and tls_server.address in message


def test_a_server_certificate_from_a_ca_the_client_does_not_trust_is_refused_at_once(tls_server, certs):
    message = _refused_quickly(tls_server.address, ca_file=str(certs.other_ca))
    assert "not signed by a CA this client trusts" in message


def test_a_server_certificate_for_another_name_is_refused_at_once(wrong_host_server, certs):
    message = _refused_quickly(wrong_host_server.address, ca_file=str(certs.ca))
    assert "not valid for the name" in message and "tls_server_name" in message


def test_a_server_certificate_for_another_name_is_accepted_when_the_client_names_it(wrong_host_server, certs):
    with _client(wrong_host_server.address, ca_file=str(certs.ca), tls_server_name=OTHER_NAME) as client:
        assert _is_ids(client.next_ids(BIZ, 2), 2)


def _refused_start(db: str, tmp_path: Path, cert: Path, key: Path) -> str:
    """``idgen serve --tls-cert CERT --tls-key KEY`` must exit 2, with one error line and without
    ever serving (not even plaintext). Returns the line."""
    result = idgen("serve", "--listen", "127.0.0.1:0", "--db", db, "--tls-cert", str(cert),
                   "--tls-key", str(key), cwd=str(tmp_path), env=_env())
    assert result.returncode == 2, result.stdout + result.stderr
    assert "serving on" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("idgen: error: "), result.stderr
    return lines[0]


def test_an_expired_server_certificate_stops_idgen_serve_naming_the_file(db, tmp_path, certs):
    line = _refused_start(db, tmp_path, certs.expired_cert, certs.expired_key)
    assert str(certs.expired_cert) in line and "has expired" in line


def test_a_missing_certificate_file_stops_idgen_serve_naming_the_file(db, tmp_path, certs):
    missing = tmp_path / "no-such.crt"
    line = _refused_start(db, tmp_path, missing, certs.server_key)
    assert str(missing) in line and "does not exist" in line


def test_a_key_that_does_not_match_the_certificate_stops_idgen_serve_naming_both_files(db, tmp_path, certs):
    line = _refused_start(db, tmp_path, certs.server_cert, certs.client_key)
    assert str(certs.client_key) in line and str(certs.server_cert) in line
    assert "does not belong to the certificate" in line


# --- 4. idgen next explains a TLS mismatch -----------------------------------------------------

@pytest.mark.parametrize("server, tls, explanation", [
    ("plaintext_server", True, "speaks plaintext"),
    ("tls_server", False, "requires TLS"),
])
def test_idgen_next_with_a_tls_mismatch_exits_1_explaining_it_on_one_line(request, certs, server, tls,
                                                                         explanation):
    address = request.getfixturevalue(server).address
    status, out, err = _next("--target", address, *(["--ca-file", str(certs.ca)] if tls else []))
    assert status == 1 and out == []
    assert len(err) == 1 and err[0].startswith("idgen: error: ") and explanation in err[0], err


# --- 5. TLS and tokens together ----------------------------------------------------------------

def test_a_tls_server_with_tokens_serves_a_client_with_the_ca_and_the_token(token_server, certs):
    server, token = token_server
    with _client(server.address, ca_file=str(certs.ca), token=token) as client:
        assert _is_ids(client.next_ids(BIZ, 3), 3)


def test_a_tls_server_with_tokens_refuses_a_client_with_the_ca_but_no_token(token_server, certs):
    server, _ = token_server
    with _client(server.address, ca_file=str(certs.ca)) as client:
        with pytest.raises(Unauthenticated):
            client.next_ids(BIZ, 1)


def test_idgen_next_with_a_token_file_and_a_ca_file_gets_ids_from_a_tls_server_with_tokens(
        token_server, certs, tmp_path):
    server, token = token_server
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    status, out, err = _next("--target", server.address, "--ca-file", str(certs.ca),
                             "--token-file", str(token_file))
    assert status == 0, err
    assert _is_ids([int(line) for line in out], 1)
