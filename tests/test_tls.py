"""TLS: the server's files checked at start-up, the client's credentials, and every refused
handshake explained, over real gRPC connections on 127.0.0.1 (a trivial servicer, not idgen's
server, so that only TLS is under test)."""
from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from idgen_client.tls import channel_credentials, explain_failure, server_speaks_tls
from idgen_core.errors import ConfigError
from idgen_server.tls import TLS_CERT, TLS_CLIENT_CA, TLS_KEY, server_credentials
from idgen_wire import idgen_pb2, idgen_pb2_grpc
from tests.support.certs import OTHER_NAME, CertFiles, make_certs

DEADLINE = 5.0
"""Every refusal below comes at once; a call that runs into this deadline is a failure."""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def encrypted_key(certs: CertFiles, tmp_path: Path) -> str:
    key = serialization.load_pem_private_key(certs.server_key.read_bytes(), password=None)
    return _write(tmp_path / "encrypted.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))


# --- the server's files, checked at start-up ---------------------------------------------------

def test_a_certificate_and_its_key_make_server_credentials(certs):
    plain = server_credentials(str(certs.server_cert), str(certs.server_key))
    assert isinstance(plain, grpc.ServerCredentials)
    assert isinstance(server_credentials(str(certs.server_chain), str(certs.server_key), str(certs.ca)),
                      grpc.ServerCredentials)


@pytest.mark.parametrize("setting", [TLS_CERT, TLS_KEY, TLS_CLIENT_CA])
def test_a_missing_file_is_refused_naming_the_file_and_the_setting(certs, tmp_path, setting):
    files = {TLS_CERT: str(certs.server_cert), TLS_KEY: str(certs.server_key), TLS_CLIENT_CA: str(certs.ca)}
    files[setting] = str(tmp_path / "nowhere.pem")
    with pytest.raises(ConfigError, match="does not exist") as raised:
        server_credentials(files[TLS_CERT], files[TLS_KEY], files[TLS_CLIENT_CA])
    assert files[setting] in str(raised.value) and setting in str(raised.value)


def test_a_directory_given_as_a_file_is_refused_naming_it(certs, tmp_path):
    with pytest.raises(ConfigError, match="is a directory") as raised:
        server_credentials(str(tmp_path), str(certs.server_key))
    assert str(tmp_path) in str(raised.value) and TLS_CERT in str(raised.value)


def test_a_file_this_user_may_not_read_is_refused_naming_it_even_when_simulated(certs, monkeypatch):
    # chmod 000 cannot make a file unreadable to root, which CI runs as: make the read fail
    # as it would for another user.
    real_read = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path == certs.server_key or path == certs.client_key:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(ConfigError, match="cannot be read by this user") as raised:
        server_credentials(str(certs.server_cert), str(certs.server_key))
    assert str(certs.server_key) in str(raised.value) and TLS_KEY in str(raised.value)
    with pytest.raises(ConfigError, match="cannot be read by this user") as raised:
        channel_credentials(str(certs.ca), str(certs.client_cert), str(certs.client_key))
    assert str(certs.client_key) in str(raised.value) and "IDGEN_TLS_KEY" in str(raised.value)


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty"),
    (b"this is not a certificate\n", "holds no PEM certificate"),
    (b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
     "holds no PEM certificate"),
])
def test_a_certificate_file_that_is_not_pem_is_refused_naming_it(certs, tmp_path, content, expected):
    cert = _write(tmp_path / "server.crt", content)
    with pytest.raises(ConfigError, match=expected) as raised:
        server_credentials(cert, str(certs.server_key))
    assert cert in str(raised.value) and TLS_CERT in str(raised.value)


def test_a_key_file_that_is_not_pem_is_refused_naming_it(certs, tmp_path):
    key = _write(tmp_path / "server.key", b"not a key")
    with pytest.raises(ConfigError, match="holds no PEM private key") as raised:
        server_credentials(str(certs.server_cert), key)
    assert key in str(raised.value) and TLS_KEY in str(raised.value)


def test_a_certificate_and_key_given_the_wrong_way_round_are_refused_saying_so(certs):
    with pytest.raises(ConfigError, match="swapped") as raised:
        server_credentials(str(certs.server_key), str(certs.server_cert))
    assert str(certs.server_key) in str(raised.value)


def test_a_key_encrypted_with_a_passphrase_is_refused_naming_the_file(certs, encrypted_key):
    with pytest.raises(ConfigError, match="encrypted with a passphrase") as raised:
        server_credentials(str(certs.server_cert), encrypted_key)
    assert encrypted_key in str(raised.value) and "unencrypted" in str(raised.value)


def test_a_key_that_does_not_belong_to_the_certificate_is_refused_naming_both_files(certs):
    with pytest.raises(ConfigError, match="does not belong to the certificate") as raised:
        server_credentials(str(certs.server_cert), str(certs.client_key))
    assert str(certs.client_key) in str(raised.value) and str(certs.server_cert) in str(raised.value)


def test_a_chain_must_begin_with_the_servers_own_certificate(certs, tmp_path):
    backwards = _write(tmp_path / "backwards.crt", certs.ca.read_bytes() + certs.server_cert.read_bytes())
    with pytest.raises(ConfigError, match="must come first") as raised:
        server_credentials(backwards, str(certs.server_key))
    assert backwards in str(raised.value)


def test_an_expired_certificate_is_refused_at_start_up_naming_the_file_and_the_dates(certs):
    with pytest.raises(ConfigError, match="has expired") as raised:
        server_credentials(str(certs.expired_cert), str(certs.expired_key))
    assert str(certs.expired_cert) in str(raised.value) and str(raised.value).count(" UTC") == 3


def test_a_certificate_not_valid_yet_is_refused_at_start_up_naming_the_file(certs):
    with pytest.raises(ConfigError, match="is not valid yet") as raised:
        server_credentials(str(certs.future_cert), str(certs.future_key))
    assert str(certs.future_cert) in str(raised.value) and "clock" in str(raised.value)


def test_validity_is_judged_at_the_time_given(certs):
    later = datetime.datetime(3001, 1, 1, tzinfo=datetime.timezone.utc)  # trustme's certificates end in 3000
    with pytest.raises(ConfigError, match="has expired"):
        server_credentials(str(certs.server_cert), str(certs.server_key), now=later)


@pytest.mark.parametrize("content", [b"", b"garbage\n", None])
def test_a_client_ca_file_without_a_certificate_is_refused_naming_it(certs, tmp_path, content):
    client_ca = str(certs.client_key) if content is None else _write(tmp_path / "ca.pem", content)
    with pytest.raises(ConfigError) as raised:
        server_credentials(str(certs.server_cert), str(certs.server_key), client_ca)
    assert client_ca in str(raised.value) and TLS_CLIENT_CA in str(raised.value)


# --- the client's files ------------------------------------------------------------------------

def test_the_client_takes_a_ca_and_optionally_a_certificate_with_its_key(certs):
    for ca in (str(certs.ca), None):
        assert isinstance(channel_credentials(ca, None, None), grpc.ChannelCredentials)
        assert isinstance(channel_credentials(ca, str(certs.client_cert), str(certs.client_key)),
                          grpc.ChannelCredentials)


@pytest.mark.parametrize("given", ["cert", "key"])
def test_a_client_certificate_without_its_key_or_a_key_without_its_certificate_is_refused(certs, given):
    cert, key = (str(certs.client_cert), None) if given == "cert" else (None, str(certs.client_key))
    with pytest.raises(ConfigError, match="needs both a certificate and its key") as raised:
        channel_credentials(str(certs.ca), cert, key)
    assert "IDGEN_TLS_CERT" in str(raised.value) and "IDGEN_TLS_KEY" in str(raised.value)


@pytest.mark.parametrize("option, env", [("ca_file", "IDGEN_TLS_CA"), ("cert_file", "IDGEN_TLS_CERT"),
                                         ("key_file", "IDGEN_TLS_KEY")])
@pytest.mark.parametrize("problem", ["missing", "directory", "not PEM"])
def test_a_client_file_that_cannot_be_used_is_refused_naming_it_and_its_option(
        certs, tmp_path, option, env, problem):
    bad = {"missing": str(tmp_path / "nowhere.pem"), "directory": str(tmp_path),
           "not PEM": _write(tmp_path / "plain.txt", b"just text")}[problem]
    files = {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert), "key_file": str(certs.client_key),
             option: bad}
    with pytest.raises(ConfigError) as raised:
        channel_credentials(files["ca_file"], files["cert_file"], files["key_file"])
    assert bad in str(raised.value) and option in str(raised.value) and env in str(raised.value)
    assert "just text" not in str(raised.value)  # never a file's contents


def test_an_encrypted_client_key_is_refused_naming_it(certs, encrypted_key):
    with pytest.raises(ConfigError, match="encrypted with a passphrase") as raised:
        channel_credentials(str(certs.ca), str(certs.client_cert), encrypted_key)
    assert encrypted_key in str(raised.value)


# --- real connections --------------------------------------------------------------------------

class _Trivial(idgen_pb2_grpc.IdGeneratorServicer):
    def NextId(self, request, context):  # noqa: N802 (the RPC's name)
        return idgen_pb2.NextIdResponse(ids=[42])


@contextmanager
def _serving(credentials: grpc.ServerCredentials | None = None) -> Iterator[str]:
    """A gRPC server on a free port of 127.0.0.1, plaintext without credentials: its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    try:
        idgen_pb2_grpc.add_IdGeneratorServicer_to_server(_Trivial(), server)
        if credentials is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def _next_id(target: str, credentials: grpc.ChannelCredentials | None = None,
             server_name: str | None = None) -> list[int]:
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    channel = (grpc.insecure_channel(target) if credentials is None
               else grpc.secure_channel(target, credentials, options=options))
    try:
        stub = idgen_pb2_grpc.IdGeneratorStub(channel)
        request = idgen_pb2.NextIdRequest(biz_type="default", count=1)
        return list(stub.NextId(request, timeout=DEADLINE, wait_for_ready=False).ids)
    finally:
        channel.close()


def _refusal(target: str, credentials: grpc.ChannelCredentials | None = None,
             server_name: str | None = None) -> str:
    """The details of the UNAVAILABLE a call must end in, at once."""
    with pytest.raises(grpc.RpcError) as raised:
        _next_id(target, credentials, server_name)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value.details()
    return raised.value.details()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_tls_client_gets_ids_from_a_tls_server_by_address_and_by_name(certs):
    with _serving(server_credentials(str(certs.server_chain), str(certs.server_key))) as address:
        creds = channel_credentials(str(certs.ca), None, None)
        assert _next_id(address, creds) == [42]
        assert _next_id(address.replace("127.0.0.1", "localhost"), creds) == [42]
        assert server_speaks_tls(address) is True


def test_a_client_with_a_certificate_signed_by_the_client_ca_gets_ids_under_mutual_tls(certs):
    mutual = server_credentials(str(certs.server_cert), str(certs.server_key), str(certs.ca))
    with _serving(mutual) as address:
        assert _next_id(address, channel_credentials(str(certs.ca), str(certs.client_cert),
                                                     str(certs.client_key))) == [42]
        assert server_speaks_tls(address) is True  # the probe gets through the handshake without one


def test_a_server_name_overrides_the_name_checked_against_the_certificate(certs):
    creds = channel_credentials(str(certs.ca), None, None)
    with _serving(server_credentials(str(certs.wrong_host_cert), str(certs.wrong_host_key))) as address:
        assert _next_id(address, creds, server_name=OTHER_NAME) == [42]
    with _serving(server_credentials(str(certs.server_cert), str(certs.server_key))) as address:
        details = _refusal(address, creds, server_name=OTHER_NAME)
        assert "tls_server_name" in explain_failure(details, tls=True)


def test_a_server_certificate_from_an_unknown_ca_is_refused_and_explained(certs):
    with _serving(server_credentials(str(certs.server_cert), str(certs.server_key))) as address:
        for ca in (str(certs.other_ca), None):  # another CA; the system's roots
            message = explain_failure(_refusal(address, channel_credentials(ca, None, None)), tls=True)
            assert message and address in message and "not signed by a CA this client trusts" in message
            assert "IDGEN_TLS_CA" in message


def test_a_certificate_for_another_host_is_refused_and_explained(certs):
    with _serving(server_credentials(str(certs.wrong_host_cert), str(certs.wrong_host_key))) as address:
        message = explain_failure(_refusal(address, channel_credentials(str(certs.ca), None, None)), tls=True)
    assert message and address in message and "not valid for the name" in message


def test_an_expired_server_certificate_is_refused_and_explained(certs):
    # The server's own check would refuse this file; gRPC's credentials serve it regardless.
    served = grpc.ssl_server_credentials([(certs.expired_key.read_bytes(), certs.expired_cert.read_bytes())])
    with _serving(served) as address:
        message = explain_failure(_refusal(address, channel_credentials(str(certs.ca), None, None)), tls=True)
    assert message and address in message and "has expired" in message


@pytest.mark.parametrize("client", ["none", "foreign"])
def test_a_client_certificate_missing_or_from_another_ca_is_refused_under_mutual_tls(certs, client):
    creds = (channel_credentials(str(certs.ca), None, None) if client == "none" else
             channel_credentials(str(certs.ca), str(certs.other_client_cert), str(certs.other_client_key)))
    mutual = server_credentials(str(certs.server_cert), str(certs.server_key), str(certs.ca))
    with _serving(mutual) as address:
        details = _refusal(address, creds)
    generic = explain_failure(details, tls=True)
    assert generic and address in generic and "client certificate" in generic
    specific = explain_failure(details, tls=True, client_cert=client == "foreign")
    expected = "refused this client's certificate" if client == "foreign" else "requires a client certificate"
    assert specific and expected in specific


def test_a_tls_client_meeting_a_plaintext_server_is_told_so(certs):
    with _serving() as address:
        message = explain_failure(_refusal(address, channel_credentials(str(certs.ca), None, None)), tls=True)
        assert server_speaks_tls(address) is False
    assert message and message.startswith(f"{address} speaks plaintext")


def test_a_plaintext_client_meeting_a_tls_server_is_told_it_probably_needs_tls(certs):
    with _serving(server_credentials(str(certs.server_cert), str(certs.server_key))) as address:
        message = explain_failure(_refusal(address), tls=False)
        # "Socket closed" is what any listener that drops connections gives: the probe confirms.
        assert server_speaks_tls(address) is True
    assert message and address in message and "requires TLS" in message and "IDGEN_TLS_CA" in message


@pytest.mark.parametrize("tls", [False, True])
def test_a_server_that_is_down_is_an_ordinary_outage(certs, tls):
    address = f"127.0.0.1:{_free_port()}"
    creds = channel_credentials(str(certs.ca), None, None) if tls else None
    assert explain_failure(_refusal(address, creds), tls=tls) is None
    assert server_speaks_tls(address) is None


@pytest.mark.parametrize("details", [
    "Stream removed (Socket closed)",  # a server that died in the middle of a call
    "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: "
    "Handshake read failed (Socket closed)",  # closed before TLS began: a proxy with nothing behind it
    "Cancelling all calls",  # a server stopping
])
@pytest.mark.parametrize("tls", [False, True])
def test_connections_lost_for_other_reasons_are_ordinary_outages(details, tls):
    assert explain_failure(details, tls=tls) is None
