"""Segment tables set up as ``idgen init-db`` and ``idgen add-biz`` set them up, and rows
read or changed by hand, as an operator with a SQL client would.

Registration goes through ``idgen_server.registry.register`` (database k of n gets
``idgen_server.rows.residue_class(k, n)``): tests never work the classes out themselves.
"""
from __future__ import annotations

from collections.abc import Sequence

from idgen_server.registry import register
from idgen_server.rows import BizRow, residue_class
from idgen_server.store import SegmentStore
from tests.support.proxy import TcpProxy, behind_proxy

__all__ = ["ProxiedDatabases", "edit_row", "open_stores", "prepare", "read_row", "register_as",
           "registered"]


ORPHAN_WAIT = 30.0
"""Seconds the direct stores wait on a locked row: above the 9 s in which the database ends
a transaction left open by a server that vanished (idgen_server.database.make_engine)."""


def open_stores(urls: Sequence[str], **options: float) -> list[SegmentStore]:
    """A store on each URL (``options`` go to each ``SegmentStore``), its table created."""
    stores = [SegmentStore(url, **options) for url in urls]  # type: ignore[arg-type]
    for store in stores:
        store.create_schema()
    return stores


def registered(urls: Sequence[str], biz_type: str, *, step: int,
               **options: float) -> list[SegmentStore]:
    """``open_stores(urls)`` with ``biz_type`` registered across them; the caller closes them."""
    stores = open_stores(urls, **options)
    register(stores, biz_type, step=step)
    return stores


def prepare(urls: Sequence[str], biz_type: str, *, step: int) -> None:
    """``idgen init-db`` and ``idgen add-biz BIZ_TYPE --step STEP`` over these databases."""
    for store in registered(urls, biz_type, step=step):
        store.close()


def register_as(store: SegmentStore, biz_type: str, *, step: int, index: int, count: int,
                registration: str | None = None) -> bool:
    """Write in this one store the row that ``register`` gives database ``index`` of ``count``
    (a registration left halfway, or finished by hand)."""
    delta, remainder = residue_class(index, count)
    return store.register(biz_type, step=step, delta=delta, remainder=remainder,
                          registration=registration)


def read_row(url: str, biz_type: str) -> BizRow | None:
    """The biz type's row, read through a store of its own."""
    store = SegmentStore(url)
    try:
        return store.read(biz_type)
    finally:
        store.close()


def edit_row(database: str | SegmentStore, biz_type: str, assignment: str) -> None:
    """``UPDATE idgen_segment SET <assignment>`` on the biz type's row, by hand."""
    store = SegmentStore(database) if isinstance(database, str) else database
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE idgen_segment SET {assignment} WHERE biz_type = '{biz_type}'")
    finally:
        if store is not database:
            store.close()


class ProxiedDatabases:
    """Databases each behind a ``TcpProxy`` of its own (``proxied``: their URLs through
    it), and a store on each that reaches it directly, not through its proxy."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        # Hand edits may meet a row locked by a transaction whose server vanished (the
        # orphan-commit fault), which the database ends within 3x the servers' timeout:
        # wait longer than that rather than fail the edit.
        self.stores = open_stores(self.urls, timeout=ORPHAN_WAIT)
        self.proxies: list[TcpProxy] = []
        self.proxied: list[str] = []
        for url in self.urls:
            proxy, through = behind_proxy(url)
            self.proxies.append(proxy)
            self.proxied.append(through)

    def register(self, biz_type: str, step: int) -> None:
        register(self.stores, biz_type, step=step)

    def rows(self, biz_type: str) -> list[BizRow]:
        """Each database's row, read directly."""
        return [store.read(biz_type) for store in self.stores]  # type: ignore[misc]

    def set_max_id(self, biz_type: str, max_id: int) -> None:
        for store in self.stores:
            edit_row(store, biz_type, f"max_id = {int(max_id)}")

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()
        for store in self.stores:
            store.close()
