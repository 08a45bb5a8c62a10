"""The conventions a library and a command line are expected to keep.

The libraries print nothing unless the application configures logging; the
command has ``--version``, ``-v`` before or after the command, help text for
every argument, and ``--json`` output with IDs as strings (JavaScript's numbers
lose precision above 2**53). Real processes, a real server.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version

import pytest

import idgen_client
from idgen_cli.logs import log_settings
from idgen_cli.parser import build_parser
from tests.support.cli import idgen
from tests.support.servers import free_port

LIBRARY_PROGRAM = """
import logging, sys
if sys.argv[2] == "configured":
    logging.basicConfig()
from idgen_client import LocalGenerator, RemoteClient, ServiceUnavailable
with RemoteClient(sys.argv[1], retries=0, timeout=1) as client:
    try:
        client.next_ids("order", 1)
    except ServiceUnavailable:
        pass
    with LocalGenerator("order", client, wait_timeout=10) as generator:
        try:
            generator.next_id()  # its background fetch fails, and logs a warning
        except ServiceUnavailable:
            pass
print("done")
"""


def run_library_program(logging_setup: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LIBRARY_PROGRAM, f"127.0.0.1:{free_port()}",
                           logging_setup], capture_output=True, text=True, timeout=60)


def test_the_libraries_print_nothing_when_the_application_does_not_configure_logging():
    result = run_library_program("quiet")
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")


def test_the_libraries_log_once_the_application_configures_logging():
    result = run_library_program("configured")
    assert result.returncode == 0, result.stderr
    assert "WARNING:idgen_core.fetcher:fetching a segment for 'order' failed" in result.stderr


def test_version_prints_the_installed_version():
    result = idgen("--version")
    assert (result.returncode, result.stdout) == (0, f"idgen {version('idgen')}\n")
    assert idgen_client.__version__ == version("idgen")


@pytest.mark.parametrize("argv", [
    ["-v", "serve"], ["serve", "-v"], ["next", "x", "-v"], ["token", "list", "-v"],
    ["--log-level", "warning", "serve", "-v"], ["serve", "--log-level", "debug"],
])
def test_verbose_means_debug_before_or_after_the_command(argv):
    assert log_settings(build_parser().parse_args(argv), env={}) == ("text", "debug")


def test_log_options_after_the_command_win_over_the_environment():
    args = build_parser().parse_args(["next", "x", "--log-format", "text", "--log-level", "error"])
    assert log_settings(args, env={"IDGEN_LOG_FORMAT": "json", "IDGEN_LOG_LEVEL": "debug"}) == (
        "text", "error")


def test_verbose_after_the_command_runs_it():
    result = idgen("next", "x", "-v", "--target", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert result.returncode == 1, result.stderr  # unreachable, not a usage error (2)
    assert result.stderr.startswith("idgen: error: ")


def _arguments(parser: argparse.ArgumentParser, command: str) -> Iterator[tuple[str, str | None]]:
    """Every argument of ``parser`` and of its commands, as ``(where, help)``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield f"{command} {choice.dest}", choice.help
            for name, sub in action.choices.items():
                yield from _arguments(sub, f"{command} {name}")
        else:
            yield f"{command} {'/'.join(action.option_strings) or action.dest}", action.help


def test_every_argument_of_every_command_has_help():
    arguments = list(_arguments(build_parser(), "idgen"))
    assert "idgen token create --biz" in dict(arguments)  # the walk reaches token's actions
    assert [where for where, text in arguments if not text or text == argparse.SUPPRESS] == []


def test_json_logs_on_a_client_only_install_are_one_line_saying_what_to_install():
    program = ("import sys; sys.modules['pythonjsonlogger'] = None\n"
               "from idgen_cli.main import main; sys.exit(main(['--log-format', 'json', 'proto']))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60, env={**os.environ})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("idgen: error: --log-format json needs python-json-logger")
    assert "pip install 'idgen[server]'" in result.stderr


def test_next_json_prints_the_ids_as_strings(start_server):
    server = start_server([], extra_args=["--drain", "0"])  # the embedded database's "default"
    result = idgen("next", "default", "--count", "3", "--json", "--target", server.address)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert list(printed) == ["biz_type", "ids"] and printed["biz_type"] == "default"
    assert all(isinstance(i, str) and i.isdigit() for i in printed["ids"])
    ids = [int(i) for i in printed["ids"]]
    assert len(ids) == 3 and ids == sorted(set(ids))
