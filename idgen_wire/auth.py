"""How a call carries its token: one home for the metadata both sides read and write."""
from __future__ import annotations

__all__ = ["HEADER", "SCHEME", "TOKEN_ENV", "bearer"]

HEADER = "authorization"
"""The metadata key (gRPC metadata keys are lower case)."""
SCHEME = "Bearer"
TOKEN_ENV = "IDGEN_TOKEN"
"""The environment variable clients and ``idgen next`` read a token from when given none."""


def bearer(token: str) -> tuple[str, str]:
    """The metadata entry that carries ``token``."""
    return HEADER, f"{SCHEME} {token}"
