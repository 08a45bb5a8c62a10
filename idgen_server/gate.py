"""What every call passes before it is served: its token, then its quota.

``IdGenService``'s handlers ask the gate first (``add_to_server``): the caller
is identified from its metadata before its request is even parsed, so a caller
without a valid token learns nothing, not even whether its bytes were a valid
request; then the parsed request's biz type is checked against the token's
grant, and the call and its IDs are charged to the caller's quota.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from idgen_core.segment import MAX_COUNT, validate_biz_type
from idgen_server.auth import Authenticator
from idgen_server.quota import Quotas, peer_host
from idgen_server.tokens import Grant

__all__ = ["Gate"]


class Gate:
    """Authentication (``auth``, None: every call is let in) and quotas (None: none)."""

    def __init__(self, auth: Authenticator | None = None, quotas: Quotas | None = None) -> None:
        self.auth = auth
        self.quotas = quotas if quotas is not None and quotas.enabled else None

    def identify(self, metadata: Iterable[tuple[str, str | bytes]]) -> Grant | None:
        """The caller's grant (None where no token is needed); ``Unauthenticated`` if it has none."""
        return None if self.auth is None else self.auth.identify(metadata)

    def admit(self, grant: Grant | None, peer: Callable[[], str], biz_type: str, ids: int = 0) -> None:
        """``PermissionDenied`` unless ``grant`` allows ``biz_type``; ``QuotaExceeded`` if the
        caller (its token, else its host: ``peer()``, asked only then) is over quota."""
        if grant is not None:
            Authenticator.permit(grant, validate_biz_type(biz_type))
        if self.quotas is not None:
            ids = ids if 0 < ids <= MAX_COUNT else 0  # a bad count is the servicer's to refuse
            self.quotas.charge(grant.token_id if grant is not None else peer_host(peer()), ids)
