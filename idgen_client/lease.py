"""A lease, held through idgen servers and renewed in the background.

The messages of a shard of chat groups are stamped by one process at a time:
the holder of the shard's lease (``Sequencer(..., lease=lease)``). The servers
keep leases in the biz type's databases (``idgen_server.leases``); a grant
carries an *epoch*, higher for every new holder, which every ``Stamp`` carries
so that a message store can refuse a stale owner's writes.

The holder's count. A grant is counted from before the request was sent:
held until ``sent + ttl * (1 - CLOCK_DRIFT) - margin`` on this process's
monotonic clock, renewed every ``ttl / 3``. A renewal that fails is retried
until then; after that, the lease is lost (``Sequencer.stamp`` raises
``NotOwner``) and asked for anew, under a new epoch. A contender is granted the
lease only after seeing it unrenewed for ``ttl * (1 + CLOCK_DRIFT)``, so
nothing here needs clocks of two machines to agree (``idgen_core.leases``).
Closing releases the lease, so a new owner takes over at once.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence

from idgen_client.remote import RemoteClient
from idgen_core.errors import (
    ConfigError,
    IdGenError,
    InvalidRequest,
    PermissionDenied,
    Unauthenticated,
    UnknownBizType,
    fresh,
)
from idgen_core.leases import (
    MAX_TTL_MS,
    MIN_TTL_MS,
    holder_seconds,
    validate_lease_name,
    validate_ttl_ms,
)
from idgen_core.segment import validate_biz_type
from idgen_wire.address import DEFAULT_ADDRESS

__all__ = ["DEFAULT_TTL", "Lease", "Term"]

log = logging.getLogger(__name__)

DEFAULT_TTL = 10.0
"""Seconds a lease lasts after a renewal: how long a crashed owner's groups wait."""

Term = tuple[int, float]
"""``(epoch, until)``: stamping under ``epoch`` is allowed while ``clock() < until``."""
_NOT_HELD: Term = (0, float("-inf"))
_PERMANENT = (UnknownBizType, InvalidRequest, Unauthenticated, PermissionDenied)


class Lease:
    """The lease ``name`` of ``biz_type``, asked for at once and kept until closed.

    Give it server addresses, or a ``RemoteClient`` to share (which it then
    leaves open). Thread-safe; a context manager. A thread (``idgen-lease-NAME``) asks for it
    until granted and renews it every ``ttl / 3``. ``margin`` (default
    ``ttl / 10``) is how long before its count runs out the lease is given up:
    time for a stamp to be used once checked. ``wait()`` blocks until it is held.
    """

    def __init__(self, biz_type: str, name: str,
                 targets: str | Sequence[str] | RemoteClient = DEFAULT_ADDRESS, *,
                 ttl: float = DEFAULT_TTL, margin: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        validate_biz_type(biz_type)
        validate_lease_name(name)
        try:
            self._ttl_ms = validate_ttl_ms(round(ttl * 1000))
        except (IdGenError, TypeError, ValueError, OverflowError):
            raise ConfigError(f"ttl must be {MIN_TTL_MS / 1000:g} to {MAX_TTL_MS / 1000:g} "
                              f"seconds, got {ttl!r}") from None
        margin = ttl / 10 if margin is None else margin
        if not 0 <= margin < holder_seconds(self._ttl_ms) / 2:
            raise ConfigError(f"margin must be at least 0 and under half the ttl, got {margin}")
        self.biz_type = biz_type
        self.name = name
        self.clock = clock
        """The clock ``term`` is counted on."""
        if isinstance(targets, RemoteClient):
            self._client, self._owns_client = targets, False
        else:  # token and TLS from the environment, as RemoteClient reads them
            self._client, self._owns_client = RemoteClient(targets), True
        self._margin = margin
        self._holder = secrets.token_hex(8)
        self.term: Term = _NOT_HELD
        """``(epoch, until)`` of the grant held, or ``(0, -inf)``; read-only. A plain attribute,
        replaced whole by the lease's thread: a stamp reads it in one step (a property's call
        cost a fifth of a stamp in the benchmark)."""
        self._granted = threading.Event()
        self._closed = threading.Event()
        self._last_epoch = 0  # the newest grant, released on close
        self.failure: IdGenError | None = None
        """Why the last request for the lease failed (None once granted): what ``NotOwner``
        and ``wait()`` report."""
        self._thread = threading.Thread(target=self._run, name=f"idgen-lease-{name}", daemon=True)
        self._thread.start()

    # -- what the sequencer reads ---------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch held now, 0 if the lease is not held."""
        epoch, until = self.term
        return epoch if self.clock() < until else 0

    def held(self) -> bool:
        """Whether the lease is held now (with the margin to spare)."""
        return self.epoch != 0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the lease is held (True) or ``timeout`` seconds passed (False).
        Raises at once what no retry can fix: ``UnknownBizType`` (the biz type is not
        registered), ``InvalidRequest``, ``Unauthenticated``, ``PermissionDenied``."""
        deadline = None if timeout is None else self.clock() + timeout
        while not self.held():
            if isinstance(self.failure, _PERMANENT):
                raise fresh(self.failure)
            left = None if deadline is None else deadline - self.clock()
            if self._closed.is_set() or left is not None and left <= 0:
                return False
            self._granted.wait(0.05 if left is None else min(left, 0.05))
        return True

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        ttl = self._ttl_ms / 1000
        failing = False
        while not self._closed.is_set():
            epoch, until = self.term
            if epoch and self.clock() >= until:
                self.term = _NOT_HELD
                self._granted.clear()
                log.warning("lost the lease %r of %r (epoch %d): it was not renewed in time; "
                            "asking for it again", self.name, self.biz_type, epoch,
                            extra={"lease": self.name, "biz_type": self.biz_type, "epoch": epoch})
                epoch = 0
            sent = self.clock()
            try:
                reply = self._client.acquire_lease(self.biz_type, self.name, self._holder,
                                                   self._ttl_ms, epoch, timeout=ttl / 3)
            except Exception as exc:  # an IdGenError, or a bug: the lease must not stop for good
                if not isinstance(exc, IdGenError):
                    log.exception("asking for the lease %r of %r failed", self.name, self.biz_type)
                    exc = IdGenError(f"asking for the lease failed: {type(exc).__name__}")
                self.failure = exc
                if not failing:
                    log.warning("cannot %s the lease %r of %r: %s", "renew" if epoch else "get",
                                self.name, self.biz_type, exc)
                failing = True
                self._closed.wait(min(ttl / 10, 1.0) if isinstance(exc, _PERMANENT) else ttl / 10)
                continue
            failing = False
            self.failure = None
            if not reply.granted:
                self._closed.wait(min(reply.retry_after_ms / 1000, ttl / 3) or ttl / 10)
                continue
            self._last_epoch = reply.epoch
            if self._closed.is_set():
                break  # granted while closing: close() releases it
            if reply.epoch != epoch:
                log.info("holding the lease %r of %r, epoch %d", self.name, self.biz_type,
                         reply.epoch, extra={"lease": self.name, "biz_type": self.biz_type,
                                             "epoch": reply.epoch})
            self.term = (reply.epoch, sent + holder_seconds(self._ttl_ms) - self._margin)
            self._granted.set()
            self._closed.wait(max(0.0, sent + ttl / 3 - self.clock()))

    # -- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop renewing; then, nothing being stamped under it any more, release it."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join()
        self.term = _NOT_HELD  # from here on, stamp() raises NotOwner
        self._granted.clear()
        if self._last_epoch:
            try:
                self._client.release_lease(self.biz_type, self.name, self._holder,
                                           self._last_epoch, timeout=self._ttl_ms / 3000)
            except IdGenError as exc:  # it expires by itself
                log.warning("could not release the lease %r of %r (%s): it expires by itself",
                            self.name, self.biz_type, exc)
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lease({self.biz_type!r}, {self.name!r}, epoch {self.epoch})"
