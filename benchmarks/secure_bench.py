"""Scenario 6: ``NextId`` with TLS and a token against the same server without either.

Two servers of the same build (``benchmarks.server``, idgen's ``IdGenServer`` and
``IdGenService``), each in its own process on 127.0.0.1, each on its own fresh SQLite
database prepared alike: the *plain* one serves plaintext and its database holds no token,
so calls need none; the *secure* one serves TLS (a certificate for 127.0.0.1 made at run time
by ``trustme``) and its database holds one token, so every call needs it. The load is
scenario 2's (``grpc_bench.measure``: one ``benchmarks.worker`` process, the raw grpc.aio
stub), over a TLS channel with ``authorization: Bearer`` metadata for the secure server:
only TLS and the token differ. Quotas are on, at their defaults, in both (charged to the
token in one, to the peer's host in the other). Rounds alternate plain and secure, the best
round of each counts; the ratio is secure ÷ plain. The note also gives the ratio of the median
rounds, which a busy machine moves less than the best ones, and each side's CPU per call.

Before measuring, the secure server is checked to refuse a call without the token, so that
the figure is that of a server that really checks one.
"""
from __future__ import annotations

import os
import statistics
import tempfile

from benchmarks.grpc_bench import measure_rounds
from benchmarks.harness import BIZ_BENCH, Context, Row, progress, register_bench
from benchmarks.processes import benchmark_server

COUNTS = (1, 1000)
CALLERS = (1, 16)
QUICK_CALLERS = (16,)
TARGETS = {1: 0.7, 1000: 0.9}
"""Least acceptable secure ÷ plain, by ``count``."""


def _certificates(directory: str) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 and localhost, as PEM files: (CA, cert, key)."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    paths = tuple(os.path.join(directory, name) for name in ("ca.pem", "server.crt", "server.key"))
    ca.cert_pem.write_to_path(paths[0])
    leaf.cert_chain_pems[0].write_to_path(paths[1])
    leaf.private_key_pem.write_to_path(paths[2])
    return paths  # type: ignore[return-value]


def _check(plain: str, secure: str, ca_file: str, token: str) -> None:
    """Both servers answer as they should, and the secure one refuses a call without the token."""
    from idgen_client import RemoteClient, Unauthenticated

    with RemoteClient(plain, retries=0, env={}) as client:
        client.next_id(BIZ_BENCH)
    with RemoteClient(secure, ca_file=ca_file, token=token, retries=0, env={}) as client:
        client.next_id(BIZ_BENCH)
    with RemoteClient(secure, ca_file=ca_file, retries=0, env={}) as client:
        try:
            client.next_id(BIZ_BENCH)
        except Unauthenticated:
            return
    raise RuntimeError("the TLS server answered a call without a token: it would not measure "
                       "what this scenario claims to")


def _per_call_us(result: dict[str, object], side: str) -> float:
    """CPU µs per call of ``side`` ('server_cpu' or 'client_cpu', in cores) in a window."""
    calls = float(result["calls_per_s"])  # type: ignore[arg-type]
    return float(result[side]) * 1e6 / calls if calls else 0.0  # type: ignore[arg-type]


def run(ctx: Context) -> None:
    callers_list = QUICK_CALLERS if ctx.quick else CALLERS
    rows: dict[tuple[int, int], Row] = {}
    for count in COUNTS:
        for callers in callers_list:
            rows[count, callers] = ctx.run.declare(Row(
                key=f"secure.count{count}.callers{callers}", scenario=6,
                figure=f"NextId count={count}, {callers} caller{'s' if callers > 1 else ''}, "
                       "TLS + token",
                unit="calls/s" if count == 1 else "IDs/s",
                baseline_name="same idgen server, plaintext, no token",
                target=f"≥ {TARGETS[count]}"))
    ctx.run.start(6, "gRPC NextId with TLS and a token vs without")
    try:
        import trustme  # noqa: F401
    except ImportError as exc:
        ctx.run.skip(6, f"trustme is not installed ({exc}); pip install -e '.[test]'")
        ctx.run.finish(6)
        return
    directory = tempfile.mkdtemp(prefix="secure-", dir=ctx.tmp_dir or None)
    token_file = os.path.join(directory, "token")
    try:
        ca_file, cert, key = _certificates(directory)
        urls = {side: f"sqlite:///{directory}/{side}.db" for side in ("plain", "secure")}
        for url in urls.values():
            register_bench(url)
        servers = {
            "plain": ctx.add_server("secure:plain", benchmark_server("idgen", urls["plain"])),
            "secure": ctx.add_server("secure:tls", benchmark_server(
                "idgen", urls["secure"], tls=(cert, key), token=(BIZ_BENCH, token_file))),
        }
        with open(token_file) as f:
            token = f.read().strip()
        _check(servers["plain"].address, servers["secure"].address, ca_file, token)
    except Exception as exc:
        ctx.run.skip(6, f"the servers could not be set up: {type(exc).__name__}: {exc}")
        ctx.run.finish(6)
        return
    security = {"plain": None, "secure": {"ca_file": ca_file, "token": token}}
    for (count, callers), row in rows.items():
        try:
            key, best, results = measure_rounds(ctx, servers, count, callers, security)
        except Exception as exc:
            row.skipped = f"the load generator failed: {exc}"
            progress(f"  {row.figure}: skipped: {row.skipped}")
            continue
        row.idgen = best["secure"][key]  # type: ignore[assignment]
        row.baseline = best["plain"][key]  # type: ignore[assignment]
        row.details = {"best": best, "rounds": results}
        lat: dict[str, dict[str, float]] = {
            side: best[side]["latency_us"] for side in best}  # type: ignore[misc]
        medians = {side: statistics.median(float(r[key]) for r in rs)  # type: ignore[arg-type]
                   for side, rs in results.items()}
        row.details["median_ratio"] = medians["secure"] / medians["plain"] if medians["plain"] else None
        row.note = (f"median round {medians['secure']:,.0f} vs {medians['plain']:,.0f} "
                    f"({row.details['median_ratio']:.2f}×); "
                    "p50/p99/p99.9 µs " + "/".join(f"{v:.0f}" for v in lat["secure"].values())
                    + " (plain " + "/".join(f"{v:.0f}" for v in lat["plain"].values()) + ")"
                    + "; CPU µs per call, server/client: "
                    + f"{_per_call_us(best['secure'], 'server_cpu'):.0f}/"
                    + f"{_per_call_us(best['secure'], 'client_cpu'):.0f}"
                    + f" (plain {_per_call_us(best['plain'], 'server_cpu'):.0f}/"
                    + f"{_per_call_us(best['plain'], 'client_cpu'):.0f})")
        row.met = row.ratio is not None and row.ratio >= TARGETS[count]
        progress(f"  {row.figure}: {row.idgen:,.0f} vs {row.baseline:,.0f} {row.unit}")
    ctx.run.finish(6)
