"""Throwaway databases on the machine's real MariaDB and PostgreSQL servers.

Each call makes a fresh database with a random name and returns its SQLAlchemy
URL; ``drop_all()`` removes them. When a server is unreachable the caller
fails under ``CI=true`` and skips otherwise (see conftest).
"""
from __future__ import annotations

import os
import uuid

MARIADB_HOST = os.environ.get("IDGEN_TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("IDGEN_TEST_MARIADB_PORT", "3306"))
POSTGRES_HOST = os.environ.get("IDGEN_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("IDGEN_TEST_POSTGRES_PORT", "5432"))


def mariadb_url(database: str, host: str = MARIADB_HOST, port: int = MARIADB_PORT) -> str:
    return f"mysql+pymysql://root@{host}:{port}/{database}"


def postgres_url(database: str, host: str = POSTGRES_HOST, port: int = POSTGRES_PORT) -> str:
    return f"postgresql+psycopg://postgres@{host}:{port}/{database}"


class MariaDB:
    """Creates databases on the MariaDB server; drops them all at the end."""

    def __init__(self) -> None:
        import pymysql

        self._conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root",
                                     password="", connect_timeout=5, autocommit=True)
        self._created: list[str] = []

    def create(self) -> str:
        name = f"idgen_test_{uuid.uuid4().hex[:12]}"
        with self._conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        self._created.append(name)
        return mariadb_url(name)

    def drop_all(self) -> None:
        with self._conn.cursor() as cur:
            for name in self._created:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        self._conn.close()


class PostgreSQL:
    """Creates databases on the PostgreSQL server; drops them all at the end."""

    def __init__(self) -> None:
        import psycopg

        self._conn = psycopg.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres",
                                     dbname="postgres", connect_timeout=5, autocommit=True)
        self._created: list[str] = []

    def create(self) -> str:
        name = f"idgen_test_{uuid.uuid4().hex[:12]}"
        with self._conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return postgres_url(name)

    def drop_all(self) -> None:
        with self._conn.cursor() as cur:
            for name in self._created:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._conn.close()
