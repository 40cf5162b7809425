"""The ``kairos`` command: run services, the whole pipeline, the local broker, topics."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import click

from kairos.deploy import deploy
from kairos.kafka.cli import kafka
from kairos.logging import configure, get_logger
from kairos.settings import KairosSettings
from kairos.supervisor import SERVICES, Supervisor, service_command
from schemas.registry import DEAD_LETTER

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
    """Run one service in the foreground until SIGINT/SIGTERM (``python -m services.<name>``,
    each service's own composition root; the sink is a development tool of Kairos's own)."""
    if service == "sink":
        from kairos import sink
        from kairos.service import run_until_stopped

        settings = _settings()
        run_until_stopped(
            lambda stop: sink.run(settings.sink_host, settings.sink_port, settings.outbox_dir, stop)
        )
        return
    os.execv(sys.executable, [sys.executable, *service_command(service)])


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


@main.command("trace")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per step.")
def trace_command(message_id: str, as_json: bool) -> None:
    """A message's whole path, read from the topics: each event, when, which service wrote
    it, how late."""
    import json

    from kairos.trace import trace

    settings = _settings()
    steps = asyncio.run(trace(settings, _bootstrap(settings), message_id))
    if not steps:
        raise click.ClickException(f"no event of message {message_id} on the topics")
    for step in steps:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "at": step.at.isoformat(),
                        "topic": step.topic,
                        "type": step.type,
                        "service": step.service,
                        "attempt": step.attempt,
                        **step.detail,
                    }
                )
            )
        else:
            click.echo(step.line(steps[0].at))


@main.group("dead-letter")
def dead_letter() -> None:
    """Records a stage could not decode or process: list them, replay them after a fix."""


@dead_letter.command("list")
@click.option("--stage", help="Only this stage's (timer, validator, sender).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dead_letter_list(stage: str | None, as_json: bool) -> None:
    """Print every dead letter: id, when, stage, reason, origin and error."""
    from kairos.kafka.deadletter import read_dead_letters
    from schemas.codec import encode

    settings = _settings()
    letters = asyncio.run(read_dead_letters(_bootstrap(settings), settings.topic(DEAD_LETTER)))
    for letter in letters:
        if stage and letter.stage != stage:
            continue
        if as_json:
            click.echo(encode(letter).decode())
        else:
            click.echo(
                f"{letter.event_id}  {letter.occurred_at:%Y-%m-%d %H:%M:%S}  {letter.stage:9} "
                f"{letter.reason:13} {letter.origin_topic}:{letter.origin_partition}:"
                f"{letter.origin_offset}  {letter.error[:120]}"
            )


@dead_letter.command("replay")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
@click.option("--stage", help="With --all: only this stage's.")
def dead_letter_replay(event_ids: tuple[str, ...], everything: bool, stage: str | None) -> None:
    """Write dead letters (by id, or --all) back onto their origin topics."""
    from kairos.kafka.deadletter import read_dead_letters, replay

    if not event_ids and not everything:
        raise click.UsageError("name dead-letter ids, or --all")
    settings = _settings()
    bootstrap = _bootstrap(settings)
    letters = asyncio.run(read_dead_letters(bootstrap, settings.topic(DEAD_LETTER)))
    chosen = [
        letter
        for letter in letters
        if (letter.event_id in event_ids)
        or (everything and (stage is None or letter.stage == stage))
    ]
    unknown = set(event_ids) - {letter.event_id for letter in letters}
    if unknown:
        raise click.ClickException(f"no dead letter with id {', '.join(sorted(unknown))}")
    n = asyncio.run(replay(bootstrap, chosen))
    click.echo(f"replayed {n} record(s) onto their origin topics")


#: Restarts in a row (each within a minute of the last) after which ``kairos up`` gives up.
RESTART_LIMIT = 5
DEMO_DOMAIN = "demo.kairos.test"


def _seed_demo(settings: KairosSettings, supervisor: Supervisor) -> Any:
    """The demo account (created on first start, remembered in <state_dir>/demo.json)."""
    import json

    import httpx

    from kairos.token import admin_token

    http = f"http://{settings.http_host}:{settings.http_port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if "ingest" in supervisor.exited():
            raise click.ClickException("ingest exited during start-up")
        try:
            if httpx.get(f"{http}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    headers = {"Authorization": f"Bearer {admin_token(settings)}"}
    path = settings.state_dir / "demo.json"
    if path.exists():
        demo = json.loads(path.read_text())
        r = httpx.get(f"{http}/admin/accounts/{demo['account_id']}", headers=headers, timeout=30)
        if r.status_code == 200:
            return demo
    r = httpx.post(
        f"{http}/admin/accounts",
        headers=headers,
        timeout=30,
        json={
            "name": f"demo-{int(time.time())}",
            "plan": "pro",
            "domain": DEMO_DOMAIN,
            "verified": True,
        },
    )
    r.raise_for_status()
    demo = {"account_id": r.json()["account_id"], "api_key": r.json()["api_key"]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(demo, f)
    return demo


@main.command()
def up() -> None:
    """Run the whole pipeline on the embedded default: the local broker (unless
    KAIROS_KAFKA_BOOTSTRAP is set), the dev SMTP sink and all four services, each restarted
    (with backoff) if it dies. Ctrl-C stops all of it."""
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
    supervisor = Supervisor({**os.environ, "KAIROS_KAFKA_BOOTSTRAP": bootstrap})
    for name in ("sink", *SERVICES):
        supervisor.start(name)
    stopping = False

    def _stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        demo = _seed_demo(settings, supervisor)
        http = f"http://{settings.http_host}:{settings.http_port}"
        smtp = f"{settings.smtp_host}:{settings.smtp_port}"
        click.echo(
            f"\nKairos is up: HTTP {http}  (Kafka {bootstrap}, outbox {settings.outbox_dir}). "
            "Ctrl-C stops everything.\n"
            f"Demo account {demo['account_id']}, sending domain {DEMO_DOMAIN} (verified).\n\n"
            f"  export KAIROS_API_KEY={demo['api_key']}\n\n"
            "Schedule a message 10 seconds ahead (it lands in the outbox as an .eml file):\n"
            f'  curl -s -X POST {http}/email -H "Authorization: Bearer $KAIROS_API_KEY" \\\n'
            "    -H 'Content-Type: application/json' \\\n"
            f'    -d \'{{"from": "Demo <hello@{DEMO_DOMAIN}>", "to": "user@example.org", '
            '"subject": "Hi", "text": "Hello", '
            "\"scheduledAt\": '$(($(date +%s)+10))'}'\n\n"
            f"Over SMTP (submission on {smtp}):\n"
            f"  swaks --server {smtp} --auth PLAIN --auth-user demo "
            f'--auth-password "$KAIROS_API_KEY" \\\n'
            f"    --from hello@{DEMO_DOMAIN} --to user@example.org "
            '--add-header "X-Scheduled-At: $(($(date +%s)+10))"\n'
        )
        while not stopping:
            dead = supervisor.exited()
            for name in supervisor.restart_exited(time.monotonic(), limit=RESTART_LIMIT):
                click.echo(f"{name} exited ({dead.get(name)}); restarted", err=True)
            failing = supervisor.failing(RESTART_LIMIT)
            if failing:
                click.echo(
                    f"{', '.join(failing)} kept dying ({RESTART_LIMIT} restarts in a row); "
                    "stopping everything",
                    err=True,
                )
                code = 1
                break
            time.sleep(0.2)
    finally:
        supervisor.stop_all()
        if started_broker:
            LocalKafka.from_settings(settings).stop()
        click.echo("stopped")
    sys.exit(code)


main.add_command(kafka)
main.add_command(deploy)


def _plugins() -> None:
    """Command groups that packages register under the ``kairos.commands`` entry point (the
    reference data's ``admin``): the core knows no service, the packages name themselves."""
    from importlib.metadata import entry_points

    for point in entry_points(group="kairos.commands"):
        main.add_command(point.load(), point.name)


_plugins()

if __name__ == "__main__":
    main()
