"""What stops ``idgen serve`` at start-up (what will not fix itself), and what does not.

A setting that cannot work is one line on stderr, exit status 2, before anything
is served, and never shows a password. A database that is merely unreachable
does not stop the server: it serves the others and says so.
"""
from __future__ import annotations

import os

import pytest

from tests.support.cli import add_biz, idgen, init_db
from tests.support.databases import MARIADB_HOST, MARIADB_PORT, POSTGRES_HOST, POSTGRES_PORT
from tests.support.servers import free_port, taken_port

PASSWORD = "Sup3r-s3cret"


def refused(*args: str, cwd, listen: bool = True) -> str:
    """Run ``idgen serve ARGS``; it must exit 2 at once with one line. Returns the line."""
    result = idgen("serve", *(["--listen", "127.0.0.1:0"] if listen else []), *args, cwd=cwd,
                   timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "serving on" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    return errors[0]


@pytest.mark.mariadb
def test_a_wrong_password_stops_the_server_naming_the_database(mariadb_url, tmp_path):
    url = mariadb_url.replace("root@", f"root:{PASSWORD}@")
    line = refused("--db", url, cwd=tmp_path)
    assert "Access denied" in line and f"root:***@{MARIADB_HOST}:{MARIADB_PORT}" in line


@pytest.mark.mariadb
def test_an_unknown_mariadb_database_stops_the_server(mariadb_server, tmp_path):
    line = refused("--db", f"mysql://root:{PASSWORD.replace('-', '')}@{MARIADB_HOST}:"
                   f"{MARIADB_PORT}/no_such_db", cwd=tmp_path)
    assert "no_such_db" in line and ("Unknown database" in line or "Access denied" in line)


@pytest.mark.postgres
def test_an_unknown_postgres_database_stops_the_server(postgres_server, tmp_path):
    line = refused("--db", f"postgresql://postgres:{PASSWORD}@{POSTGRES_HOST}:{POSTGRES_PORT}"
                   "/no_such_db", cwd=tmp_path)
    assert 'database "no_such_db" does not exist' in line and "postgres:***@" in line


def test_a_file_that_is_not_a_database_stops_the_server(tmp_path):
    (tmp_path / "notes.db").write_text("not a database")
    line = refused("--db", f"sqlite:///{tmp_path}/notes.db", cwd=tmp_path)
    assert "the file is not a SQLite database" in line


def test_a_relative_data_directory_stops_the_server(tmp_path):
    result = idgen("serve", "--listen", "127.0.0.1:0", cwd=tmp_path,
                   env={**os.environ, "IDGEN_DATA_DIR": "data"})
    assert result.returncode == 2 and "IDGEN_DATA_DIR must be an absolute path" in result.stderr


def test_a_missing_sqlite_directory_stops_the_server(tmp_path):
    line = refused("--db", f"sqlite:///{tmp_path}/nowhere/idgen.db", cwd=tmp_path)
    assert f"its directory {tmp_path}/nowhere does not exist" in line


def test_a_missing_sqlite_file_stops_the_server_without_creating_it(tmp_path):
    line = refused("--db", "sqlite:///relative.db", cwd=tmp_path)
    assert f"SQLite database {tmp_path}/relative.db does not exist" in line
    assert not (tmp_path / "relative.db").exists()


@pytest.mark.mariadb
def test_a_database_without_the_table_stops_the_server(mariadb_url, tmp_path):
    line = refused("--db", mariadb_url, cwd=tmp_path)
    assert "has no idgen_segment table: run `idgen init-db" in line


@pytest.mark.parametrize("args, message", [
    (["--db", f"mysql://root:{PASSWORD}@{MARIADB_HOST}:{MARIADB_PORT}/test?colour=blue"],
     "the driver rejects its settings"),
    (["--db", f"postgresql://postgres:{PASSWORD}@{POSTGRES_HOST}:{POSTGRES_PORT}/x?colour=blue"],
     'invalid connection option "colour"'),
    (["--db", "sqlite:///x.db?colour=blue"], "not accepted by the pysqlite driver"),
    (["--db", f"mysql://root:{PASSWORD}/test"], "cannot be parsed"),  # no @
    (["--db", f"mysql://root:{PASSWORD}@x@{MARIADB_HOST}/test"], "percent-encode it as %40"),
    (["--db-timeout", "inf"], "db timeout must be more than 0"),
    (["--db-timeout", "nan"], "db timeout must be more than 0"),
    (["--db-timeout", "-1"], "db timeout must be more than 0"),
    (["--preload-at", "nan"], "preload_at must be in [0, 1)"),
    (["--db", f"mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/test?charset=nonsense"],
     "the driver rejects its settings"),
    (["--db", f"mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/test?ssl_ca=/no/such/ca.pem"],
     "the driver rejects its settings"),
    (["--db", f"mysql://root:{PASSWORD}@{MARIADB_HOST}:99999/test"], "not in 1..65535"),
    (["--db", f"mysql://root@{MARIADB_HOST}/a,mysql://u:{PASSWORD}@{MARIADB_HOST}/b"],
     "holds more than one URL"),
    (["--db", f"mysql://u:{PASSWORD}@t/pw:x?y@{MARIADB_HOST}/test"], "percent-encode it as %40"),
    (["--db", f"mysql://u:{PASSWORD}@zz:1234@{MARIADB_HOST}/test"], "percent-encode it as %40"),
    (["--listen", f"root:{PASSWORD}@127.0.0.1:50051"], "not HOST:PORT"),
])
def test_a_bad_setting_is_one_line_without_the_password(tmp_path, args, message):
    line = refused(*args, cwd=tmp_path)
    assert message in line, line


@pytest.mark.parametrize("content, message", [
    ("metrics_port = true", "metrics_port must be a whole number, not bool True"),
    ("workers = 2.5", "workers must be a whole number"),
    ("db_timeout = 'soon'", "db_timeout must be a number, not str"),
    ("listen = 50051", "listen must be HOST:PORT text"),
    ("grace = -1", "grace must be in"),
    (f'db = ["mysql://root:{PASSWORD}@{MARIADB_HOST}:{MARIADB_PORT}/test?colour=blue"]',
     "the driver rejects its settings"),
    ("db = [", "not valid TOML"),
])
def test_a_bad_config_file_value_is_one_line(tmp_path, content, message):
    config = tmp_path / "idgen.toml"
    config.write_text(content + "\n")
    line = refused("--config", str(config), cwd=tmp_path, listen="listen" not in content)
    assert message in line, line


def test_a_listen_port_in_use_is_one_line(tmp_path):
    with taken_port() as port:
        result = idgen("serve", "--listen", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"idgen: error: cannot listen on 127.0.0.1:{port}: address in use " \
                            "or not local\n"


def test_a_metrics_port_in_use_is_one_line(tmp_path):
    with taken_port() as port:
        line = refused("--metrics-port", str(port), cwd=tmp_path)
    assert "cannot serve metrics on 127.0.0.1:" in line


def test_an_unreachable_database_does_not_stop_the_server(tmp_path, start_server):
    good = f"sqlite:///{tmp_path}/good.db"
    init_db(good)
    add_biz("order", good)
    away = f"mysql://root:{PASSWORD}@127.0.0.1:{free_port()}/idgen"
    also = f"postgresql://idgen@127.0.0.1:{free_port()}/idgen?sslpassword={PASSWORD}"
    server = start_server([good, away, also], extra_args=["--db-timeout", "1"])
    output = "".join(server.output)
    assert "database 1 (db1): mysql+pymysql://root:***@127.0.0.1:" in output
    assert "database 2 (db2): postgresql+psycopg://idgen@127.0.0.1:" in output
    assert "sslpassword=***" in output
    assert "unreachable for now" in output and PASSWORD not in output


def test_every_setting_of_the_configuration_can_be_given_in_a_config_file():
    from dataclasses import fields

    from idgen_server.config import ServerConfig
    from idgen_server.defaults import CONFIG_KEYS

    settings = {f.name for f in fields(ServerConfig)} - {"db_urls", "embedded", "db_labels"} | {
        "db", "db_password_file"}
    assert set(CONFIG_KEYS) == settings
