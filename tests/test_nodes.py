"""One logical database through several nodes: a URL that lists them, a store that
connects to the first that takes writes, moves to the next when its node goes, and goes
back when the first returns. The nodes here are proxies in front of the machine's real
MariaDB and PostgreSQL servers, so that a test can take one away; the clusters
themselves are in the high-availability tests.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from idgen_core.errors import ConfigError, StorageUnavailable
from idgen_server.config import database_entries
from idgen_server.store import SegmentStore
from idgen_server.urls import check_distinct, normalize_url, redact_url, split_nodes, with_password
from tests.support.databases import database_kinds, database_maker
from tests.support.proxy import TcpProxy
from tests.support.stores import registered
from tests.support.waiting import wait_until

BIZ = "nodes"


# --- the syntax -------------------------------------------------------------------------------

def test_a_url_lists_its_nodes_in_its_host_part_and_keeps_them_through_normalizing():
    url = normalize_url("mysql://idgen:s3cret@db1:3306,db2:3307,[::1]:3308/idgen")
    assert url == "mysql+pymysql://idgen:s3cret@db1:3306,db2:3307,[::1]:3308/idgen"
    assert split_nodes(url) == ("mysql+pymysql://idgen:s3cret@db1:3306/idgen",
                                ("db1:3306", "db2:3307", "[::1]:3308"))
    assert redact_url(url) == "mysql+pymysql://idgen:***@db1:3306,db2:3307,[::1]:3308/idgen"
    assert with_password("postgres://idgen@pg1,pg2:5433/idgen", "pw") == (
        "postgres://idgen:pw@pg1,pg2:5433/idgen")


def test_idgen_db_separates_urls_not_the_nodes_of_one():
    env = {"IDGEN_DB": "a=mysql://u@db1:3306,db2:3306/x, b=postgres://u@pg1,pg2/y,sqlite:///z.db"}
    entries, embedded = database_entries(db=None, env=env)
    assert not embedded
    assert [entry.partition("=")[0] for entry in entries[:2]] == ["a", "b"]
    urls = [normalize_url(entry.rpartition("=")[2] if "=" in entry else entry)
            for entry in entries]
    assert [make_url(split_nodes(url)[0]).get_backend_name() for url in urls] == [
        "mysql", "postgresql", "sqlite"]
    assert split_nodes(urls[1])[1] == ("pg1", "pg2")


@pytest.mark.parametrize("url, says", [
    ("mysql://u@db1,,db2/x", "lists a node '' that is not host or host:port"),
    ("mysql://u@db1:70000,db2/x", "lists a node 'db1:70000'"),
    ("mysql://u@db1,db1/x", "lists a node twice"),
    ("sqlite://a,b/x.db", "only MySQL/MariaDB and PostgreSQL URLs may"),
])
def test_a_node_list_that_cannot_work_is_refused_with_what_is_wrong(url, says):
    with pytest.raises(ConfigError, match=says):
        normalize_url(url)


def test_a_database_given_once_as_a_node_list_and_again_as_one_of_its_nodes_is_refused():
    names = [redact_url(normalize_url(u)) for u in
             ("mysql://u:a@db1:3306,db2:3306/x", "mysql://u:b@db2:3306/x")]
    with pytest.raises(ConfigError, match="the same database is given twice"):
        check_distinct(names)
    overlapping = [redact_url(normalize_url(u)) for u in
                   ("mysql://u@db1:3306,db2:3306/x", "mysql://u@db3:3306,db2:3306/x")]
    with pytest.raises(ConfigError, match="both reach x through db2:3306"):
        check_distinct(overlapping)
    check_distinct([redact_url(normalize_url(u)) for u in
                    ("mysql://u@db1:3306,db2:3306/x", "mysql://u@db1:3306,db2:3306/y")])


# --- failover, against the real servers --------------------------------------------------------

class TwoNodes:
    """A database of ``url`` reached through two proxies: the URL lists both."""

    def __init__(self, url: str) -> None:
        target = make_url(url)
        self.proxies = [TcpProxy(target.host or "127.0.0.1", target.port or 0) for _ in range(2)]
        self.nodes = [f"{p.host}:{p.port}" for p in self.proxies]
        first = self.proxies[0].url(url)
        head, _, tail = first.partition(self.nodes[0])
        self.url = f"{head}{','.join(self.nodes)}{tail}"

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()


@pytest.fixture(params=database_kinds("mariadb", "postgres"))
def two_nodes(request, tmp_path) -> Iterator[TwoNodes]:
    nodes = TwoNodes(database_maker(request, request.param, tmp_path)())
    yield nodes
    nodes.close()


def allocate_many(store: SegmentStore, count: int) -> list[int]:
    """The ends of ``count`` segments allocated in a row: they must increase."""
    ends = [store.allocate(BIZ).end for _ in range(count)]
    assert ends == sorted(ends) and len(set(ends)) == count
    return ends


def test_a_store_moves_to_the_next_node_when_its_node_goes_and_back_when_it_returns(two_nodes):
    store, = registered([two_nodes.url], BIZ, step=10)
    nodes = store._db.nodes
    nodes.go_back_after = 0.3
    try:
        before = allocate_many(store, 3)
        assert nodes.current == two_nodes.nodes[0]
        two_nodes.proxies[0].refuse()  # the first node goes: its connections reset
        during = allocate_many(store, 20)  # no StorageUnavailable: the next node serves
        assert nodes.current == two_nodes.nodes[1]
        two_nodes.proxies[0].restore()

        def back_on_the_first() -> bool:
            allocate_many(store, 1)
            return nodes.current == two_nodes.nodes[0]

        wait_until(back_on_the_first, 20, "the store to go back to the first node")
        assert before[-1] < during[0]
    finally:
        store.close()


@pytest.mark.mariadb
def test_a_node_lost_at_commit_costs_the_allocation_nothing_but_its_range(mariadb_url):
    """The first node's connection drops at COMMIT (the commit never reaches the
    database; the proxy reads MySQL's protocol): the allocation starts over on a fresh
    connection, and succeeds. With one node, the same fault fails the allocation."""
    two_nodes = TwoNodes(mariadb_url)
    store, = registered([two_nodes.url], BIZ, step=10)
    try:
        first = store.allocate(BIZ)
        two_nodes.proxies[0].drop_at_commit()
        second = store.allocate(BIZ)
        assert two_nodes.proxies[0].disarm() == 0, "the trap was sprung"
        assert second.start > first.end
    finally:
        store.close()
        two_nodes.close()


def test_with_every_node_gone_the_store_says_which_refused_and_why(two_nodes):
    store, = registered([two_nodes.url], BIZ, step=10)
    try:
        store.allocate(BIZ)
        for proxy in two_nodes.proxies:
            proxy.refuse()
        with pytest.raises(StorageUnavailable) as raised:
            store.allocate(BIZ)
        assert "unreachable or failing" in str(raised.value)
        assert ",".join(two_nodes.nodes) in str(raised.value)  # the database, all its nodes
    finally:
        store.close()


def test_a_secret_in_a_node_list_url_never_shows_in_a_message():
    from idgen_server.urls import redact_text

    text = redact_text("idgen list postgresql://u@h1,h2/db?password=s3cret and "
                       "mysql://u:pw1@h1,h2/db?ssl_key_password=k3y, then a=mysql://v:pw2@h/x")
    for secret in ("s3cret", "pw1", "k3y", "pw2"):
        assert secret not in text, text
    assert "h1,h2/db" in text


@pytest.mark.mariadb
def test_a_wrong_password_on_every_node_is_a_setting_to_fix_not_an_outage(mariadb_url):
    """Every node refuses the login the same way: the store says so at start-up (a
    ``ConfigError``), as it does for one host, instead of benching the database."""
    nodes = TwoNodes(mariadb_url.replace("root@", "nosuch:wrong@"))
    store = SegmentStore(nodes.url)
    try:
        with pytest.raises(ConfigError, match="Access denied") as raised:
            store.check_ready()
        assert "wrong" not in str(raised.value)
    finally:
        store.close()
        nodes.close()


@pytest.mark.mariadb
def test_status_shows_the_node_a_database_is_served_through(mariadb_url, start_server):
    from idgen_client import RemoteClient

    nodes = TwoNodes(mariadb_url)
    try:
        registered([nodes.url], BIZ, step=10)[0].close()
        server = start_server([nodes.url])
        with RemoteClient(server.address) as client:
            client.next_ids(BIZ, 5)
            assert [db.node for db in client.status().databases] == [nodes.nodes[0]]
            nodes.proxies[0].refuse()

            def served_through_the_second() -> bool:
                client.next_ids(BIZ, 5)  # allocations, which need a connection
                return client.status().databases[0].node == nodes.nodes[1]

            wait_until(served_through_the_second, 20, "the status to show the second node")
    finally:
        nodes.close()


@pytest.mark.mariadb
def test_a_wrong_password_where_one_node_is_down_is_still_a_setting_to_fix(mariadb_url):
    nodes = TwoNodes(mariadb_url.replace("root@", "nosuch:wrong@"))
    nodes.proxies[0].refuse()  # the first node answers nothing; the second refuses the login
    store = SegmentStore(nodes.url)
    try:
        with pytest.raises(ConfigError, match="Access denied"):
            store.check_ready()
    finally:
        store.close()
        nodes.close()
