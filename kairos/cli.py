"""The ``kairos`` command: run services, the whole pipeline, the local broker, topics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import click

from kairos.clock import SystemClock
from kairos.kafka.cli import kafka
from kairos.logging import configure, get_logger
from kairos.settings import KairosSettings

SERVICES = ("ingest", "timer", "validator", "sender")

log = get_logger("kairos.cli")


def _settings() -> KairosSettings:
    settings = KairosSettings()
    configure(settings.log_level, settings.log_format)
    return settings


def _bootstrap(settings: KairosSettings) -> str:
    from kairos.kafka.bootstrap import resolve_bootstrap
    from kairos.kafka.local import LocalKafkaError

    try:
        return resolve_bootstrap(settings)
    except LocalKafkaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@click.group()
def main() -> None:
    """Kairos: scheduled email over Apache Kafka."""


@main.command()
@click.argument("service", type=click.Choice([*SERVICES, "sink"]))
def run(service: str) -> None:
    """Run one service in the foreground until SIGINT/SIGTERM."""
    from kairos.service import run_until_stopped

    settings = _settings()
    if service == "sink":
        from kairos import sink

        run_until_stopped(
            lambda stop: sink.run(settings.sink_host, settings.sink_port, settings.outbox_dir, stop)
        )
        return
    bootstrap = _bootstrap(settings)
    clock = SystemClock()
    if service == "timer":
        from services.timer.app import run as run_timer

        run_timer(settings, bootstrap, clock)
        return
    module: Any
    if service == "ingest":
        from services.ingest import service as module
    elif service == "validator":
        from services.validator import service as module
    else:
        from services.sender import service as module
    run_until_stopped(lambda stop: module.run(settings, bootstrap, clock, stop))


@main.group()
def topics() -> None:
    """Kafka topics declared by the registry."""


@topics.command("apply")
def topics_apply() -> None:
    """Create missing topics; report drift of existing ones (exit 1 on drift)."""
    from kairos.kafka.topics import apply_topics

    settings = _settings()
    results = asyncio.run(apply_topics(settings, _bootstrap(settings)))
    for r in results:
        click.echo(f"{r.action:8} {r.name}" + (f"  ({r.detail})" if r.detail else ""))
    if any(r.action == "drift" for r in results):
        sys.exit(1)


@topics.command("list")
def topics_list() -> None:
    """Print the registry: name, partitions, cleanup policy, producers -> consumers."""
    from kairos.kafka.topics import partitions_of
    from schemas.registry import TOPICS

    settings = KairosSettings()
    for spec in TOPICS:
        click.echo(
            f"{settings.topic(spec.name):32} {partitions_of(spec, settings):>3}  "
            f"{spec.cleanup_policy:8} {','.join(spec.producers)} -> {','.join(spec.consumers)}"
        )


def _spawn(service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "kairos.cli", "run", service], env=env)


@main.command()
def up() -> None:
    """Run the whole pipeline on the embedded default: the local broker (unless
    KAIROS_KAFKA_BOOTSTRAP is set), the dev SMTP sink and all four services. Ctrl-C stops
    all of it."""
    from kairos.kafka.local import LocalKafka
    from kairos.kafka.topics import apply_topics

    settings = _settings()
    started_broker = False
    if settings.kafka_bootstrap is None:
        started_broker = not LocalKafka.from_settings(settings).status().running
    bootstrap = _bootstrap(settings)
    for r in asyncio.run(apply_topics(settings, bootstrap)):
        if r.action != "ok":
            click.echo(f"topic {r.action}: {r.name} {r.detail}")
    env = {**os.environ, "KAIROS_KAFKA_BOOTSTRAP": bootstrap}
    procs = {name: _spawn(name, env) for name in ("sink", *SERVICES)}
    stopping = False

    def _stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    click.echo(
        f"\nKairos is up: HTTP http://{settings.http_host}:{settings.http_port}  "
        f"(Kafka {bootstrap}, outbox {settings.outbox_dir}). Ctrl-C stops everything.\n"
        f"Try:\n  curl -s -X POST http://{settings.http_host}:{settings.http_port}/email "
        '-H \'Content-Type: application/json\' \\\n    -d \'{"from": "hello@example.com", '
        '"to": "user@example.org", "subject": "Hi", "text": "Hello", '
        f'"scheduledAt": {int(time.time()) + 10}}}\'\n'
    )
    code = 0
    try:
        while not stopping:
            dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            if dead:
                click.echo(f"service exited: {dead}; stopping the rest", err=True)
                code = 1
                break
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 20
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
        if started_broker:
            LocalKafka.from_settings(settings).stop()
        click.echo("stopped")
    sys.exit(code)


main.add_command(kafka)

if __name__ == "__main__":
    main()
