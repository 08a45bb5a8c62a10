"""Secrets: database passwords kept out of argv and output, databases from files and the
environment, and database labels.

Every command that touches a database (``init-db``, ``add-biz``, ``token create|list|revoke``,
``serve``) finds its databases as ``serve`` does (``--db``, ``IDGEN_DB``, ``--config`` TOML
``db = [...]``) and takes the password of a URL that names a user but none from
``--db-password-file``, ``IDGEN_DB_PASSWORD_FILE`` or TOML ``db_password_file``. Real
``idgen`` processes; a real MariaDB user with a real password.
"""
from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from idgen_client import RemoteClient
from tests.support.cli import idgen
from tests.support.databases import MariaDB
from tests.support.users import DbUser, database_user


@pytest.fixture
def db_user(mariadb_server: MariaDB) -> Iterator[DbUser]:
    with database_user(mariadb_server) as user:
        yield user


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def toml_list(entries: list[str]) -> str:
    return "[" + ", ".join(f'"{e}"' for e in entries) + "]"


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without any idgen setting, plus ``variables``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("IDGEN_") or k == "IDGEN_DATA_DIR"}
    return {**base, **variables}


SOURCES = ["flags", "environment", "config file", "config file and password flag"]


def database_settings(source: str, user: DbUser, directory: Path) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment that give a command ``user``'s database (labelled
    ``main`` where a label can be given) and its password file, from ``source``."""
    password_file = write(directory / "db-password", user.password + "\n")
    entry = f"main={user.url}"
    if source == "flags":
        return ["--db", user.url, "--db-password-file", password_file], environment()
    if source == "environment":
        return [], environment(IDGEN_DB=entry, IDGEN_DB_PASSWORD_FILE=password_file)
    if source == "config file":
        config = write(directory / "idgen.toml",
                       f'db = {toml_list([entry])}\ndb_password_file = "{password_file}"\n')
        return ["--config", config], environment()
    config = write(directory / "idgen.toml", f"db = {toml_list([entry])}\n")
    return ["--config", config, "--db-password-file", password_file], environment()


def succeeds(user: DbUser, *command: str, env: dict[str, str]) -> str:
    """Run ``idgen COMMAND``, which must succeed, with no password in its argv or output;
    its stdout."""
    assert not [form for form in user.forms() if any(form in arg for arg in command)]
    result = idgen(*command, env=env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert [form for form in user.forms() if form in output] == [], "the password was printed"
    return result.stdout


def command_lines() -> Iterator[tuple[int, list[str]]]:
    """The argv of every process on this machine that can be read."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:  # ended meanwhile, or not ours to read
                continue
            yield int(entry), raw.decode(errors="replace").split("\0")


# --- databases and passwords from files and the environment -----------------------------------

@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_every_database_command_takes_the_database_and_its_password_file_from(
        db_user, tmp_path, start_server, source):
    args, env = database_settings(source, db_user, tmp_path)
    succeeds(db_user, "init-db", *args, env=env)
    succeeds(db_user, "add-biz", "orders", *args, env=env)
    token = succeeds(db_user, "token", "create", "--biz", "orders", "--name", "app", *args,
                     env=env).strip()
    assert "app" in succeeds(db_user, "token", "list", *args, env=env)

    server = start_server([], extra_args=args, env=env)
    argv = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode()
    assert "serve" in argv and [f for f in db_user.forms() if f in argv] == []
    holding = [pid for pid, line in command_lines()
               if any(form in arg for arg in line for form in db_user.forms())]
    assert holding == [], "no process on this machine has the password in its argv"
    with RemoteClient(server.address, token=token) as client:
        assert len(set(client.next_ids("orders", 3))) == 3
    assert [f for f in db_user.forms() if f in "".join(server.output)] == []
    assert db_user.database in "".join(server.output)  # the database is named, its password not
    if source != "flags":  # given as main=URL
        assert "idgen: database 0 (main): mysql+pymysql://" in "".join(server.output)

    assert "revoked app" in succeeds(db_user, "token", "revoke", "app", *args, env=env)
    listing = succeeds(db_user, "token", "list", *args, env=env)
    row = next(line for line in listing.splitlines() if " app " in f" {line} ")
    assert row.split()[-2] != "-", f"the token is listed as revoked: {row}"


@pytest.mark.mariadb
def test_a_url_without_its_password_and_no_password_file_is_refused(db_user):
    result = idgen("init-db", "--db", db_user.url, env=environment())
    assert result.returncode == 2
    assert "Access denied" in result.stderr and db_user.database in result.stderr


# --- passwords never in output ----------------------------------------------------------------

COMMANDS = {
    "init-db": ["init-db"],
    "add-biz": ["add-biz", "orders"],
    "token create": ["token", "create", "--biz", "orders"],
    "token list": ["token", "list"],
    "token revoke": ["token", "revoke", "app"],
    "serve": ["serve", "--listen", "127.0.0.1:0"],
}


@pytest.fixture(scope="module")
def wrong_password(mariadb_server: MariaDB, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[DbUser, Callable[[str], tuple[int, str]]]]:
    """A database user, and a function that runs a command of ``COMMANDS`` (once; later
    calls get the first run's result) on its database with a wrong password file, giving
    its exit status and output (stdout and stderr). The wrong password shares every
    character of the right one."""
    with database_user(mariadb_server) as user:
        password_file = write(tmp_path_factory.mktemp("wrong") / "password", f"wrong-{user.password}\n")
        runs: dict[str, tuple[int, str]] = {}

        def run(command: str) -> tuple[int, str]:
            if command not in runs:
                result = idgen(*COMMANDS[command], "--db", user.url, "--db-password-file",
                               password_file, env=environment(), timeout=60)  # serve: stops at once
                runs[command] = result.returncode, result.stdout + result.stderr
            return runs[command]

        yield user, run


@pytest.mark.mariadb
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_wrong_password_is_never_shown(wrong_password, command):
    user, run = wrong_password
    status, output = run(command)
    assert status != 0
    assert user.database in output, "the database is named"
    wrong = f"wrong-{user.password}"
    shown = [form for form in [*user.forms(), wrong, urllib.parse.quote(wrong, safe="")]
             if form in output]
    assert shown == [], output


@pytest.mark.mariadb
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_wrong_password_stops_the_command_with_exit_2_and_one_line(wrong_password, command):
    status, output = wrong_password[1](command)
    assert status == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("idgen: error: "), output
    assert "Access denied" in lines[0]


UNUSED_URL = "mysql://idgen@127.0.0.1:1/idgen"
"""A URL naming a user but no password; the password file is refused before it is used."""


@pytest.mark.parametrize("command", ["init-db", "token list", "serve"])
def test_a_missing_password_file_is_refused_naming_it(tmp_path, command):
    missing = str(tmp_path / "no-such-file")
    result = idgen(*COMMANDS[command], "--db", UNUSED_URL, "--db-password-file", missing,
                   env=environment(), timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"idgen: error: cannot read the database password file {missing}: No such file or directory"]


@pytest.mark.parametrize("how", ["flag", "environment", "config file"])
def test_an_empty_password_file_is_refused_naming_it(tmp_path, how):
    empty = write(tmp_path / "empty", "")
    if how == "flag":
        args, env = ["--db", UNUSED_URL, "--db-password-file", empty], environment()
    elif how == "environment":
        args, env = [], environment(IDGEN_DB=UNUSED_URL, IDGEN_DB_PASSWORD_FILE=empty)
    else:
        config = write(tmp_path / "idgen.toml",
                       f'db = {toml_list([UNUSED_URL])}\ndb_password_file = "{empty}"\n')
        args, env = ["--config", config], environment()
    result = idgen("init-db", *args, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"idgen: error: the database password file {empty} is empty"]


# --- labels ---------------------------------------------------------------------------------

def two_sqlite(directory: Path) -> list[str]:
    return [f"sqlite:///{directory}/first.db", f"sqlite:///{directory}/second.db"]


@pytest.mark.parametrize("how", ["flags", "environment", "config file"])
@pytest.mark.parametrize("command", ["serve", "init-db"])
def test_two_databases_with_one_label_are_refused(tmp_path, how, command):
    entries = [f"twin={url}" for url in two_sqlite(tmp_path)]
    if how == "flags":
        args, env = [a for e in entries for a in ("--db", e)], environment()
    elif how == "environment":
        args, env = [], environment(IDGEN_DB=",".join(entries))
    else:
        args = ["--config", write(tmp_path / "idgen.toml", f"db = {toml_list(entries)}\n")]
        env = environment()
    extra = ["--listen", "127.0.0.1:0"] if command == "serve" else []
    result = idgen(command, *extra, *args, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "idgen: error: two databases are labelled 'twin': give each its own label"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["environment", "config file"])
def test_labels_given_in_idgen_db_or_the_config_file_name_the_databases(tmp_path, start_server, how):
    entries = [f"{label}={url}" for label, url in zip(("east", "west"), two_sqlite(tmp_path),
                                                      strict=True)]
    if how == "environment":
        args, env = [], environment(IDGEN_DB=",".join(entries))
    else:
        args = ["--config", write(tmp_path / "idgen.toml", f"db = {toml_list(entries)}\n")]
        env = environment()
    for command in (["init-db"], ["add-biz", "orders"]):
        result = idgen(*command, *args, env=env)
        assert result.returncode == 0, result.stderr
    server = start_server([], extra_args=args, env=env)
    output = "".join(server.output)
    assert "idgen: database 0 (east): sqlite:///" in output
    assert "idgen: database 1 (west): sqlite:///" in output
    with RemoteClient(server.address) as client:
        ids = [i for _ in range(10) for i in client.next_ids("orders", 5)]
    assert len(set(ids)) == 50
