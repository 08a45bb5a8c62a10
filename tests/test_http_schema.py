"""Schemathesis against a live ``idgen serve --http-listen``: whatever a client sends within
(and around) the OpenAPI document, the server answers without a 5xx and as the document says.

It runs schemathesis's own command line (every check and phase but one) rather than its
pytest plugin, which does not work with the pytest this suite runs on. The check left out,
``positive_data_acceptance``, expects every request the schema allows to succeed; but a
floor above every ID handed out is refused by design (400: a floor exists to keep a client's
IDs increasing, not to skip ahead), and no schema can say which floors those are.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ServerProcess
from tests.support.stores import prepare
from tests.support.tokens import cli_env

pytestmark = pytest.mark.slow


def test_no_request_gets_a_5xx_or_an_answer_outside_the_document(tmp_path):
    url = f"sqlite:///{tmp_path}/idgen.db"
    prepare([url], "default", step=1000)  # the document's example biz type
    server = ServerProcess([url], extra_args=["--http-listen", "127.0.0.1:0"], cwd=str(tmp_path),
                           env=cli_env())
    server.start()
    try:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run",
             f"{server.http_url}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
             "--max-examples", "100",
             "--no-color", "--warnings", "off", "--request-timeout", "10"],
            capture_output=True, text=True, timeout=240, cwd=tmp_path)
    finally:
        server.stop()
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert " passed" in report and "failed" not in report.split("SUMMARY")[-1], report
    assert not any("Traceback" in line for line in server.output), "".join(server.output)
