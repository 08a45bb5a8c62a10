"""What every call passes before it is served: its token, then its quota.

``IdGenService``'s handlers ask the gate first (``add_to_server``): the caller
is identified from its metadata before its request is even parsed, so a caller
without a valid token learns nothing, not even whether its bytes were a valid
request; then the parsed request's biz type is checked against the token's
grant, and the call and its IDs are charged to the caller's quota.

Every refusal for want of a valid token (``Unauthenticated``) or of a grant
(``PermissionDenied``) is logged here, the one place every call passes: a
WARNING naming the peer and the token's public id or name when known, never the
token. At most one line per peer host and kind of refusal per ``REFUSALS_EVERY``
seconds, the next one counting those left out, so that a flood of bad calls
cannot flood the log.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from idgen_core.errors import IdGenError, PermissionDenied, Unauthenticated
from idgen_core.segment import MAX_COUNT, validate_biz_type
from idgen_server.auth import Authenticator, TokenNotCached
from idgen_server.quota import Quotas, peer_host
from idgen_server.tokens import Grant, token_id_of
from idgen_wire.auth import HEADER, SCHEME

__all__ = ["REFUSALS_EVERY", "Gate", "RefusalLog"]

log = logging.getLogger(__name__)

REFUSALS_EVERY = 60.0
"""Seconds between two log lines of the same peer host's refusals of the same kind."""
_MAX_PEERS = 256
_OTHERS = "other peers"


class RefusalLog:
    """Logs refused calls, rate-limited per peer host and kind (see the module notes).
    Thread-safe; its memory is bounded by ``max_peers`` (beyond it, peers share one line)."""

    def __init__(self, every: float = REFUSALS_EVERY, *, max_peers: int = _MAX_PEERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._max = max_peers
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # when logged, left out since

    def record(self, error: IdGenError, peer: str, *, token_id: str | None = None,
               token_name: str | None = None) -> None:
        """Log ``error``, refused to ``peer``, unless its host had one logged lately."""
        kind, host, now = type(error).__name__, peer_host(peer), self._clock()
        with self._lock:
            if (host, kind) not in self._last and len(self._last) >= self._max:
                self._last = {key: entry for key, entry in self._last.items()
                              if now - entry[0] < self._every}
                if len(self._last) >= self._max:
                    host = _OTHERS
            last = self._last.get((host, kind))
            if last is not None and now - last[0] < self._every:
                self._last[(host, kind)] = (last[0], last[1] + 1)
                return
            left_out = last[1] if last is not None else 0
            self._last[(host, kind)] = (now, 0)
        whose = f" (token {token_name or token_id})" if token_name or token_id else ""
        more = f"; {left_out} more refused since the last line" if left_out else ""
        log.warning("refused a call from %s%s: %s%s", peer, whose, error, more,
                    extra={"peer": peer, "refusal": kind, "token_id": token_id,
                           "token_name": token_name, "suppressed": left_out})


class Gate:
    """Authentication (``auth``, None: every call is let in) and quotas (None: none);
    refusals are logged to ``refusals``."""

    def __init__(self, auth: Authenticator | None = None, quotas: Quotas | None = None, *,
                 refusals: RefusalLog | None = None) -> None:
        self.auth = auth
        self.quotas = quotas if quotas is not None and quotas.enabled else None
        self.refusals = refusals if refusals is not None else RefusalLog()

    def identify(self, metadata: Iterable[tuple[str, str | bytes]],
                 peer: Callable[[], str] | None = None, *, read_early: bool = True) -> Grant | None:
        """The caller's grant (None where no token is needed); ``Unauthenticated`` if it has
        none (logged, with ``peer()``, asked only then). ``read_early=False``: never read a
        database (``TokenNotCached``, not logged, for a token to look up in a thread)."""
        if self.auth is None:
            return None
        try:
            return self.auth.identify(metadata, read_early=read_early)
        except TokenNotCached:
            raise
        except Unauthenticated as exc:
            self.refusals.record(exc, peer() if peer is not None else "unknown",
                                 token_id=_token_id(metadata))
            raise

    def admit(self, grant: Grant | None, peer: Callable[[], str], biz_type: str, ids: int = 0) -> None:
        """``PermissionDenied`` (logged) unless ``grant`` allows ``biz_type``; ``QuotaExceeded``
        if the caller (its token, else its host: ``peer()``, asked only then) is over quota."""
        if grant is not None:
            self._permit(grant, peer, validate_biz_type(biz_type))
        self._charge(grant, peer, ids)

    def admit_admin(self, grant: Grant | None, peer: Callable[[], str]) -> None:
        """``admit`` for the admin service: ``PermissionDenied`` (logged) unless ``grant``
        has the admin scope; then the call is charged to the caller's quota."""
        if grant is not None:
            self._permit(grant, peer, None, admin=True)
        self._charge(grant, peer, 0)

    def _permit(self, grant: Grant, peer: Callable[[], str], biz_type: str | None, *,
                admin: bool = False) -> None:
        try:
            Authenticator.permit(grant, biz_type, admin=admin)
        except PermissionDenied as exc:
            self.refusals.record(exc, peer(), token_id=grant.token_id, token_name=grant.name)
            raise

    def _charge(self, grant: Grant | None, peer: Callable[[], str], ids: int) -> None:
        if self.quotas is not None:
            ids = ids if 0 < ids <= MAX_COUNT else 0  # a bad count is the servicer's to refuse
            self.quotas.charge(grant.token_id if grant is not None else peer_host(peer()), ids)


def _token_id(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The public id of the token a call presented, if it is one at all (never the token)."""
    values = [value for key, value in metadata if key == HEADER]
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    scheme, _, token = values[0].partition(" ")
    return token_id_of(token.strip()) if scheme.lower() == SCHEME.lower() else None
