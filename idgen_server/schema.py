"""The segment, token and lease tables, declared once.

These SQLAlchemy Core objects are the truth; ``sql/*.sql`` carry the same table
for DBAs who apply schema by hand, and tests/test_schema.py keeps them in step.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text, func
from sqlalchemy.dialects import mysql

__all__ = ["lease_table", "metadata", "segment_table", "token_table"]

metadata = MetaData()


def _ascii(length: int) -> String:
    """A name column compared byte for byte (MySQL's default collations fold case)."""
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="ascii", collation="ascii_bin"), "mysql", "mariadb")


segment_table = Table(
    "idgen_segment",
    metadata,
    # The ID space; validated by idgen_core.segment.validate_biz_type. Compared byte
    # for byte: MySQL's default collations would make 'Order' and 'order' one row.
    Column("biz_type", String(64).with_variant(
        mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"),
        primary_key=True),
    # The highest ID allocated so far: segments are (max_id, max_id + step].
    Column("max_id", BigInteger, nullable=False),
    # How many numbers one allocation claims (of which 1/delta become IDs).
    Column("step", BigInteger, nullable=False),
    # This database hands out only IDs with id % delta == remainder.
    Column("delta", Integer, nullable=False),
    Column("remainder", Integer, nullable=False),
    # The optimistic lock: every allocation is UPDATE ... WHERE version = :read.
    Column("version", BigInteger, nullable=False),
    # Shared by the rows of one registration across databases, so that rows registered
    # apart are recognised as such (idgen_server.rows). Empty on rows written by hand.
    Column("registration", String(32).with_variant(
        mysql.VARCHAR(32, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"),
        nullable=False, server_default=""),
    Column("created_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    Column("updated_at", DateTime, nullable=False, server_default=func.current_timestamp()),
)



token_table = Table(
    "idgen_token",
    metadata,
    # The public half of a token (``idgen_<token_id>_<secret>``): what `idgen token list`
    # shows and `revoke` takes. Looked up first, so the secret is compared in constant time.
    Column("token_id", String(16).with_variant(
        mysql.VARCHAR(16, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"), primary_key=True),
    Column("name", String(64).with_variant(
        mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"),
        nullable=False, unique=True),
    # SHA-256 of the whole token, hex. The token itself is never stored: it is 256 random
    # bits, so a fast hash is as good as a slow one against guessing.
    Column("secret_hash", String(64).with_variant(
        mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"), nullable=False),
    # The biz types it grants, comma-separated ('*' for every one).
    Column("biz_types", Text, nullable=False),
    # 1 if it also grants the admin scope (status and admin calls).
    Column("admin", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    # Set by `idgen token revoke`; a token revoked in any database is refused.
    Column("revoked_at", DateTime, nullable=True),
)

lease_table = Table(
    "idgen_lease",
    metadata,
    # A lease of a biz type (idgen_server.leases): a shard of chat groups that one process
    # at a time stamps. Kept in every database of the biz type; held on a majority.
    Column("biz_type", _ascii(64), primary_key=True),
    Column("name", _ascii(64), primary_key=True),
    # Who holds it: a random id its holder drew (idgen_client.lease); '' once released.
    Column("holder", _ascii(64), nullable=False),
    # The grant the holder got: grows with every new holder, never goes down.
    Column("epoch", BigInteger, nullable=False),
    # How long the holder asked to keep it, from its last renewal, in milliseconds.
    Column("ttl_ms", BigInteger, nullable=False),
    # The optimistic lock: every grant, renewal and release is UPDATE ... WHERE version = :read.
    Column("version", BigInteger, nullable=False),
    # For people only: no server compares clocks, only versions.
    Column("updated_at", DateTime, nullable=False, server_default=func.current_timestamp()),
)
