"""Waiting for something to happen: poll with a deadline, never sleep to synchronise."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["eventually", "poll", "wait_until"]

T = TypeVar("T")


def poll(condition: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """``condition()``'s first truthy value within ``timeout`` seconds, else its last value.

    It is asked once more when the deadline has passed, so a slow last wait costs nothing.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_until(condition: Callable[[], T], timeout: float = 20.0,
               message: str | Callable[[], str] = "the condition", *,
               interval: float = 0.02,
               ignoring: type[BaseException] | tuple[type[BaseException], ...] = ()) -> T:
    """``condition()``'s first truthy value; an ``AssertionError`` after ``timeout`` seconds.

    ``message`` says what was awaited (a callable is asked at the deadline, for what
    is known only then). Exceptions of the ``ignoring`` types count as "not yet"; the
    last one is chained to the failure.
    """
    last: list[BaseException] = []

    def attempt() -> T | None:
        try:
            value = condition()
        except ignoring as exc:
            last[:] = [exc]
            return None
        last.clear()
        return value

    value = poll(attempt, timeout, interval)
    if value:
        return value
    text = message() if callable(message) else message
    raise AssertionError(f"timed out after {timeout:g}s waiting for {text}") from (
        last[0] if last else None)


def eventually(call: Callable[[], T], timeout: float = 20.0, *,
               errors: type[BaseException] | tuple[type[BaseException], ...] = Exception,
               interval: float = 0.1) -> T:
    """``call()``'s result once it stops raising ``errors``; its last error after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except errors:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)
