"""Server addresses, as clients dial them and servers listen on them."""
from __future__ import annotations

from collections.abc import Sequence

from idgen_core.errors import ConfigError, safe_repr

__all__ = ["DEFAULT_ADDRESS", "parse_address", "parse_targets"]

DEFAULT_ADDRESS = "127.0.0.1:50051"
"""Where a server listens and a client dials when told nothing else: loopback only."""


def parse_targets(targets: str | Sequence[str], *, allow_port_0: bool = False) -> tuple[str, ...]:
    """``"a:1,b:2"`` or ``["a:1", "b:2"]`` -> ``("a:1", "b:2")``; raises ``ConfigError``.

    ``allow_port_0`` is for listen addresses, where 0 asks for any free port. A
    host with ``@`` or ``/`` in it is refused: that is a URL, which may hold a
    password, pasted where an address belongs.
    """
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    parsed = tuple(t.strip() for t in items if t.strip())
    if not parsed:
        raise ConfigError(f"no server address given: pass HOST:PORT, e.g. {DEFAULT_ADDRESS}")
    lowest = 0 if allow_port_0 else 1
    for target in parsed:
        host, sep, port = target.rpartition(":")
        if (not sep or not host or "@" in host or "/" in host or not port.isdigit()
                or not lowest <= int(port) < 65536):
            raise ConfigError(f"server address {safe_repr(target)} is not HOST:PORT")
    return parsed


def parse_address(address: str) -> str:
    """One listen address ``HOST:PORT`` (port 0: any free port); raises ``ConfigError``."""
    parsed = parse_targets(address, allow_port_0=True)
    if len(parsed) != 1:
        raise ConfigError(f"listen takes one HOST:PORT, got {len(parsed)} addresses")
    return parsed[0]
