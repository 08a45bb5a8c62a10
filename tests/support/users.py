"""A MariaDB user with a real password, for tests that a password never shows."""
from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.databases import MARIADB_HOST, MARIADB_PORT, MariaDB

__all__ = ["DbUser", "database_user"]


@dataclass(frozen=True)
class DbUser:
    """A MariaDB database and a user with a password who may use it."""

    url: str
    """``mysql://USER@HOST:PORT/DATABASE``: no password in it."""
    password: str
    database: str

    def forms(self) -> list[str]:
        """The password as it could show: as typed, and percent-encoded in a URL."""
        return [self.password, urllib.parse.quote(self.password, safe=""),
                urllib.parse.quote_plus(self.password)]


@contextmanager
def database_user(mariadb_server: MariaDB) -> Iterator[DbUser]:
    """A fresh database, and a fresh user (dropped on the way out) with a password, holding
    characters a URL must encode, who may use that database only."""
    import pymysql

    database = mariadb_server.create().rpartition("/")[2]
    user = f"idgen_t_{secrets.token_hex(4)}"
    password = f"{secrets.token_urlsafe(12)}@:/%#"
    root = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", password="",
                           connect_timeout=5, autocommit=True)
    try:
        with root.cursor() as cursor:
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cursor.execute(f"GRANT ALL ON `{database}`.* TO %s@'%%'", (user,))
        yield DbUser(f"mysql://{user}@{MARIADB_HOST}:{MARIADB_PORT}/{database}", password, database)
    finally:
        with root.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        root.close()
