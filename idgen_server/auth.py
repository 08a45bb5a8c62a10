"""Who may call: bearer tokens, checked against a cache of every database's token table.

Policy (secure by default):

- Once any token exists in any database (revoked ones count: revoking the last
  token does not open the server), or when the server is told tokens are
  always needed (it listens beyond loopback), every call needs a token.
- Otherwise, the zero-set-up case of a server on loopback with no token, calls
  need none.
- Until some database's token table has been read, nobody knows which case
  holds: calls are ``UNAVAILABLE`` rather than let in (fail closed).

No database round trip per call: a thread (``idgen-token-watch``) reads every
database's table every ``refresh`` seconds. A token revoked in any database is
refused; a database that cannot be read keeps its last-read tokens, so auth
keeps working while it is down, as allocation does. A revocation takes effect
within ``refresh`` seconds plus one read.

A call names its token as ``authorization: Bearer <token>`` metadata. The
token is looked up by its public ``token_id`` and its hash compared in
constant time (``hmac.compare_digest``). No message, log line or exception
here ever holds a token.
"""
from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from idgen_core.errors import (
    ConfigError,
    PermissionDenied,
    ServiceUnavailable,
    StorageUnavailable,
    Unauthenticated,
)
from idgen_server.tokens import Grant, TokenTable, hash_token, token_id_of
from idgen_wire.auth import HEADER, SCHEME

__all__ = ["DEFAULT_REFRESH", "Authenticator", "TokenNotCached"]

log = logging.getLogger(__name__)

DEFAULT_REFRESH = 2.0
"""Seconds between two reads of the token tables: the longest a revoked token still works,
plus one read."""
_PREFIX = SCHEME.lower() + " "
_EARLY_READ_GAP = 0.5


class TokenNotCached(Unauthenticated):
    """``identify(read_early=False)`` met a well-formed token the cache does not know: not a
    refusal yet (the token may have been created a moment ago), so never logged as one."""


@dataclass(frozen=True)
class _State:
    loaded: bool = False
    required: bool = True
    grants: dict[str, Grant] = field(default_factory=dict)  # token_id -> grant, revoked ones dropped


class Authenticator:
    """Checks each call's token. Thread-safe; ``start()`` the refresh thread, ``close()`` it.

    ``always``: every call needs a token even while none exists (a server that
    listens beyond loopback).
    """

    def __init__(self, tables: Sequence[TokenTable], *, always: bool = False,
                 refresh: float = DEFAULT_REFRESH) -> None:
        self._tables = tuple(tables)
        self._always = always
        self._interval = refresh
        self._snapshots: list[list[Grant] | None] = [None] * len(self._tables)
        self._no_table: set[int] = set()
        self._unreadable: set[int] = set()
        self._state = _State(required=always)
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._early = -_EARLY_READ_GAP
        self._early_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self.refresh()

    @property
    def required(self) -> bool:
        """Whether calls need a token now."""
        return self._state.required

    @property
    def tokens(self) -> int:
        """Tokens that can be used now (known, not revoked)."""
        return len(self._state.grants)

    def check(self, metadata: Iterable[tuple[str, str | bytes]], biz_type: str | None = None, *,
              admin: bool = False) -> Grant | None:
        """``identify`` then ``permit``: the caller's grant if it may use ``biz_type``."""
        grant = self.identify(metadata)
        self.permit(grant, biz_type, admin=admin)
        return grant

    def identify(self, metadata: Iterable[tuple[str, str | bytes]], *,
                 read_early: bool = True) -> Grant | None:
        """The grant of the call's token; None where calls need none. ``Unauthenticated``
        without a valid token; ``ServiceUnavailable`` while no token table was read.
        ``read_early=False`` never reads a database (an event loop's caller): a token the
        cache does not know raises ``TokenNotCached`` instead; ask again in a thread."""
        state = self._state  # one read: a refresh swaps the whole state
        if not state.loaded:
            raise ServiceUnavailable("the ID server cannot check tokens yet: no database has "
                                     "answered since it started; retry shortly")
        if not state.required:
            return None
        return self._grant(state, metadata, read_early)

    @staticmethod
    def permit(grant: Grant | None, biz_type: str | None = None, *, admin: bool = False) -> None:
        """``PermissionDenied`` unless ``grant`` (None: no token needed) allows ``biz_type``
        (and the admin scope, if asked)."""
        if grant is None:
            return
        if biz_type is not None and not grant.allows(biz_type):
            raise PermissionDenied(f"token {grant.name!r} does not grant biz type {biz_type!r}: "
                                   f"create a token that does (idgen token create --biz {biz_type})")
        if admin and not grant.admin:
            raise PermissionDenied(f"token {grant.name!r} does not have the admin scope "
                                   "(idgen token create --admin)")

    def _grant(self, state: _State, metadata: Iterable[tuple[str, str | bytes]],
               read_early: bool) -> Grant:
        values = [value for key, value in metadata if key == HEADER]
        if not values:
            raise Unauthenticated("this server needs a token: send `authorization: Bearer <token>` "
                                  "(gRPC metadata or an HTTP header; token= or IDGEN_TOKEN in the clients)")
        value = values[0]
        if len(values) > 1 or not isinstance(value, str) or value[:len(_PREFIX)].lower() != _PREFIX:
            raise Unauthenticated("the authorization metadata must be one `Bearer <token>`")
        token = value[len(_PREFIX):].strip()
        token_id = token_id_of(token)
        grant = state.grants.get(token_id) if token_id is not None else None
        if grant is None and token_id is not None and not read_early:
            raise TokenNotCached("the token is not in the cache")
        if grant is None and token_id is not None and self._read_early():
            grant = self._state.grants.get(token_id)  # a token created since the last read
        if grant is None or not hmac.compare_digest(hash_token(token), grant.secret_hash):
            raise Unauthenticated("the token is not valid here: unknown, revoked, or mistyped")
        return grant

    # -- the cache --------------------------------------------------------------------

    def _read_early(self) -> bool:
        """Read the tables now, for a well-formed token the cache does not know: one just
        created works at once rather than after up to ``refresh`` seconds. At most once per
        ``_EARLY_READ_GAP`` seconds for the whole server, and never two at once, so that
        made-up tokens cannot make it read its databases on every call."""
        now = time.monotonic()
        if now - self._early < _EARLY_READ_GAP or not self._early_lock.acquire(blocking=False):
            return False
        try:
            self._early = now
            self.refresh()
            return True
        finally:
            self._early_lock.release()

    def refresh(self) -> None:
        """Read every database's token table now; keep the last copy of one that fails."""
        with self._refresh_lock:  # the watch thread and an early read may both come here
            self._refresh()

    def _refresh(self) -> None:
        for index, table in enumerate(self._tables):
            try:
                if index in self._no_table and not table.exists(logged=False):
                    continue  # still none (set up by an older idgen): no failed read to log again
                self._snapshots[index] = table.read(logged=False)
                self._no_table.discard(index)
                if index in self._unreadable:
                    self._unreadable.discard(index)
                    log.info("the token table of %s can be read again", table.name)
            except (StorageUnavailable, ConfigError) as exc:
                self._snapshots[index] = self._without_table(index, table)
                if index not in self._no_table and index not in self._unreadable:
                    self._unreadable.add(index)  # said once per outage, not at every refresh
                    log.warning("cannot read the token table of %s (%s): keeping the tokens last "
                                "read from it", table.name, exc)
        snapshots = [s for s in self._snapshots if s is not None]
        revoked = {g.token_id for s in snapshots for g in s if g.revoked_at is not None}
        grants: dict[str, Grant] = {}
        for snapshot in snapshots:
            for grant in snapshot:
                if grant.token_id not in revoked:
                    grants.setdefault(grant.token_id, grant)
        self._state = _State(loaded=bool(snapshots),
                             required=self._always or any(snapshots), grants=grants)

    def _without_table(self, index: int, table: TokenTable) -> list[Grant] | None:
        """[] for a database that answers but has no token table (set up by an older
        idgen: it can hold no token); its last copy (or None) if it does not answer."""
        try:
            present = table.exists(logged=False)
        except StorageUnavailable:
            return self._snapshots[index]
        if present:
            return self._snapshots[index]
        if index not in self._no_table:
            self._no_table.add(index)
            log.warning("database %s has no idgen_token table (run `idgen init-db` to add it): "
                        "it holds no token", table.name)
        return []

    def start(self) -> None:
        """Start the refresh thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="idgen-token-watch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                self.refresh()
            except Exception:  # a bug must not freeze the cache for good
                log.exception("reading the token tables failed; trying again")

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(10)
