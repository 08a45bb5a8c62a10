"""The `idgen` command as a new user meets it."""
from __future__ import annotations

import signal
import sqlite3

import pytest

from tests.support.cli import add_biz, db_args, idgen, init_db
from tests.support.stores import read_row
from tests.support.waiting import wait_until


def test_serve_with_no_setup_then_next_prints_five_increasing_ids(tmp_path, data_dir,
                                                                  start_server):
    server = start_server([], cwd=str(tmp_path))  # no --db: the embedded database
    result = idgen("next", "default", "--count", "5", "--target", server.address)
    assert result.returncode == 0, result.stderr
    ids = [int(line) for line in result.stdout.split()]
    assert len(ids) == 5 and ids == sorted(set(ids))
    assert (data_dir / "idgen.db").exists() and not (tmp_path / "idgen.db").exists()
    assert f"database 0 (db0): sqlite:///{data_dir}/idgen.db (embedded)" in "".join(server.output)


def test_environment_variables_configure_the_server(tmp_path, start_server, monkeypatch):
    url = f"sqlite:///{tmp_path}/env.db"
    init_db(url)
    add_biz("env", url)
    server = start_server([], listen="", env={"IDGEN_DB": url, "IDGEN_LISTEN": "127.0.0.1:0"})
    result = idgen("next", "env", "--target", server.address)
    assert result.returncode == 0 and int(result.stdout) == 1


def test_init_db_twice_is_harmless(sqlite_url):
    for _ in range(2):
        result = idgen("init-db", "--db", sqlite_url)
        assert result.returncode == 0 and "schema ready" in result.stdout


def test_add_biz_over_two_dbs_gives_each_its_residue_class(tmp_path):
    urls = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    args = db_args(urls)
    assert idgen("init-db", *args).returncode == 0
    first = idgen("add-biz", "order", "--step", "100", *args)
    again = idgen("add-biz", "order", "--step", "100", *args)
    assert first.returncode == again.returncode == 0
    assert "already registered" in again.stdout
    rows = [read_row(u, "order") for u in urls]
    assert [(r.delta, r.remainder, r.step) for r in rows] == [(2, 0, 100), (2, 1, 100)]


def test_add_biz_with_conflicting_arguments_says_what_conflicts(sqlite_url):
    init_db(sqlite_url)
    add_biz("order", sqlite_url, step=100)
    result = idgen("add-biz", "order", "--step", "500", "--db", sqlite_url)
    assert result.returncode == 1
    assert "with step 100, not 500" in result.stderr and "idgen set-step order 500" in result.stderr


def test_a_biz_type_added_while_the_server_runs_is_served_without_restart(sqlite_url,
                                                                          start_server):
    init_db(sqlite_url)
    server = start_server([sqlite_url])
    before = idgen("next", "late", "--target", server.address)
    assert before.returncode == 1 and "not registered" in before.stderr
    add_biz("late", sqlite_url)

    def served():
        result = idgen("next", "late", "--target", server.address)
        return result if result.returncode == 0 else None

    # The server remembers an unknown name for at most a second.
    after = wait_until(served, 30, "the server to serve 'late'")
    assert after.returncode == 0 and int(after.stdout) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_server_stops_gracefully_on_signals(sig, start_server):
    server = start_server([])
    server.proc.send_signal(sig)
    assert server.proc.wait(15) == 0
    assert any("stopping" in line for line in server.output)


def test_serve_refuses_a_database_without_the_table(sqlite_url, start_server):
    sqlite3.connect(sqlite_url.removeprefix("sqlite:///")).close()  # an empty database file
    with pytest.raises(RuntimeError, match="no idgen_segment table: run `idgen init-db"):
        start_server([sqlite_url])


@pytest.mark.parametrize("args,message", [
    (["next", "default", "--count", "0"], "between 1 and 100000"),
    (["next", "bad name"], "characters outside"),
    (["add-biz", "x" * 65, "--db", "sqlite:///x.db"], "at most 64"),
    (["add-biz", "order", "--step", "0", "--db", "sqlite:///x.db"], "between 1 and"),
    (["next", "default", "--target", "nowhere"], "not HOST:PORT"),
    (["serve", "--listen", "localhost"], "not HOST:PORT"),
    (["init-db", "--db", "nosuchdriver://x/y"], "is not usable"),
])
def test_bad_arguments_exit_2_with_a_reason(tmp_path, args, message):
    result = idgen(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_file_configures_the_server_and_flags_win(tmp_path, start_server):
    url = f"sqlite:///{tmp_path}/file.db"
    init_db(url)
    add_biz("fromfile", url)
    config = tmp_path / "idgen.toml"
    config.write_text(f'db = ["{url}"]\nlisten = "127.0.0.1:1"\nworkers = 4\n')
    server = start_server([], extra_args=["--config", str(config)])  # --listen 127.0.0.1:0 wins
    result = idgen("next", "fromfile", "--target", server.address)
    assert result.returncode == 0 and int(result.stdout) == 1


@pytest.mark.parametrize("content,message", [
    ("db = [", "not valid TOML"),
    ("colour = 'blue'", "unknown settings ['colour']"),
    ("workers = 0", "workers must be in 1..1024"),
    ("db = 5", "db must be a URL or a list of URLs"),
])
def test_a_bad_config_file_is_refused_with_a_reason(tmp_path, content, message):
    config = tmp_path / "idgen.toml"
    config.write_text(content)
    result = idgen("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
