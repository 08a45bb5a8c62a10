"""The segment table, declared once.

These SQLAlchemy Core objects are the truth; ``sql/*.sql`` carry the same table
for DBAs who apply schema by hand, and tests/test_schema.py keeps them in step.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, func
from sqlalchemy.dialects import mysql

__all__ = ["metadata", "segment_table"]

metadata = MetaData()

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
