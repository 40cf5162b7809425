"""The injectable clock. Logic takes ``now``; only entry points own a clock.

``SystemClock`` reads the wall clock; ``FakeClock`` stands still until a test moves it, so
time-driven behaviour is tested exactly and instantly, without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """A source of the current time."""

    def now(self) -> float:
        """Unix time in seconds (fractional)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to; ``sleep`` returns once the clock has advanced."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._moved = asyncio.Event() if _has_loop() else None

    def now(self) -> float:
        return self._now

    def set(self, now: float) -> None:
        """Jump to ``now`` (never backwards)."""
        if now < self._now:
            raise ValueError("a clock does not go backwards")
        self._now = now
        if self._moved is not None:
            self._moved.set()
            self._moved = asyncio.Event()

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.set(self._now + seconds)

    async def sleep(self, seconds: float) -> None:
        until = self._now + seconds
        while self._now < until:
            if self._moved is None:
                self._moved = asyncio.Event()
            await self._moved.wait()


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def to_datetime(ts: float) -> datetime:
    """A UTC datetime of unix time ``ts``."""
    return datetime.fromtimestamp(ts, tz=UTC)
