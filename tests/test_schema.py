"""sql/*.sql, applied by hand, give the same table as the SQLAlchemy declaration."""
from __future__ import annotations

import pathlib

import pytest
from sqlalchemy import create_engine, inspect

from idgen_server.schema import lease_table, segment_table, token_table
from idgen_server.store import SegmentStore
from tests.support.databases import database_maker

SQL = pathlib.Path(__file__).resolve().parent.parent / "sql"


def statements(dialect: str) -> list[str]:
    """The script's statements, comments stripped, as a DBA's client would send them."""
    text = (SQL / f"{dialect}.sql").read_text()
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    return [s.strip() for s in code.split(";") if s.strip()]


def describe(engine, table=segment_table) -> list[tuple[str, str, bool]]:
    columns = inspect(engine).get_columns(table.name)
    pk = inspect(engine).get_pk_constraint(table.name)["constrained_columns"]
    unique = sorted(",".join(u["column_names"]) for u in inspect(engine).get_unique_constraints(table.name))
    # repr: the type with its length, charset and collation, as this dialect reflects it.
    return [(c["name"], repr(c["type"]), c["nullable"]) for c in columns] + [
        ("pk", ",".join(pk), False), ("unique", ";".join(unique), False)]


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mariadb),
                        pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_databases(request, tmp_path):
    """The dialect, and two fresh databases of it."""
    kind = {"sqlite": "sqlite", "mysql": "mariadb", "postgresql": "postgres"}[request.param]
    make = database_maker(request, kind, tmp_path)
    return request.param, [make(), make()]


def test_hand_applied_sql_matches_the_declared_table(two_databases):
    dialect, (by_hand, declared) = two_databases
    hand = create_engine(SegmentStore(by_hand).engine.url)
    with hand.begin() as conn:
        for statement in statements(dialect):
            conn.exec_driver_sql(statement)
    store = SegmentStore(declared)
    store.create_schema()
    for table in (segment_table, token_table, lease_table):
        assert describe(hand, table) == describe(store.engine, table)
        assert [c[0] for c in describe(hand, table)][:-2] == [c.name for c in table.columns]
    hand.dispose()
    store.close()


def test_a_hand_made_table_serves_ids(two_databases):
    dialect, (url, _) = two_databases
    store = SegmentStore(url)
    with store.engine.begin() as conn:
        for statement in statements(dialect):
            conn.exec_driver_sql(statement)
    store.register("order", step=5)
    assert list(store.allocate("order").ids()) == [1, 2, 3, 4, 5]
    store.close()
