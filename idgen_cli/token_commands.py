"""``idgen token create|list|revoke``: the tokens callers need, in every database of a server.

A token is written to every database, so that servers can check it while one
database is down; it is created in all of them or in none. It is printed once,
on stdout alone (so that ``TOKEN=$(idgen token create ...)`` captures just it);
only its hash is stored. Revocation is written to every database that answers;
servers refuse a token revoked in any of them, within a few seconds.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime

from idgen_cli.databases import stores
from idgen_core.errors import ConfigError, IdGenError, StorageUnavailable, safe_repr
from idgen_server.auth import DEFAULT_REFRESH
from idgen_server.store import SegmentStore
from idgen_server.tokens import Grant, hash_token, new_token, token_id_of, validate_name

__all__ = ["token_create", "token_list", "token_revoke"]


def _with_tables(opened: list[SegmentStore]) -> None:
    for store in opened:
        if not store.tokens.exists():
            raise ConfigError(f"database {store.name} has no idgen_token table: run `idgen init-db` "
                              "with the same databases first")


def token_create(args: argparse.Namespace) -> int:
    biz_types = Grant.biz_types_of(args.biz)
    token, token_id = new_token()
    name = validate_name(args.name if args.name is not None else f"token-{token_id}")
    grant = Grant(token_id=token_id, name=name, secret_hash=hash_token(token),
                  biz_types=biz_types, admin=args.admin)
    with stores(args) as opened:
        _with_tables(opened)
        done: list[SegmentStore] = []
        try:
            for store in opened:
                store.tokens.add(grant)
                done.append(store)
        except IdGenError:
            for store in done:  # all or nothing: a token some servers cannot check is no use
                store.tokens.remove(token_id)
            raise
    print(token, flush=True)
    scope = ", ".join(sorted(biz_types)) + (" and the admin scope" if args.admin else "")
    print(f"idgen: created token {name} (id {token_id}) for {scope} in {len(opened)} database(s); "
          "it is shown only this once: keep it as a secret (for example in IDGEN_TOKEN)",
          file=sys.stderr)
    return 0


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def token_list(args: argparse.Namespace) -> int:
    found: dict[str, list[Grant]] = {}
    failed = 0
    with stores(args) as opened:
        for store in opened:
            try:
                grants = store.tokens.read() if store.tokens.exists() else []
            except StorageUnavailable as exc:
                print(f"idgen: warning: {exc}", file=sys.stderr)
                failed += 1
                continue
            for grant in grants:
                found.setdefault(grant.token_id, []).append(grant)
    rows = [("ID", "NAME", "BIZ TYPES", "ADMIN", "CREATED (UTC)", "REVOKED (UTC)", "DATABASES")]
    for token_id, copies in sorted(found.items(), key=lambda item: item[1][0].name):
        first = copies[0]
        revoked = min((g.revoked_at for g in copies if g.revoked_at is not None), default=None)
        rows.append((token_id, first.name, ",".join(sorted(first.biz_types)),
                     "yes" if first.admin else "no", _when(first.created_at), _when(revoked),
                     f"{len(copies)}/{len(opened)}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 1 if failed else 0


def token_revoke(args: argparse.Namespace) -> int:
    # A leaked token can be revoked by itself: only its public id is used, and shown.
    target = token_id_of(args.token) or args.token
    revoked: set[str] = set()
    unreachable: list[str] = []
    with stores(args) as opened:
        for store in opened:
            try:
                if store.tokens.exists():
                    revoked.update(store.tokens.revoke(target))
            except StorageUnavailable:
                unreachable.append(store.name)
    if unreachable:
        print(f"idgen: error: could not reach {', '.join(unreachable)}: run this again once "
              "it answers (servers refuse a token revoked in any database)", file=sys.stderr)
    if revoked:
        print(f"revoked {', '.join(sorted(revoked))}: servers refuse it from their next read "
              f"of the token tables, within {DEFAULT_REFRESH:g} seconds and one read")
    elif not unreachable:
        print(f"idgen: error: no token {safe_repr(target)} that is not revoked already "
              "(idgen token list shows them)", file=sys.stderr)
        return 1
    return 1 if unreachable else 0
