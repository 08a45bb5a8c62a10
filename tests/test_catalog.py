"""The administrative commands on the segment table: ``idgen list``, ``describe``,
``set-step`` and ``skip-to``, against real databases and real servers.

What they promise: every row of every database shown, an unreadable database shown as
such (exit 1); a step changed in every database or in none when one cannot be read,
used by running servers from their next allocation; ``max_id`` only ever moved up,
every segment allocated afterwards above the ID asked for; no password in any output.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from idgen_cli.main import main
from idgen_client import RemoteClient
from idgen_core.errors import InvalidRequest
from idgen_core.segment import INT64_MAX, Segment
from idgen_server import catalog
from idgen_server.config import ServerConfig
from idgen_server.rows import MAX_ROW_STEP
from idgen_server.server import IdGenServer
from tests.support.cli import db_args
from tests.support.proxy import behind_proxy
from tests.support.stores import edit_row, open_stores, prepare, read_row, registered
from tests.support.waiting import wait_until


def idgen(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``idgen ARGV...`` run in this process: its exit status, stdout and stderr."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's bad usage
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@contextmanager
def running(urls: Sequence[str]) -> Iterator[RemoteClient]:
    """A real server on these databases, and a client of it."""
    config = ServerConfig(db_urls=tuple(urls), listen="127.0.0.1:0", grace=0.5, drain=0.0)
    with IdGenServer(config) as server, RemoteClient(server.address, timeout=10) as client:
        yield client


@pytest.fixture
def two(tmp_path: object) -> list[str]:
    """Two SQLite databases with "order" (step 100) and "user" (step 1000) registered over both."""
    urls = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    prepare(urls, "order", step=100)
    prepare(urls, "user", step=1000)
    return urls


# -- list and describe -------------------------------------------------------------------------


def test_list_shows_every_biz_type_in_every_database(two, capsys):
    edit_row(two[1], "order", "max_id = 123456")
    code, out, _ = idgen(capsys, "list", *db_args(two))
    assert code == 0
    assert f"db0 = {two[0]}" in out and f"db1 = {two[1]}" in out
    lines = [line.split() for line in out.splitlines() if line.startswith(("db0 ", "db1 "))
             and "=" not in line]
    assert [(cells[0], cells[1], cells[3], cells[4], cells[5]) for cells in lines] == [
        ("db0", "order", "100", "2", "0"), ("db0", "user", "1000", "2", "0"),
        ("db1", "order", "100", "2", "1"), ("db1", "user", "1000", "2", "1")]
    assert lines[2][2] == "123456" and lines[2][-1] == "1.34e-12%"  # small, yet visible


def test_list_json_gives_every_field_of_every_row(two, capsys):
    edit_row(two[0], "user", "max_id = 4611686018427387903")
    code, out, _ = idgen(capsys, "list", "--json", *db_args(two))
    assert code == 0
    databases = json.loads(out)["databases"]
    assert [(d["label"], d["readable"]) for d in databases] == [("db0", True), ("db1", True)]
    user = next(r for r in databases[0]["biz_types"] if r["biz_type"] == "user")
    assert user["max_id"] == "4611686018427387903"  # a string: exact beyond 2**53
    assert (user["step"], user["delta"], user["remainder"], user["version"]) == (1000, 2, 0, 0)
    assert user["range_used"] == pytest.approx(0.5)
    assert user["updated_at"] and user["registration"] and user["damage"] is None


def test_list_names_a_damaged_row_with_what_a_server_refuses(two, capsys):
    edit_row(two[1], "order", "step = 0")
    code, out, _ = idgen(capsys, "list", *db_args(two))
    assert code == 0
    assert "note: db1: biz type 'order' has a damaged row" in out and "step is 0" in out


def test_describe_says_what_the_rows_say_together(two, capsys):
    code, out, _ = idgen(capsys, "describe", "order", *db_args(two))
    assert code == 0
    assert "- registered in 2 of 2 database(s)" in out
    assert "- the rows form the full residue set mod 2" in out
    assert "- step 100 in every row" in out
    assert "- it passes the checks a server makes at every allocation" in out


def test_describe_json_says_the_same_for_scripts(two, capsys):
    edit_row(two[1], "order", "step = 300")
    code, out, _ = idgen(capsys, "describe", "order", "--json", *db_args(two))
    assert code == 0
    described = json.loads(out)
    assert described["registered_in"] == ["db0", "db1"] and described["full_residue_set"] is True
    assert described["steps"] == {"db0": 100, "db1": 300} and described["steps_differ"] is True
    assert described["refusal"] is None
    assert [d["row"]["remainder"] for d in described["databases"]] == [0, 1]


def test_describe_shows_a_biz_type_a_server_would_refuse(tmp_path, capsys):
    urls = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    prepare(urls[:1], "order", step=100)  # registered for one database only
    open_stores(urls[1:])[0].close()
    code, out, _ = idgen(capsys, "describe", "order", *db_args(urls))
    assert code == 0
    assert "registered in 1 of 2 database(s); no row in db1" in out
    assert "a server would refuse it" in out and "this server uses 2 databases" in out


def test_describe_says_when_a_class_has_no_row(two, capsys):
    [store] = open_stores(two[1:])
    with store.engine.begin() as conn:  # as if the database had been lost and replaced
        conn.exec_driver_sql("DELETE FROM idgen_segment WHERE biz_type = 'order'")
    store.close()
    code, out, _ = idgen(capsys, "describe", "order", *db_args(two))
    assert code == 0
    assert "the rows do not form the full residue set (classes held: 0 mod 2)" in out
    assert "it passes the checks a server makes" in out  # db0 still serves its own class


def test_describe_of_an_unknown_biz_type_says_how_to_add_it(two, capsys):
    code, out, err = idgen(capsys, "describe", "nope", *db_args(two))
    assert code == 1 and out == ""
    assert "'nope' is not registered: add it with `idgen add-biz nope" in err


@pytest.mark.mariadb
def test_an_unreadable_database_is_shown_as_such_after_the_others(tmp_path, make_mariadb, capsys):
    proxy, through = behind_proxy(make_mariadb())
    try:
        urls = [f"sqlite:///{tmp_path}/a.db", through]
        prepare(urls, "order", step=100)
        proxy.refuse()
        code, out, err = idgen(capsys, "list", *db_args(urls))
        assert code == 1
        assert "db1 = mysql" in out and "(unreadable)" in out
        assert [line.split()[:2] for line in out.splitlines() if line.startswith("db0  ")] == [
            ["db0", "order"]]
        assert "idgen: error: db1: database mysql" in err and "unreachable" in err
        code, out, _ = idgen(capsys, "describe", "order", *db_args(urls))
        assert code == 1 and "registered in 1 of 2 database(s); db1 could not be read" in out
        assert "the full residue set cannot be told" in out
    finally:
        proxy.close()


# -- set-step ------------------------------------------------------------------------------------


def test_set_step_changes_the_step_in_every_database_by_compare_and_set(two, capsys):
    code, out, _ = idgen(capsys, "set-step", "order", "250", *db_args(two))
    assert code == 0
    assert f"order: step 100 -> 250 in db0 ({two[0]})" in out
    assert f"order: step 100 -> 250 in db1 ({two[1]})" in out
    rows = [read_row(url, "order") for url in two]
    assert [(r.step, r.version, r.max_id) for r in rows] == [(250, 1, 0), (250, 1, 0)]
    assert [read_row(url, "user").step for url in two] == [1000, 1000]  # the others untouched
    code, out, _ = idgen(capsys, "set-step", "order", "250", *db_args(two))
    assert code == 0 and "order: step already 250 in db0" in out
    assert read_row(two[0], "order").version == 1  # nothing to change, nothing written


def test_the_embedded_server_starts_after_its_default_step_changed(capsys):
    config = ServerConfig.from_sources(env=os.environ, listen="127.0.0.1:0")  # this test's data dir
    with IdGenServer(config):
        pass  # the embedded database is made, with its biz type "default"
    code, out, _ = idgen(capsys, "set-step", "default", "500")
    assert code == 0, out
    with IdGenServer(config) as server, RemoteClient(server.address, timeout=10) as client:
        segment = client.next_segment("default")
    assert len(segment) == 500


def test_add_biz_repeated_with_another_step_points_to_set_step(two, capsys):
    assert idgen(capsys, "set-step", "order", "250", *db_args(two))[0] == 0
    code, _, err = idgen(capsys, "add-biz", "order", "--step", "100", *db_args(two))
    assert code == 1
    assert "with step 250, not 100" in err and "idgen set-step order 100" in err
    assert "twice" not in err


@pytest.mark.parametrize("step", ["0", str(MAX_ROW_STEP + 1), "ten"])
def test_set_step_out_of_range_is_bad_usage(two, capsys, step):
    code, _, err = idgen(capsys, "set-step", "order", step, *db_args(two))
    assert code == 2 and "step" in err
    assert [read_row(url, "order").step for url in two] == [100, 100]


def test_set_step_below_a_rows_delta_is_refused_with_why_and_nothing_written(two, capsys):
    code, _, err = idgen(capsys, "set-step", "order", "1", *db_args(two))
    assert code == 2
    assert "step 1 is below delta 2 of 'order'" in err and "Nothing was changed" in err
    assert [read_row(url, "order").version for url in two] == [0, 0]


def test_the_library_refuses_a_step_out_of_range(two):
    stores = open_stores(two)
    try:
        for step in (0, -1, MAX_ROW_STEP + 1, True):
            with pytest.raises(InvalidRequest, match="the step must be a whole number"):
                catalog.set_step(stores, "order", step)
    finally:
        for store in stores:
            store.close()


@pytest.mark.mariadb
def test_set_step_writes_nothing_while_one_database_cannot_be_read(tmp_path, make_mariadb, capsys):
    mariadb = make_mariadb()
    proxy, through = behind_proxy(mariadb)
    try:
        urls = [f"sqlite:///{tmp_path}/a.db", through]
        prepare(urls, "order", step=100)
        proxy.refuse()
        code, out, err = idgen(capsys, "set-step", "order", "500", *db_args(urls))
        assert code == 1 and out == ""
        assert "every database must be read first" in err and "Nothing was changed" in err
        assert [read_row(url, "order").step for url in (urls[0], mariadb)] == [100, 100]
    finally:
        proxy.close()


def test_a_running_server_uses_the_new_step_at_its_next_allocation(sqlite_url, capsys):
    prepare([sqlite_url], "order", step=100)
    with running([sqlite_url]) as client:
        before = client.next_segment("order")
        assert len(before) == 100
        assert idgen(capsys, "set-step", "order", "700", "--db", sqlite_url)[0] == 0
        after = client.next_segment("order")
        assert len(after) == 700 and after.start > before.end  # no restart, nothing repeated


def test_a_server_serves_a_biz_type_whose_steps_differ_between_databases(two):
    # What set-step leaves while it runs, or after it failed halfway: harmless, since the
    # residue classes and max_id alone decide which IDs a database hands out.
    edit_row(two[1], "order", "step = 300")
    with running(two) as client:
        segments = [client.next_segment("order") for _ in range(4)]
    by_class = {s.remainder: s for s in segments}
    assert {r: (s.end - s.start) // 2 + 1 for r, s in by_class.items()} == {0: 50, 1: 150}
    ids = [i for s in segments for i in s.ids()]
    assert len(ids) == len(set(ids))


def test_set_step_racing_allocators_loses_no_segment_and_repeats_no_id(sqlite_url):
    [allocating] = registered([sqlite_url], "order", step=10)  # a server's store
    [editing] = open_stores([sqlite_url])  # the command's
    allocated: list[Segment] = []
    stop = threading.Event()

    def allocate() -> None:
        for _ in range(20000):  # bounded in count; stopped once the new step is seen
            if stop.is_set():
                return
            allocated.append(allocating.allocate("order"))

    allocator = threading.Thread(target=allocate, name="test-allocator", daemon=True)
    allocator.start()
    try:
        wait_until(lambda: len(allocated) >= 20, 20, "allocations before set-step")
        changes = catalog.set_step([editing], "order", 40)
        wait_until(lambda: len(allocated[-1]) == 40, 20, "an allocation with the new step")
    finally:
        stop.set()
        allocator.join(30)
        editing.close()
        allocating.close()
    assert [(change.before, change.after) for change in changes] == [(10, 40)]
    sizes = [len(segment) for segment in allocated]
    switch = sizes.index(40)
    assert set(sizes[:switch]) == {10} and set(sizes[switch:]) == {40}
    ids = [i for segment in allocated for i in segment.ids()]
    assert ids == list(range(1, len(ids) + 1))  # no ID twice, none lost: one allocator


# -- skip-to -------------------------------------------------------------------------------------


def test_skip_to_moves_every_max_id_up_and_leaves_one_above_alone(two, capsys):
    edit_row(two[1], "order", "max_id = 9000000")
    code, out, _ = idgen(capsys, "skip-to", "order", "5000000", *db_args(two))
    assert code == 0
    assert "order: max_id 0 -> 5000000 in db0" in out
    assert "order: max_id 9000000 is at or above 5000000 already in db1" in out
    assert "a max_id is never lowered: IDs would be handed out twice" in out
    assert "already buffered by running servers and clients" in out
    rows = [read_row(url, "order") for url in two]
    assert [(r.max_id, r.version) for r in rows] == [(5000000, 1), (9000000, 0)]


def test_every_segment_allocated_after_skip_to_lies_above_the_id(two, capsys):
    with running(two) as client:
        below = client.next_segment("order")
        assert idgen(capsys, "skip-to", "order", "77777777", *db_args(two))[0] == 0
        after = [client.next_segment("order") for _ in range(4)]
    assert below.end < 77777777
    assert {s.remainder for s in after} == {0, 1}  # from both databases
    assert all(s.start > 77777777 for s in after)


@pytest.mark.mariadb
def test_skip_to_writes_nothing_while_one_database_cannot_be_read(tmp_path, make_mariadb, capsys):
    proxy, through = behind_proxy(make_mariadb())
    try:
        urls = [f"sqlite:///{tmp_path}/a.db", through]
        prepare(urls, "order", step=100)
        proxy.refuse()
        code, _, err = idgen(capsys, "skip-to", "order", "1000", *db_args(urls))
        assert code == 1 and "Nothing was changed" in err
        assert read_row(urls[0], "order").max_id == 0
    finally:
        proxy.close()


def test_skip_to_past_the_int64_range_is_bad_usage(two, capsys):
    for target in ("0", str(INT64_MAX), "-5"):
        assert idgen(capsys, "skip-to", "order", target, *db_args(two))[0] == 2
    assert [read_row(url, "order").max_id for url in two] == [0, 0]


def test_skip_to_of_an_unknown_biz_type_writes_nothing(two, capsys):
    code, _, err = idgen(capsys, "skip-to", "nope", "10", *db_args(two))
    assert code == 1 and "idgen add-biz nope" in err


# -- every kind of database; no password shown ---------------------------------------------------


def test_the_commands_work_alike_on_mariadb_and_postgres(db_url, capsys):
    prepare([db_url], "order", step=100)
    assert idgen(capsys, "set-step", "order", "300", "--db", db_url)[0] == 0
    assert idgen(capsys, "skip-to", "order", "123456789012", "--db", db_url)[0] == 0
    code, out, _ = idgen(capsys, "list", "--json", "--db", db_url)
    assert code == 0
    [row] = json.loads(out)["databases"][0]["biz_types"]
    assert (row["max_id"], row["step"], row["version"]) == ("123456789012", 300, 2)
    assert row["updated_at"] is not None


@pytest.mark.postgres
def test_no_password_shows_in_any_output(tmp_path, postgres_server, capsys):
    password = "pw-Secret-4711"
    # PostgreSQL here trusts local connections, so the password is never needed, only shown
    # if something leaks it; the MariaDB URL points at a port where nothing listens.
    postgres = postgres_server.create().replace("postgres@", f"postgres:{password}@")
    proxy, refused = behind_proxy(f"mysql+pymysql://root:{password}@127.0.0.1:3306/x")
    proxy.refuse()
    try:
        prepare([postgres], "order", step=100)
        for urls in ([postgres], [postgres, refused]):
            for argv in (["list"], ["list", "--json"], ["describe", "order"],
                         ["describe", "order", "--json"], ["set-step", "order", "200"],
                         ["skip-to", "order", "1000"]):
                code, out, err = idgen(capsys, *argv, *db_args(urls))
                assert password not in out + err, (argv, out, err)
                assert code == (0 if len(urls) == 1 else 1), (argv, out, err)
    finally:
        proxy.close()
