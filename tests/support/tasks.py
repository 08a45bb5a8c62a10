"""The asyncio tests' counterpart of ``no_idgen_thread_outlives_its_test``."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

__all__ = ["no_task_outlives_its_test", "pending_tasks"]


def pending_tasks(before: set[asyncio.Task[object]]) -> list[str]:
    """The names of the tasks, not in ``before``, that are not done (the current one aside)."""
    return sorted(t.get_name() for t in asyncio.all_tasks() - before
                  if not t.done() and t is not asyncio.current_task())


@pytest.fixture(autouse=True)
async def no_task_outlives_its_test() -> AsyncIterator[None]:
    """Every task idgen starts on the loop has ended when the test's clients are closed."""
    before = asyncio.all_tasks()
    yield
    for _ in range(3):  # let tasks cancelled at the very end run their last step
        await asyncio.sleep(0)
    left = pending_tasks(before)
    assert not left, f"tasks still pending after the test: {left}"
