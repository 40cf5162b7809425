"""Structured logging (structlog): key=value lines on a console, JSON lines in a cluster."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog


class RepeatFilter(logging.Filter):
    """Lets a message through once per ``every`` seconds (counted by its template): a client
    retrying a broker that is down logs the same line hundreds of times a second, and the one
    line that matters scrolls away. The next line that passes says how many were held back."""

    def __init__(self, every: float = 10.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.every, self.clock = every, clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in {self.every:g}s)"
        return True


def quiet_retries(every: float = 10.0) -> None:
    """Install a :class:`RepeatFilter` on every Kafka client logger (logger filters are not
    inherited, so each module's logger gets it)."""
    import aiokafka
    import aiokafka.consumer.fetcher
    import aiokafka.consumer.group_coordinator
    import aiokafka.producer.sender  # noqa: F401

    repeat = RepeatFilter(every)
    for name in list(logging.Logger.manager.loggerDict):
        if name.split(".")[0] in ("aiokafka", "faust", "mode"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, RepeatFilter) for f in logger.filters):
                logger.addFilter(repeat)


def configure(level: str = "INFO", fmt: str = "console") -> None:
    """Configure structlog and the standard library's logging once, at start-up."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=processors[:-1])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode", "kafka", "mail.log"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    quiet_retries()


def get_logger(name: str) -> Any:
    """A bound structlog logger named ``name``."""
    return structlog.get_logger(name)
