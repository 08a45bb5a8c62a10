"""Certificates made at test time with ``trustme``, written as PEM files, for the TLS tests.

Nothing here is checked in: every run makes its own CAs and keys, so no test depends on a
certificate that expires on some future date. ``make_certs(directory)`` writes the files and
returns their paths; a conftest can wrap it in a session-scoped fixture::

    @pytest.fixture(scope="session")
    def certs(tmp_path_factory):
        return make_certs(tmp_path_factory.mktemp("certs"))
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAMES = ("127.0.0.1", "localhost")
"""The names the server certificate is valid for: what tests connect to."""

OTHER_NAME = "idgen.example.org"
"""The one name ``wrong_host_cert`` is valid for (not what the tests connect to)."""


@dataclass(frozen=True)
class CertFiles:
    """Paths of PEM files. ``server_cert`` and the other certificate files hold the leaf
    only (the CA is in ``ca``); ``server_chain`` holds the leaf and then the CA, as a
    server given an intermediate would have it."""

    directory: Path
    ca: Path                # signs every certificate below except other_ca's
    server_cert: Path       # 127.0.0.1 and localhost
    server_key: Path
    server_chain: Path      # server_cert followed by ca
    client_cert: Path       # a client identity signed by ca (mutual TLS)
    client_key: Path
    other_ca: Path          # an unrelated CA: trusts nothing the tests serve
    other_client_cert: Path  # a client identity signed by other_ca
    other_client_key: Path
    expired_cert: Path      # 127.0.0.1 and localhost, valid from 30 to 2 days ago
    expired_key: Path
    future_cert: Path       # 127.0.0.1 and localhost, valid from 2 days from now
    future_key: Path
    wrong_host_cert: Path   # valid, signed by ca, for OTHER_NAME only
    wrong_host_key: Path


def make_certs(directory: Path) -> CertFiles:
    """Make the CAs and certificates and write them into ``directory`` (which must exist).
    Keys are unencrypted PEM (EC keys, SEC1 ``EC PRIVATE KEY``, as trustme writes them)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    ca, other_ca = trustme.CA(), trustme.CA()
    leaves = {
        "server": ca.issue_cert(*SERVER_NAMES),
        "client": ca.issue_cert("client.idgen.test", common_name="idgen test client"),
        "other_client": other_ca.issue_cert("stranger.idgen.test"),
        "expired": ca.issue_cert(*SERVER_NAMES, not_before=now - 30 * day, not_after=now - 2 * day),
        "future": ca.issue_cert(*SERVER_NAMES, not_before=now + 2 * day, not_after=now + 30 * day),
        "wrong_host": ca.issue_cert(OTHER_NAME),
    }
    paths: dict[str, Path] = {"directory": directory}
    for name, authority in (("ca", ca), ("other_ca", other_ca)):
        paths[name] = directory / f"{name}.pem"
        authority.cert_pem.write_to_path(str(paths[name]))
    for name, leaf in leaves.items():
        paths[f"{name}_cert"] = directory / f"{name}.crt"
        paths[f"{name}_key"] = directory / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(paths[f"{name}_cert"]))
        leaf.private_key_pem.write_to_path(str(paths[f"{name}_key"]))
    paths["server_chain"] = directory / "server-chain.crt"
    paths["server_chain"].write_bytes(leaves["server"].cert_chain_pems[0].bytes() + ca.cert_pem.bytes())
    return CertFiles(**paths)
