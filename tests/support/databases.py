"""Throwaway databases on the machine's real MariaDB and PostgreSQL servers.

Each call makes a fresh database with a random name and returns its SQLAlchemy
URL; ``drop_all()`` removes them. When a server is unreachable the caller
fails under ``CI=true`` and skips otherwise (see conftest).
"""
from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable
from typing import Any

MARIADB_HOST = os.environ.get("IDGEN_TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("IDGEN_TEST_MARIADB_PORT", "3306"))
POSTGRES_HOST = os.environ.get("IDGEN_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("IDGEN_TEST_POSTGRES_PORT", "5432"))


def mariadb_url(database: str, host: str = MARIADB_HOST, port: int = MARIADB_PORT) -> str:
    return f"mysql+pymysql://root@{host}:{port}/{database}"


def postgres_url(database: str, host: str = POSTGRES_HOST, port: int = POSTGRES_PORT) -> str:
    return f"postgresql+psycopg://postgres@{host}:{port}/{database}"


class _Server:
    """Creates databases on one server; drops them all at the end."""

    _create = _drop = ""  # statements with {name}
    _url: staticmethod

    def __init__(self, conn: object) -> None:
        self._conn = conn
        self._created: list[str] = []

    def _execute(self, statement: str) -> None:
        with self._conn.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(statement)

    def create(self) -> str:
        name = f"idgen_test_{uuid.uuid4().hex[:12]}"
        self._execute(self._create.format(name=name))
        self._created.append(name)
        return self._url(name)

    def drop_all(self) -> None:
        for name in self._created:
            self._execute(self._drop.format(name=name))
        self._conn.close()  # type: ignore[attr-defined]


class MariaDB(_Server):
    _create, _drop = "CREATE DATABASE `{name}`", "DROP DATABASE IF EXISTS `{name}`"
    _url = staticmethod(mariadb_url)

    def __init__(self) -> None:
        import pymysql

        super().__init__(pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root",
                                         password="", connect_timeout=5, autocommit=True))


class PostgreSQL(_Server):
    _create = 'CREATE DATABASE "{name}"'
    _drop = 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    _url = staticmethod(postgres_url)

    def __init__(self) -> None:
        import psycopg

        super().__init__(psycopg.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres",
                                         dbname="postgres", connect_timeout=5, autocommit=True))


KINDS = {"sqlite": None, "mariadb": "mariadb", "postgres": "postgres"}
"""The kinds of database idgen supports, and the mark of the tests that need each server."""


def database_kinds(*kinds: str) -> list[Any]:
    """Fixture parameters, one per kind, marked with the server each needs."""
    import pytest

    return [pytest.param(kind, marks=[getattr(pytest.mark, KINDS[kind])] if KINDS[kind] else [])
            for kind in kinds]


def database_maker(request: Any, kind: str, directory: os.PathLike[str]) -> Callable[[], str]:
    """Makes fresh, empty databases of one kind: each call returns a new one's URL.

    SQLite databases are files in ``directory``; the others are made on the session's
    server (the ``mariadb_server`` or ``postgres_server`` fixture, got from ``request``).
    """
    if kind == "sqlite":
        numbers = itertools.count()
        return lambda: f"sqlite:///{directory}/db{next(numbers)}.db"
    return request.getfixturevalue(f"{kind}_server").create
