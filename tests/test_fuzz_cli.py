"""The ``idgen`` command refuses bad arguments with one clear line and exit status 2."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idgen_client.errors import InvalidRequest
from idgen_client.segment import validate_biz_type
from idgen_server.cli import main
from idgen_server.store import SegmentStore


def run_in_process(capsys, *args: str) -> tuple[int, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def is_valid(name: str) -> bool:
    try:
        validate_biz_type(name)
    except InvalidRequest:
        return False
    return True


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,70}", fullmatch=True),
    st.sampled_from(["-x", "--db", "'; DROP TABLE idgen_segment; --", "a b", "a\x00b", "é", ""]),
))
def test_add_biz_accepts_exactly_the_valid_names_and_explains_the_rest(capsys, tmp_path_factory, name):
    url = f"sqlite:///{tmp_path_factory.mktemp('cli')}/ids.db"
    store = SegmentStore(url)
    store.create_schema()
    store.close()
    code, err = run_in_process(capsys, "add-biz", "--db", url, "--step", "10", "--", name)
    assert "Traceback" not in err
    if is_valid(name):
        assert code == 0, err
    else:
        assert code == 2 and "biz type" in err and err.count("\n") <= 3, err


@pytest.mark.parametrize("args, message", [
    (["add-biz", "x", "--step", "0", "--db", "sqlite:///x.db"], "between 1 and"),
    (["add-biz", "x", "--step", "1e3", "--db", "sqlite:///x.db"], "not a whole number"),
    (["add-biz", "x", "--step", str(10**13), "--db", "sqlite:///x.db"], "between 1 and"),
    (["add-biz", "x", "--db", "sqlite:///x.db", "--db", "sqlite:///x.db"], "given twice"),
    (["next", "x", "--count", "0"], "between 1 and 100000"),
    (["next", "x", "--count", "100001"], "between 1 and 100000"),
    (["next", "x", "--target", "nohost"], "not HOST:PORT"),
    (["next", "x", "--target", "127.0.0.1:65536"], "not HOST:PORT"),
    (["next", "x y"], "biz type"),
])
def test_bad_arguments_get_one_clear_line_and_status_2(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, err = run_in_process(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize("args, message", [
    (["--listen", "nonsense"], "not HOST:PORT"),
    (["--listen", "127.0.0.1:99999"], "not HOST:PORT"),
    (["--listen", "127.0.0.1:0,127.0.0.1:0"], "one HOST:PORT"),
    (["--workers", "0"], "between 1 and 1024"),
    (["--preload-at", "1.5"], "preload_at"),
    (["--preload-at", "x"], "invalid float"),
    (["--db", "foo://bar"], "is not usable"),
    (["--db", ""], "at least one database URL"),
    (["--db", "sqlite:///a.db", "--db", "sqlite:///a.db"], "given twice"),
])
def test_serve_refuses_bad_settings_before_serving(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "idgen_server.cli", "serve", *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "serving on" not in result.stdout
