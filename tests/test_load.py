"""Load: 64 concurrent callers against one real server on MariaDB (short; the long run is
``python -m tests.fault.load --duration 60``)."""
from __future__ import annotations

import pytest

from tests.fault import load

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]


def test_64_concurrent_callers_get_unique_ids_without_error_and_bounded_memory(mariadb_server):
    report = load.run(callers=64, duration=5, processes=4, say=lambda line: None)
    assert report.calls > 0 and report.errors == 0 and report.duplicates == 0, report.lines()
    assert report.worker_failures == {}
    # Memory settles once buffers and thread pools exist; it does not grow with calls.
    assert report.rss_end_kib < report.rss_start_kib * 1.5 + 32 * 1024, report.lines()
