"""The client's TLS: credentials from PEM files, and what a failed TLS connection means.

gRPC alone (no ``cryptography``): a client install has only grpcio and protobuf. The files are
checked only as far as a person's mistakes go (missing, unreadable, not PEM, encrypted key, a
certificate without its key); gRPC checks the rest during the handshake, and
``explain_failure`` turns what it reports into a message a person can act on.

What grpcio 1.85 reports (``details()`` of the ``UNAVAILABLE`` status, after
``failed to connect to all addresses; last error: ... ipv4:HOST:PORT:``), found by experiment:

- TLS client, plaintext server: ``Tls handshake failed (TSI_PROTOCOL_FAILURE): ...
  WRONG_VERSION_NUMBER ...``.
- Server certificate from a CA the client does not trust: ``... CERTIFICATE_VERIFY_FAILED:
  unable to get local issuer certificate``; expired: ``... CERTIFICATE_VERIFY_FAILED:
  certificate has expired``; not yet valid: ``... certificate is not yet valid``.
- Certificate for another name: ``Custom verification check failed with error:
  UNAUTHENTICATED: Hostname Verification Check failed.``
- Server requiring a client certificate, and given none or one its CA did not sign: ``Socket
  closed``. TLS 1.3 ends the client's side of the handshake before the server checks the
  client's certificate, so the client sees only the connection closing after a handshake that
  succeeded; which of the two happened only the server's log says.
- Plaintext client, TLS server: ``Socket closed`` too. This one is ambiguous: anything that
  accepts connections and closes them at once says the same (a proxy or load balancer with no
  server behind it). ``server_speaks_tls`` settles it with a TLS handshake of its own.
- A server that is down: ``Failed to connect to remote host: Connection refused``; one that
  accepts but never answers: ``DEADLINE_EXCEEDED``. Both ordinary outages.
"""
from __future__ import annotations

import re
import socket
import ssl
import urllib.parse

import grpc

from idgen_core.errors import ConfigError
from idgen_core.files import read_setting_file

__all__ = ["CA_FILE", "CERT_FILE", "KEY_FILE", "channel_credentials", "explain_failure", "server_speaks_tls"]

CA_FILE = ("ca_file", "IDGEN_TLS_CA")
"""The option and environment variable naming the CA certificates that sign servers' certificates."""
CERT_FILE = ("cert_file", "IDGEN_TLS_CERT")
"""The option and environment variable naming the client's certificate (mutual TLS)."""
KEY_FILE = ("key_file", "IDGEN_TLS_KEY")
"""The option and environment variable naming the client's private key (mutual TLS)."""


def _named(option: tuple[str, str]) -> str:
    """How each kind of client names an option: ``ca_file= / --ca-file / IDGEN_TLS_CA``."""
    return f"{option[0]}= / --{option[0].replace('_', '-')} / {option[1]}"


def channel_credentials(ca_file: str | None, cert_file: str | None,
                        key_file: str | None) -> grpc.ChannelCredentials:
    """Credentials for ``grpc.secure_channel``; raises ``ConfigError`` naming the file and option.

    ``ca_file`` None (or empty) trusts the system's root CAs, gRPC's default. ``cert_file`` and
    ``key_file`` go together: a client certificate for servers that require one (mutual TLS).
    """
    if bool(cert_file) != bool(key_file):
        given, missing = (CERT_FILE, KEY_FILE) if cert_file else (KEY_FILE, CERT_FILE)
        raise ConfigError(f"a client certificate needs both a certificate and its key: {given[0]} "
                          f"({given[1]}) is given but {missing[0]} ({missing[1]}) is not")
    ca = _read(ca_file, CA_FILE, b"-----BEGIN CERTIFICATE-----", "certificate") if ca_file else None
    cert = _read(cert_file, CERT_FILE, b"-----BEGIN CERTIFICATE-----", "certificate") if cert_file else None
    key = _read(key_file, KEY_FILE, b"PRIVATE KEY-----", "private key") if key_file else None
    if key is not None and (b"ENCRYPTED PRIVATE KEY-----" in key or b"Proc-Type: 4,ENCRYPTED" in key):
        raise ConfigError(f"the key file {key_file!r} ({KEY_FILE[0]} / {KEY_FILE[1]}) is encrypted with a "
                          f"passphrase, which gRPC cannot use: give an unencrypted key, readable only by "
                          f"the user the client runs as")
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def _read(path: str, option: tuple[str, str], marker: bytes, noun: str) -> bytes:
    """The file's bytes; ``ConfigError`` if it is missing, unreadable or lacks ``marker``."""
    what = f"the file {path!r} ({option[0]} / {option[1]})"
    data = read_setting_file(path, what)
    if marker not in data:
        raise ConfigError(f"{what} is not a PEM file holding a {noun} (no '{marker.decode()}' in it)")
    return data


_ADDRESS = re.compile(r"\bipv[46]:(\S+):\s")
_VERIFY_FAILED = re.compile(r"CERTIFICATE_VERIFY_FAILED: ([^:]+)")


def explain_failure(details: str, *, tls: bool, client_cert: bool | None = None) -> str | None:
    """What an ``UNAVAILABLE`` call's ``details()`` means when retrying cannot fix it, else None.

    ``tls`` says whether the channel used TLS; ``client_cert``, when known, whether it carried
    a client certificate (it picks between the two readings of a mutual-TLS refusal). The
    message is one line naming the server's address, for a person to act on. A plaintext
    client's ``Socket closed`` is a likely TLS server, not a certain one (see the module's
    notes): a caller that stops retrying on it should confirm with ``server_speaks_tls``.
    Ordinary outages (refused, reset, timed out) give None.
    """
    found = _ADDRESS.search(details)
    where = urllib.parse.unquote(found.group(1)) if found else "the server"
    # Closed while connecting, after the TLS handshake if any: not "Handshake read failed (Socket
    # closed)" (closed before TLS could start) nor "Stream removed (Socket closed)" (mid-call).
    closed = ("failed to connect" in details and details.rstrip().endswith(": Socket closed")
              and "Handshake" not in details)
    if not tls:
        if closed:
            return (f"{where} closed the connection before answering: it probably requires TLS; give a CA "
                    f"file ({_named(CA_FILE)}) (a proxy with no server behind it does the same)")
        return None
    if "WRONG_VERSION_NUMBER" in details:
        return (f"{where} speaks plaintext, but this client uses TLS: start the server with --tls-cert and "
                f"--tls-key, or connect without TLS (no {_named(CA_FILE)})")
    if "Hostname Verification Check failed" in details:
        return (f"the certificate of {where} is not valid for the name this client connects to: connect "
                "by a name the certificate lists, or name one (tls_server_name= or --tls-server-name)")
    verify = _VERIFY_FAILED.search(details)
    if verify:
        reason = verify.group(1).strip()
        if "expired" in reason or "not yet valid" in reason:
            state = "has expired" if "expired" in reason else "is not valid yet"
            return (f"the certificate of {where} {state}: renew the server's --tls-cert "
                    f"(or check the clocks of both machines)")
        return (f"the certificate of {where} is not signed by a CA this client trusts ({reason}): give "
                f"{_named(CA_FILE)} the CA that signed the server's --tls-cert")
    if closed:
        if client_cert is False:
            return (f"{where} requires a client certificate (mutual TLS): give {_named(CERT_FILE)} "
                    f"and {_named(KEY_FILE)}")
        if client_cert:
            return (f"{where} refused this client's certificate: it must be signed by a CA in the "
                    f"server's --tls-client-ca")
        return (f"{where} closed the connection after the TLS handshake: it requires a client certificate "
                f"(mutual TLS) signed by a CA in its --tls-client-ca; give {_named(CERT_FILE)} and "
                f"{_named(KEY_FILE)}")
    return None


def server_speaks_tls(address: str, *, timeout: float = 2.0) -> bool | None:
    """Whether the server at ``HOST:PORT`` answers a TLS handshake: True, False (it answered, but
    not in TLS), or None (no answer: refused, closed, timed out). Nothing is verified and nothing
    is sent after the handshake: it only tells a TLS server from a plaintext one."""
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw):
                return True
    except ssl.SSLEOFError:
        return None
    except ssl.SSLError as exc:
        # A TLS alert (a handshake the server refused, e.g. for want of a client certificate
        # under TLS 1.2) still comes from a TLS server; anything else is not TLS.
        return "ALERT" in (exc.reason or "")
    except (OSError, ValueError):
        return None
