"""The errors idgen raises, on the server and in the client alike.

Each error is mapped to one gRPC status code (``idgen_wire.status``); the
client turns a status back into the same exception, so code that catches
``UnknownBizType`` works whether the ID came from a local generator or a remote
call. Messages say what happened and what to do about it; they never carry SQL
or stack traces.
"""
from __future__ import annotations

__all__ = [
    "IdGenError",
    "InvalidRequest",
    "UnknownBizType",
    "BizTypeMisconfigured",
    "BizTypeConflict",
    "BizTypeMoving",
    "ServiceUnavailable",
    "StorageUnavailable",
    "IdSpaceExhausted",
    "Unauthenticated",
    "PermissionDenied",
    "QuotaExceeded",
    "NotOwner",
    "ConfigError",
    "fresh",
    "safe_repr",
]


class IdGenError(Exception):
    """Base class of every error idgen raises on purpose."""


class InvalidRequest(IdGenError, ValueError):
    """The request itself is wrong (a malformed biz type, a count out of range)."""


class UnknownBizType(IdGenError, LookupError):
    """The biz type is not registered in any reachable database."""


class BizTypeMisconfigured(IdGenError):
    """The biz type's rows cannot be served safely: a row is damaged (a negative
    ``max_id``, a ``step`` or ``delta`` below 1, a ``remainder`` outside
    ``[0, delta)``), or the rows of its databases do not form one set of distinct
    residue classes (registered apart, or edited by hand). Nothing is handed out
    for it until an operator repairs the rows; service then resumes by itself.
    """


class BizTypeConflict(BizTypeMisconfigured):
    """A biz type is already registered with different settings."""


class ServiceUnavailable(IdGenError):
    """No ID can be had right now: retry later; IDs already received stay valid."""


class StorageUnavailable(ServiceUnavailable):
    """No database could be reached and nothing was buffered."""


class BizTypeMoving(BizTypeMisconfigured, ServiceUnavailable):
    """``idgen add-db`` has frozen the biz type's rows while it moves them to another set of
    databases: no segment is cut until the move is done, which takes moments (unless the
    command stopped halfway: then it must be run again). A pause, not damage: buffers wait
    it out within ``PAUSE_WAIT`` (``idgen_core.pair``), clients retry it, and it crosses the
    wire as ``UNAVAILABLE``. Code that refuses rows catches it as ``BizTypeMisconfigured``."""


class IdSpaceExhausted(IdGenError):
    """The biz type has used up the int64 range: no ID above 2^63-1 is ever made."""


class Unauthenticated(IdGenError):
    """The server needs a token and the call had none, or one it does not know (unknown
    or revoked). The message never quotes the token."""


class PermissionDenied(IdGenError):
    """The token is valid but does not grant this biz type (or the admin scope)."""


class QuotaExceeded(IdGenError):
    """The caller went over its quota of calls or IDs per second: retry after
    ``retry_after`` seconds. Not the int64 range running out (``IdSpaceExhausted``)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return str(self.args[0])


class NotOwner(IdGenError):
    """This process does not hold the lease of the groups it was asked to stamp (never
    had it yet, or may have lost it): send the message through the groups' owner, or
    retry once the lease is held. Raised by the sequencer; never sent over the wire."""


class ConfigError(IdGenError, ValueError):
    """A setting is wrong (a flag, a config file value, a database URL, a password):
    a person has to change it. Raised before anything is served; never sent over
    the wire."""


def fresh(error: IdGenError) -> IdGenError:
    """A new exception of the same class and message, without traceback or context: to
    raise once per caller (tracebacks are per raise), or to keep without keeping alive
    the frames the original passed through."""
    return type(error)(*error.args)


def safe_repr(value: object) -> str:
    """``repr(value)`` for a message, unless it is text that looks like a URL: a URL given
    where something else was expected may hold a password, so only its scheme shows."""
    if isinstance(value, str) and "://" in value:
        return f"{value.partition('://')[0][:20]!r}... (a URL?)"
    if isinstance(value, str) and "@" in value:
        return repr("***@" + value.rpartition("@")[2][:40])
    return repr(value)
