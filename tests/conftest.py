"""Fixtures: real databases (fail, never skip, under CI=true), servers, thread hygiene."""
from __future__ import annotations

import os
import pathlib
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.support.databases import MariaDB, PostgreSQL, database_kinds, database_maker
from tests.support.galera import GaleraCluster, galera_missing
from tests.support.pgcluster import PostgresPair, postgres_tools_missing
from tests.support.servers import ServerProcess
from tests.support.waiting import wait_until

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unreachable(what: str, exc: BaseException) -> None:
    message = f"{what} is unreachable ({exc}); start it (see .ci/services)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDB]:
    try:
        server = MariaDB()
    except Exception as exc:  # pymysql raises several types for a dead server
        _unreachable("MariaDB on 127.0.0.1:3306", exc)
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgreSQL]:
    try:
        server = PostgreSQL()
    except Exception as exc:
        _unreachable("PostgreSQL on 127.0.0.1:5432", exc)
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def galera() -> Iterator[GaleraCluster]:
    """A 3-node Galera cluster on loopback ports, started for the session's Galera tests."""
    missing = galera_missing()
    if missing is not None:
        _unreachable("a Galera cluster", RuntimeError(f"this machine lacks {missing}"))
    cluster = GaleraCluster()
    try:
        cluster.start()
    except Exception as exc:
        cluster.close()
        _unreachable("a Galera cluster", exc)
    yield cluster
    cluster.close()


def _postgres_pair(synchronous: bool) -> Iterator[PostgresPair]:
    missing = postgres_tools_missing()
    if missing is not None:
        _unreachable("a PostgreSQL primary and standby", RuntimeError(f"this machine lacks {missing}"))
    pair = PostgresPair(synchronous=synchronous)
    try:
        pair.start()
    except Exception as exc:
        pair.close()
        _unreachable("a PostgreSQL primary and standby", exc)
    yield pair
    pair.close()


@pytest.fixture
def synchronous_pair() -> Iterator[PostgresPair]:
    """A PostgreSQL primary and a synchronous streaming standby, for this test."""
    yield from _postgres_pair(True)


@pytest.fixture
def asynchronous_pair() -> Iterator[PostgresPair]:
    """A PostgreSQL primary and an asynchronous streaming standby, for this test."""
    yield from _postgres_pair(False)


@pytest.fixture
def mariadb_url(mariadb_server: MariaDB) -> str:
    """A fresh, empty MariaDB database for this test."""
    return mariadb_server.create()


@pytest.fixture
def make_mariadb(mariadb_server: MariaDB) -> Callable[[], str]:
    """Makes fresh MariaDB databases (for multi-DB tests)."""
    return mariadb_server.create


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{tmp_path}/idgen.db"


@pytest.fixture(params=database_kinds("sqlite", "mariadb", "postgres"))
def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """A fresh database of each kind idgen supports."""
    return database_maker(request, request.param, tmp_path)()


@pytest.fixture
def start_server(tmp_path: os.PathLike[str]) -> Iterator[Callable[..., ServerProcess]]:
    """Starts real ``idgen serve`` processes; stops them after the test."""
    started: list[ServerProcess] = []

    def start(db_urls: list[str], **kwargs: object) -> ServerProcess:
        kwargs.setdefault("cwd", str(tmp_path))
        server = ServerProcess(db_urls, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def data_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """The embedded database's directory, this test's own (servers inherit it)."""
    path = tmp_path / "data"
    monkeypatch.setenv("IDGEN_DATA_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def no_idgen_thread_outlives_its_test() -> Iterator[None]:
    """Every background thread idgen starts is stopped by its owner's close()."""
    before = set(threading.enumerate())
    yield

    def leaked() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t not in before and t.name.startswith("idgen-") and t.is_alive()]

    wait_until(lambda: not leaked(), 10,
               lambda: f"idgen's threads to end; threads outlived the test: {leaked()}")
