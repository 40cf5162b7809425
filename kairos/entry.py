"""What every service's entry point does before its own work: typed settings parsed once,
logging configured, the broker resolved (the local one started if needed), a system clock,
and SIGINT/SIGTERM wired to a stop event. Each service's composition root
(``services/<name>/__main__.py``) calls :func:`serve` with its own ``run``; this module never
imports a service."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from kairos.clock import Clock, SystemClock
from kairos.logging import configure
from kairos.settings import KairosSettings

AsyncMain = Callable[[KairosSettings, str, Clock, Any], Awaitable[Any]]


def prepare(service: str) -> tuple[KairosSettings, str, Clock]:
    """Settings, the bootstrap servers, and the clock, for ``service`` starting up (and its
    tracing, when an OTLP endpoint is configured)."""
    from kairos import tracing
    from kairos.kafka.bootstrap import resolve_bootstrap
    from kairos.kafka.local import LocalKafkaError

    settings = KairosSettings()
    configure(settings.log_level, settings.log_format)
    try:
        bootstrap = resolve_bootstrap(settings)
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    tracing.configure(service)
    return settings, bootstrap, SystemClock()


def serve(main: AsyncMain) -> None:
    """Run ``main(settings, bootstrap, clock, stop)`` until SIGINT/SIGTERM."""
    from kairos.service import run_until_stopped

    parts = main.__module__.split(".")
    settings, bootstrap, clock = prepare(parts[1] if len(parts) > 1 else parts[0])
    run_until_stopped(lambda stop: main(settings, bootstrap, clock, stop))
