"""One way for tests to wait for state they cannot be told about: poll it, bounded.

Other processes (storages replicating, a daemon exiting, a tracker noticing a
storage) change state that no event in the test announces, so the test polls.
Both helpers poll `check` until it returns something truthy and return that
value; `wait_until` fails with the `what` that was awaited after `timeout`
seconds, `eventually` is bounded by the caller's trio deadline.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

import trio

log = logging.getLogger(__name__)

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Blocking: call `check` every `interval` seconds until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]], *, interval: float = 0.05, what: str = ""
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None], *, interval: float = 0.05, what: str = ""
) -> T: ...


async def eventually(
    check: Callable[[], object], *, interval: float = 0.05, what: str = ""
) -> object:
    """Async: poll `check` (a plain or an async function) until it returns a truthy value.

    No timeout of its own, as trio wants: bound it with ``trio.fail_after`` (and
    every async test has a deadline anyway). `what` names the wait in debug logs.
    """
    polls = 0
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        polls += 1
        if polls % 100 == 0:
            log.debug("still waiting for %s after %d polls", what or check, polls)
        await trio.sleep(interval)
