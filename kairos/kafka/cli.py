"""``kairos kafka``: start, stop and inspect the local single-node Kafka broker.

Exit codes: 0 success; 1 ``status`` found no running broker; 2 a :class:`LocalKafkaError`
(printed as ``error: <reason>`` and ``  fix: <fix>`` on stderr).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from kairos.kafka.local import LocalKafka, LocalKafkaError
from kairos.settings import KairosSettings

P = ParamSpec("P")
R = TypeVar("R")


def _broker() -> LocalKafka:
    """The broker of the settings on the click context (the parent group's), else from env."""
    ctx = click.get_current_context(silent=True)
    settings = ctx.find_object(KairosSettings) if ctx is not None else None
    return LocalKafka.from_settings(settings if settings is not None else KairosSettings())


def _friendly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a :class:`LocalKafkaError` into two lines on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except LocalKafkaError as exc:
            click.echo(f"error: {exc.reason}", err=True)
            click.echo(f"  fix: {exc.fix}", err=True)
            raise SystemExit(2) from None

    return wrapper


@click.group(name="kafka")
def kafka() -> None:
    """The local single-node Apache Kafka broker (used when KAIROS_KAFKA_BOOTSTRAP is unset)."""


@kafka.command()
@click.option(
    "--timeout", default=90.0, show_default=True, help="Seconds to wait for the broker to answer."
)
@_friendly
def start(timeout: float) -> None:
    """Start the broker (download its jars first if needed); no-op if it is running."""
    broker = _broker()
    began = time.monotonic()
    was_running = broker.status().running
    bootstrap = broker.start(timeout=timeout)
    state = broker.status()
    verb = "already running" if was_running else f"started in {time.monotonic() - began:.1f}s"
    click.echo(f"kafka {verb}: {bootstrap} (pid {state.pid})")
    click.echo(f"  data: {state.data_dir}")
    click.echo(f"  log:  {state.log_file}")


@kafka.command()
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
@_friendly
def stop(timeout: float) -> None:
    """Stop the broker; its data is kept."""
    if _broker().stop(timeout=timeout):
        click.echo("kafka stopped")
    else:
        click.echo("kafka was not running")


@kafka.command()
@_friendly
def status() -> None:
    """Show whether the broker runs; exit code 1 when it does not."""
    state = _broker().status()
    if state.running:
        click.echo(f"kafka running: {state.bootstrap} (pid {state.pid})")
    elif state.pid is not None:
        click.echo(f"kafka not answering on {state.bootstrap} (pid {state.pid}, starting?)")
    else:
        click.echo(f"kafka not running ({state.bootstrap})")
    click.echo(f"  data: {state.data_dir}")
    click.echo(f"  log:  {state.log_file}")
    if not state.running:
        raise SystemExit(1)


@kafka.command()
@_friendly
def jars() -> None:
    """Download the broker jars if needed and print the folder that holds them."""
    click.echo(str(_broker().ensure_jars()))


if __name__ == "__main__":
    kafka()
