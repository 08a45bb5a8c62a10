"""The server's TLS credentials, checked before anything is served.

gRPC reads certificates and keys only when the first client connects, and then fails that
handshake with an OpenSSL code in a log line. ``server_credentials`` reads and checks every file
at start-up instead, so that a wrong file stops ``idgen serve`` with one line naming the file
and the setting that gave it. gRPC then gets the certificates and key re-encoded from what was
checked, so what is served is exactly what was checked.
"""
from __future__ import annotations

import datetime
import ssl

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from idgen_core.errors import ConfigError
from idgen_core.files import read_setting_file

__all__ = ["TLS_CERT", "TLS_CLIENT_CA", "TLS_KEY", "server_credentials", "server_ssl_context"]

TLS_CERT = "--tls-cert"
"""The setting naming the server's certificate file (PEM; the server's own certificate first,
then any intermediates)."""
TLS_KEY = "--tls-key"
"""The setting naming the server's private key file (PEM, unencrypted)."""
TLS_CLIENT_CA = "--tls-client-ca"
"""The setting naming the CA certificates client certificates must be signed by (mutual TLS)."""

_WHAT = {TLS_CERT: "TLS certificate", TLS_KEY: "TLS key", TLS_CLIENT_CA: "TLS client CA"}
_PEM = serialization.Encoding.PEM


def server_credentials(cert_file: str, key_file: str, client_ca_file: str | None = None, *,
                       now: datetime.datetime | None = None) -> grpc.ServerCredentials:
    """Credentials for ``grpc.Server.add_secure_port``; raises ``ConfigError`` naming the file.

    ``cert_file`` may hold a chain, the server's own certificate first: that one must be valid
    at ``now`` (an aware datetime; the current time by default) and match the private key in
    ``key_file``, which must not be encrypted. With ``client_ca_file``, every client must
    present a certificate signed by one of the CAs in it (mutual TLS).
    """
    key_pem, chain_pem, client_ca = _checked(cert_file, key_file, client_ca_file, now)
    return grpc.ssl_server_credentials([(key_pem, chain_pem)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def server_ssl_context(cert_file: str, key_file: str, client_ca_file: str | None = None, *,
                       now: datetime.datetime | None = None) -> ssl.SSLContext:
    """The same files, checked the same way (``server_credentials``), as an ``ssl`` context:
    for the HTTP API, which serves the certificate gRPC serves (TLS 1.2 at least)."""
    _, _, client_ca = _checked(cert_file, key_file, client_ca_file, now)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # trusts no CA but the client CA
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:  # changed since the check a moment ago
        raise ConfigError(f"cannot load {_describe(cert_file, TLS_CERT)} for HTTPS: {exc}") from None
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.decode())
    context.set_alpn_protocols(["http/1.1"])
    return context


def _checked(cert_file: str, key_file: str, client_ca_file: str | None,
             now: datetime.datetime | None) -> tuple[bytes, bytes, bytes | None]:
    """The key, the chain and the client CAs (PEM), once every check passed."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    chain = _certificates(cert_file, TLS_CERT)
    leaf = chain[0]
    _check_dates(leaf, cert_file, now)
    key = _private_key(key_file)
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        hint = " (the server's own certificate must come first in it)" if len(chain) > 1 else ""
        raise ConfigError(
            f"the TLS key {key_file!r} ({TLS_KEY}) does not belong to the certificate {cert_file!r} "
            f"({TLS_CERT}){hint}: give the key the certificate was issued for")
    client_ca = None
    if client_ca_file is not None:
        client_ca = b"".join(ca.public_bytes(_PEM) for ca in _certificates(client_ca_file, TLS_CLIENT_CA))
    key_pem = key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    chain_pem = b"".join(cert.public_bytes(_PEM) for cert in chain)
    return key_pem, chain_pem, client_ca


def _describe(path: str, setting: str) -> str:
    return f"the {_WHAT[setting]} file {path!r} ({setting})"


def _read(path: str, setting: str) -> bytes:
    """The file's bytes; ``ConfigError`` if it is missing, unreadable or empty."""
    what = _describe(path, setting)
    data = read_setting_file(path, what)
    if not data.strip():
        raise ConfigError(f"{what} is empty")
    return data


def _certificates(path: str, setting: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in order; at least one."""
    data = _read(path, setting)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        pass
    # Nothing usable: say what the file holds instead, when that can be told.
    swapped = b"PRIVATE KEY-" in data
    found = " (it holds a private key: are the certificate and key swapped?)" if swapped else ""
    raise ConfigError(f"{_describe(path, setting)} holds no PEM certificate "
                      f"('-----BEGIN CERTIFICATE-----'){found}")


def _private_key(path: str) -> PrivateKeyTypes:
    data = _read(path, TLS_KEY)
    what = _describe(path, TLS_KEY)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography says "password was not given but private key is encrypted".
        raise ConfigError(
            f"{what} is encrypted with a passphrase: idgen needs an unencrypted key, readable only "
            f"by the user it runs as (e.g. openssl pkey -in KEY -out NEW_KEY; chmod 600 NEW_KEY)") from None
    except ValueError:
        swapped = b"CERTIFICATE-" in data and b"PRIVATE KEY-" not in data
        found = " (it holds a certificate: are the certificate and key swapped?)" if swapped else ""
        raise ConfigError(f"{what} holds no PEM private key ('-----BEGIN PRIVATE KEY-----'){found}") from None
    except Exception as exc:  # cryptography.exceptions.UnsupportedAlgorithm and kin
        raise ConfigError(f"{what} holds a key this server cannot use ({exc})") from None


def _spki(public_key: PublicKeyTypes) -> bytes:
    """A public key's bytes (SubjectPublicKeyInfo, DER): equal for the same key of any type."""
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_dates(cert: x509.Certificate, path: str, now: datetime.datetime) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    valid = f"it is valid from {_utc(start)} to {_utc(end)}, and it is now {_utc(now)}"
    if now > end:
        raise ConfigError(f"{_describe(path, TLS_CERT)} has expired: {valid}; renew it")
    if now < start:
        raise ConfigError(f"{_describe(path, TLS_CERT)} is not valid yet: {valid}; "
                          f"check this machine's clock, or wait")


def _utc(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
