"""Tokens made, listed and revoked as an operator does it: through the real ``idgen token``
commands, each a process of its own.

``create_token`` returns the token the command printed (checked to be alone on stdout);
``list_tokens`` parses ``idgen token list``; ``cli_env`` is the environment for a
command run without any token or TLS setting inherited from the test's own.
"""
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.cli import db_args, idgen

__all__ = ["TOKEN_FORMAT", "TokenRow", "cli_env", "create_token", "list_tokens", "revoke_token",
           "secret_of", "token_file", "token_id", "unknown_token"]

TOKEN_FORMAT = re.compile(r"idgen_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
"""What ``idgen token create`` prints: ``idgen_<token_id>_<secret>``."""

_CLIENT_ENV = ("IDGEN_TOKEN", "IDGEN_TLS_CA", "IDGEN_TLS_CERT", "IDGEN_TLS_KEY")


def create_token(urls: Sequence[str], *biz_types: str, name: str | None = None,
                 admin: bool = False) -> str:
    """``idgen token create --biz B... [--name N] [--admin] --db URL...``, which must succeed;
    the token it printed."""
    result = idgen("token", "create", *[arg for biz in biz_types for arg in ("--biz", biz)],
                   *(["--name", name] if name is not None else []), *(["--admin"] if admin else []),
                   *db_args(urls))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert TOKEN_FORMAT.fullmatch(token), "stdout holds the token alone"
    return token


def revoke_token(urls: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
    """``idgen token revoke WHAT --db URL...`` (WHAT: a name, an id or the token itself)."""
    return idgen("token", "revoke", what, *db_args(urls))


def token_id(token: str) -> str:
    """The public half of ``token``, as ``idgen token list`` shows it."""
    match = TOKEN_FORMAT.fullmatch(token)
    assert match, "a token as idgen token create prints it"
    return match.group(1)


def secret_of(token: str) -> str:
    """The secret half of ``token``: what must never be shown anywhere."""
    match = TOKEN_FORMAT.fullmatch(token)
    assert match, "a token as idgen token create prints it"
    return match.group(2)


def unknown_token(token: str) -> str:
    """A well-formed token with ``token``'s id and another secret (one character flipped)."""
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


@dataclass(frozen=True)
class TokenRow:
    """One row of ``idgen token list``."""

    token_id: str
    name: str
    biz_types: str
    admin: bool
    revoked: bool
    databases: str  # "copies/databases", e.g. "2/2"


def list_tokens(urls: Sequence[str]) -> dict[str, TokenRow]:
    """``idgen token list --db URL...``, which must succeed: its rows by token name."""
    result = idgen("token", "list", *db_args(urls))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and lines[0].split()[:2] == ["ID", "NAME"], result.stdout
    rows = {}
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())  # dates hold one space; columns two or more
        assert len(cells) == 7, line
        ident, name, biz_types, admin, _created, revoked, databases = cells
        rows[name] = TokenRow(ident, name, biz_types, admin == "yes", revoked != "-", databases)
    return rows


def token_file(directory: Path, token: str, name: str = "token") -> str:
    """A file holding ``token`` (readable by its owner only), for ``--token-file``."""
    path = directory / name
    path.write_text(token + "\n", encoding="ascii")
    path.chmod(0o600)
    return str(path)


def cli_env(token: str | None = None) -> dict[str, str]:
    """This process's environment without any client token or TLS setting; with
    ``IDGEN_TOKEN=token`` if given."""
    env = {key: value for key, value in os.environ.items() if key not in _CLIENT_ENV}
    if token is not None:
        env["IDGEN_TOKEN"] = token
    return env
