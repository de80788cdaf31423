"""One way for tests to wait for state they cannot be told about: poll it, bounded.

Other processes (storages replicating, a daemon exiting, a tracker noticing a
storage) change state that no event in the test announces, so the test polls.
Both helpers poll `check` until it returns something truthy, return that value,
and fail with the `what` that was awaited once `timeout` seconds have passed.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

import trio

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
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
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
) -> T: ...


async def eventually(
    check: Callable[[], object],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
) -> object:
    """Async: like `wait_until`; `check` may be a plain or an async function."""
    with trio.move_on_after(timeout):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            await trio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
