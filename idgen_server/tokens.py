"""Tokens: what they look like, and the token table of one database.

A token is ``idgen_<token_id>_<secret>``: the prefix lets secret scanners find a
leaked one; ``token_id`` (12 hex digits) is its public half, shown by
``idgen token list`` and taken by ``revoke``; ``secret`` is 256 random bits.
Only the SHA-256 of the whole token is stored, in the ``idgen_token`` table
beside the segment table, in every database of the server: the token is
random, so a fast hash gives nothing away, and a server checks it by looking up
``token_id`` and comparing hashes in constant time (``idgen_server.auth``).

A ``Grant`` is what a token allows: a set of biz types (or every one, ``*``)
and, optionally, the admin scope.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, inspect, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import func

from idgen_core.errors import ConfigError, safe_repr
from idgen_core.segment import validate_biz_type
from idgen_server.database import DB_ERRORS, Database
from idgen_server.schema import token_table

__all__ = ["ALL_BIZ_TYPES", "PREFIX", "Grant", "TokenTable", "hash_token", "new_token",
           "token_id_of", "validate_name"]

PREFIX = "idgen_"
ALL_BIZ_TYPES = "*"
"""In a grant's biz types: every biz type, present and future."""
_FORMAT = re.compile(r"idgen_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_T = token_table.c


def new_token() -> tuple[str, str]:
    """A fresh token and its ``token_id``."""
    token_id = secrets.token_hex(6)
    return f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}", token_id


def token_id_of(token: str) -> str | None:
    """The ``token_id`` of a well-formed token, else None (nothing to look up)."""
    match = _FORMAT.fullmatch(token)
    return match.group(1) if match else None


def hash_token(token: str) -> str:
    """What the table stores for ``token``: hex SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def validate_name(name: str) -> str:
    """A token's name, for people: 1-64 characters of ``[A-Za-z0-9_.:-]``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"a token name is 1-64 characters of [A-Za-z0-9_.:-], starting with a "
                          f"letter or digit, not {safe_repr(name)}")
    return name


@dataclass(frozen=True)
class Grant:
    """One token's row: what it allows, and whether it was revoked."""

    token_id: str
    name: str
    secret_hash: str
    biz_types: frozenset[str]
    admin: bool = False
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    def allows(self, biz_type: str) -> bool:
        return ALL_BIZ_TYPES in self.biz_types or biz_type in self.biz_types

    @staticmethod
    def biz_types_of(names: Iterable[str]) -> frozenset[str]:
        """``names`` checked: biz type names, or ``*`` alone."""
        chosen = frozenset(names)
        if not chosen:
            raise ConfigError("a token must grant at least one biz type (--biz NAME, or --biz '*')")
        if ALL_BIZ_TYPES in chosen and len(chosen) > 1:
            raise ConfigError("--biz '*' grants every biz type: give it alone")
        for name in chosen - {ALL_BIZ_TYPES}:
            validate_biz_type(name)
        return chosen


class TokenTable:
    """The ``idgen_token`` table of one database. Thread-safe. Failures are the
    database's (``StorageUnavailable``, or ``ConfigError`` for what a person must fix)."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self.name = database.name

    def exists(self, *, logged: bool = True) -> bool:
        """Whether the table exists (a database set up by an older idgen has none).
        ``logged=False``: a failure is the caller's to log (``Database.unavailable``)."""
        try:
            with self._db.engine.connect() as conn:
                return inspect(conn).has_table(token_table.name)
        except DB_ERRORS as exc:
            raise self._db.unavailable(exc, logged=logged) from None

    def read(self, *, logged: bool = True) -> list[Grant]:
        """Every token, revoked ones included (``logged``: as for ``exists``)."""
        try:
            with self._db.engine.connect() as conn:
                records = list(conn.execute(select(token_table)))
        except DB_ERRORS as exc:
            raise self._db.unavailable(exc, logged=logged) from None
        return [Grant(token_id=r.token_id, name=r.name, secret_hash=r.secret_hash,
                      biz_types=frozenset(b for b in str(r.biz_types).split(",") if b),
                      admin=bool(r.admin), created_at=r.created_at, revoked_at=r.revoked_at)
                for r in records]

    def add(self, grant: Grant) -> None:
        """Store ``grant``; ``ConfigError`` if its name or id is taken."""
        try:
            with self._db.engine.begin() as conn:
                conn.execute(insert(token_table).values(
                    token_id=grant.token_id, name=grant.name, secret_hash=grant.secret_hash,
                    biz_types=",".join(sorted(grant.biz_types)), admin=int(grant.admin)))
        except IntegrityError:
            raise ConfigError(f"a token named {grant.name!r} exists already in {self.name} "
                              "(names are never reused, even once revoked): choose another") from None
        except DB_ERRORS as exc:
            raise self._db.failure(exc) from None

    def remove(self, token_id: str) -> None:
        """Delete a token's row: only to undo an ``add`` that did not reach every database."""
        try:
            with self._db.engine.begin() as conn:
                conn.execute(token_table.delete().where(_T.token_id == token_id))
        except DB_ERRORS as exc:
            raise self._db.failure(exc) from None

    def revoke(self, name_or_id: str) -> list[str]:
        """Revoke the token of that name or id, if not revoked yet; the names revoked."""
        match = or_(_T.name == name_or_id, _T.token_id == name_or_id)
        try:
            with self._db.engine.begin() as conn:
                names = [r.name for r in conn.execute(
                    select(_T.name).where(match, _T.revoked_at.is_(None)))]
                conn.execute(update(token_table).where(match, _T.revoked_at.is_(None))
                             .values(revoked_at=func.current_timestamp()))
        except DB_ERRORS as exc:
            raise self._db.failure(exc) from None
        return names
