"""The ``idgen`` command refuses bad arguments with one clear line and exit status 2."""
from __future__ import annotations

import logging
import signal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from idgen_cli.main import main
from idgen_core.errors import InvalidRequest
from idgen_core.segment import validate_biz_type
from idgen_server.store import SegmentStore
from tests.support.cli import idgen


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
    (["--preload-at", "x"], "'x' is not a number"),
    (["--db", "foo://bar"], "is not usable"),
    (["--db", ""], "at least one database URL"),
    (["--db", "sqlite:///a.db", "--db", "sqlite:///a.db"], "given twice"),
])
def test_serve_refuses_bad_settings_before_serving(tmp_path, args, message):
    result = idgen("serve", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "serving on" not in result.stdout


# -- every setting, from every source, with arbitrary values -------------------------------

SECRET = "Fuzz-p4ss"
SAFE = st.characters(whitelist_categories=("L", "N"), max_codepoint=0x7F)
ports = st.one_of(st.sampled_from(["3306", "5432", "1", "0", "65536", "-1", ""]),
                  st.text(SAFE, max_size=6))
# Every URL points at this machine (loopback only); the password is always SECRET, with
# the characters a password may hold and a URL may not.
urls = st.one_of(
    st.builds("{}://{}:{}{}@127.0.0.1:{}/{}{}".format,
              st.sampled_from(["mysql", "mariadb", "postgresql", "postgres", "sqlite",
                               "mysql+pymysql", "nosuch", "MYSQL"]),
              st.text(SAFE, min_size=1, max_size=6), st.just(SECRET),
              st.sampled_from(["", "@", "/", ":", "%40", "?", "#"]), ports,
              st.text(max_size=10).filter(lambda t: "\x00" not in t),
              st.sampled_from(["", "?x=1", "?charset=utf8mb4", "?uri=true", "?connect_timeout=x",
                               "?sslmode=bogus", "?mode=ro&uri=true"])),
    st.just(f"mysql://root:{SECRET}/test"),
    st.text(max_size=20).filter(lambda t: "://" not in t and "\x00" not in t),
)
listens = st.one_of(st.builds("127.0.0.1:{}".format, ports),
                    st.text(SAFE, max_size=8),
                    st.sampled_from(["127.0.0.1:0", "127.0.0.1:0,127.0.0.1:0", ":0", "127.0.0.1"]))
numbers = st.one_of(st.sampled_from(["inf", "-inf", "nan", "0", "-1", "1e309", "0.5", "3"]),
                    st.text(SAFE, max_size=5), st.integers(-5, 70_000).map(str), urls)
toml_values = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(),
                        st.text(max_size=20), urls, listens, st.lists(urls, max_size=3),
                        st.lists(st.integers(), max_size=2), st.dictionaries(SAFE, st.integers(),
                                                                             max_size=1))
FILE_KEYS = ["db", "listen", "workers", "preload_at", "db_timeout", "metrics_port", "grace",
             "colour"]


def toml_line(key: str, value: object) -> str:
    import json
    import math

    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and not math.isfinite(value):
        text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    elif isinstance(value, dict):
        text = "{ " + ", ".join(f"{json.dumps(k)} = {v}" for k, v in value.items()) + " }"
    else:
        text = json.dumps(value)  # a TOML basic string, integer, float or array
    return f"{key} = {text}"


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(flags=st.lists(st.one_of(
           st.tuples(st.just("--db"), urls), st.tuples(st.just("--listen"), listens),
           st.tuples(st.sampled_from(["--workers", "--metrics-port", "--db-timeout",
                                      "--preload-at"]), numbers),
           st.tuples(st.just(""), urls)), max_size=3),  # "": a URL without its --db
       env=st.fixed_dictionaries({}, optional={
           "IDGEN_DB": st.one_of(urls, st.lists(urls, max_size=3).map(",".join)),
           "IDGEN_LISTEN": st.one_of(listens, urls), "IDGEN_DATA_DIR": st.text(SAFE, max_size=8)}),
       file=st.one_of(st.none(), st.dictionaries(st.sampled_from(FILE_KEYS), toml_values,
                                                 max_size=3)))
def test_any_settings_give_one_line_and_never_the_password(capsys, caplog, tmp_path_factory,
                                                            monkeypatch, flags, env, file):
    """From flags, environment and config file with arbitrary values, ``idgen serve``
    either serves or says in one line what is wrong: never a traceback, never a password."""
    import idgen_cli.main as cli
    import idgen_cli.server_commands as commands

    workdir = tmp_path_factory.mktemp("settings")
    monkeypatch.chdir(workdir)
    # A server that starts stops at once, as on Ctrl-C.
    monkeypatch.setattr(commands, "_wait_for_signal", lambda: signal.SIGINT)
    for key in ("IDGEN_DB", "IDGEN_LISTEN", "IDGEN_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("IDGEN_DATA_DIR", str(workdir / "data"))
    for key, value in env.items():
        # A data directory from the fuzz stays inside this test's directory.
        monkeypatch.setenv(key, value if key != "IDGEN_DATA_DIR" else f"{workdir}/data-{value}")
    listen_given = (any(f == "--listen" for f, _ in flags) or env.get("IDGEN_LISTEN", "").strip()
                    or (file is not None and "listen" in file))
    args = ["serve"] if listen_given else ["serve", "--listen", "127.0.0.1:0"]
    for flag, value in flags:
        args += [flag, value] if flag else [value]
    if file is not None:
        path = workdir / "idgen.toml"
        path.write_text("\n".join(toml_line(k, v) for k, v in file.items()) + "\n")
        args += ["--config", str(path)]
    listens_far = [v for f, v in flags if f == "--listen"] + [env.get("IDGEN_LISTEN", "")]
    if file and isinstance(file.get("listen"), str):
        listens_far.append(file["listen"])
    assume(not any(_binds_beyond_loopback(v) for v in listens_far))
    with caplog.at_level(logging.DEBUG):
        try:
            code = cli.main(args)
        except SystemExit as exc:
            code = int(exc.code or 0)
    out, err = capsys.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    caplog.clear()
    assert SECRET not in out + err + logged, (args, env, file)
    assert "Traceback" not in err
    if code == 0:
        assert "serving on 127.0.0.1:" in out
    else:
        assert code == 2, (args, err)
        assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
        assert err.count("\n") == 1, err


def _binds_beyond_loopback(listen: str) -> bool:
    """Whether ``listen`` is a valid address that is not 127.0.0.1 (tests bind loopback only)."""
    host, _, port = listen.strip().rpartition(":")
    return bool(host) and port.isdigit() and "," not in listen and host != "127.0.0.1"
