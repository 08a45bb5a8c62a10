"""The benchmark suite's quick mode: it runs, and it accounts for every scenario.

Behaviour only: absolute figures on a shared CI machine mean nothing, so no
assertion here is about speed.
"""
from __future__ import annotations

import json

import pytest

from benchmarks import run as bench
from tests.conftest import IN_CI

pytestmark = pytest.mark.slow

EXPECTED_SCENARIOS = {"1", "2", "3", "4", "5", "6", "7", "8", "9"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_mode_reports_every_scenario(quick_run: dict) -> None:
    assert set(quick_run["scenarios"]) == EXPECTED_SCENARIOS
    for number, scenario in quick_run["scenarios"].items():
        assert scenario["status"] in ("ran", "partial", "skipped"), (number, scenario)
        if scenario["status"] == "skipped":
            assert scenario["reason"], f"scenario {number} skipped without a reason"


def test_in_ci_nothing_is_skipped(quick_run: dict) -> None:
    """CI has MariaDB and every package of the test extra: a skip there hides a broken set-up."""
    if not IN_CI:
        pytest.skip("only CI promises every service and package (CI=true)")
    assert [r["key"] for r in quick_run["rows"] if r["skipped"]] == []


def test_every_figure_has_a_value_and_baseline_or_says_why_not(quick_run: dict) -> None:
    rows = quick_run["rows"]
    assert {str(r["scenario"]) for r in rows} == EXPECTED_SCENARIOS
    for row in rows:
        if row["skipped"]:
            assert isinstance(row["skipped"], str) and row["skipped"].strip(), row["key"]
        else:
            assert row["idgen"] is not None and row["baseline"] is not None, row["key"]
            assert row["ratio"] == pytest.approx(row["idgen"] / row["baseline"]), row["key"]


def test_every_target_figure_is_declared(quick_run: dict) -> None:
    keys = {r["key"] for r in quick_run["rows"]}
    for name in ("itertools.count", "uuid4", "uuid7", "snowflake-id"):
        assert f"inproc.1t.{name}" in keys and f"inproc.8t.{name}" in keys
    assert "inproc.worst_call_across_switches" in keys
    for count in (1, 1000):
        for callers in (1, 16, 64):
            assert f"grpc.count{count}.callers{callers}" in keys
    for db in ("sqlite", "mariadb"):
        for n in (1, 4, 8):
            assert f"alloc.{db}.{n}" in keys
    assert {"naive.next_id", "naive.nextid1"} <= keys
    assert {"sequencer.groups1000", "sequencer.groups1000000"} <= keys
    for count in (1, 1000):  # --quick measures TLS + token at 16 callers only
        assert f"secure.count{count}.callers16" in keys


def test_gRPC_figures_carry_latency_percentiles(quick_run: dict) -> None:
    for row in quick_run["rows"]:
        if row["key"].startswith("grpc.") and not row["skipped"]:
            best = row["details"]["best"]
            for side in ("idgen", "null"):
                assert set(best[side]["latency_us"]) == {"p50", "p99", "p99.9"}


def test_a_missing_mariadb_is_reported_as_skipped_with_why(tmp_path) -> None:
    out = tmp_path / "results.json"
    assert bench.main(["--quick", "--only", "4", "--mariadb", "none", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["scenarios"]["4"]["status"] == "skipped"
    assert "MariaDB" in result["scenarios"]["4"]["reason"]
    naive = [r for r in result["rows"] if r["scenario"] == 4]
    assert naive and all("MariaDB" in r["skipped"] for r in naive)


def test_a_sequencer_that_cannot_be_imported_is_reported_as_skipped_with_why(
        tmp_path, monkeypatch) -> None:
    from benchmarks import sequencer_figures

    def not_there(name: str) -> object:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(sequencer_figures.importlib, "import_module", not_there)
    out = tmp_path / "results.json"
    assert bench.main(["--quick", "--only", "5", "--mariadb", "none", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["scenarios"]["5"]["status"] == "skipped"
    rows = [r for r in result["rows"] if r["scenario"] == 5]
    assert len(rows) == 4 and all("not importable" in r["skipped"] for r in rows)  # under a lease too
