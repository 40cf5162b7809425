"""``kairos up`` (what ``make run`` starts), as a user runs it, on the test broker: a service
killed with SIGKILL is restarted and the stack still delivers; an idle stack logs no ERROR;
Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kairos.ports import free_port
from tests.integration.conftest import scheduled_email

pytestmark = pytest.mark.kafka


def children(pid: int) -> dict[str, int]:
    """The service processes ``pid`` started: {service: pid}."""
    out = subprocess.run(["pgrep", "-P", str(pid), "-a"], capture_output=True, text=True)
    found = {}
    for line in out.stdout.splitlines():
        child, _, command = line.partition(" ")
        match = re.search(r"-m services\.(\w+)|run (sink)", command)
        if match:
            found[match[1] or match[2]] = int(child)
    return found


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout}s")


@pytest.fixture
def up(bootstrap: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    prefix = f"up{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ,
        "KAIROS_KAFKA_BOOTSTRAP": bootstrap,
        "KAIROS_TOPIC_PREFIX": f"{prefix}.",
        "KAIROS_GROUP_PREFIX": prefix,
        "KAIROS_STATE_DIR": str(tmp_path / "state"),
        "KAIROS_OUTBOX_DIR": str(tmp_path / "outbox"),
        "KAIROS_HTTP_PORT": str(port),
        "KAIROS_SMTP_PORT": str(free_port()),
        "KAIROS_SINK_PORT": str(sink := free_port()),
        "KAIROS_RELAY_PORT": str(sink),
        "KAIROS_TOPIC_PARTITIONS": "2",
    }
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kairos.cli", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, tmp_path, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_a_killed_service_is_restarted_and_the_stack_still_delivers(
    up: tuple[subprocess.Popen[bytes], Path, int],
) -> None:
    proc, base, port = up
    log = base / "up.log"
    demo = base / "state" / "demo.json"
    wait_for(lambda: "Kairos is up" in log.read_text(errors="replace"), 180, "kairos up")
    api_key = json.loads(demo.read_text())["api_key"]
    before = children(proc.pid)
    assert set(before) == {"sink", "ingest", "timer", "validator", "sender"}, before

    os.kill(before["validator"], signal.SIGKILL)
    wait_for(lambda: "validator exited (-9); restarted" in log.read_text(), 30, "the restart")
    wait_for(lambda: children(proc.pid).get("validator") not in (None, before["validator"]),
             30, "a new validator")  # fmt: skip

    due = int(time.time()) + 3
    r = httpx.post(
        f"http://127.0.0.1:{port}/email",
        headers={"Authorization": f"Bearer {api_key}"},
        json=scheduled_email(
            due,
            **{"from": "hello@demo.kairos.test"},
            to="user@example.org",
            subject="after the restart",
            text="still delivering",
        ),
        timeout=30,
    )
    assert r.status_code == 202, r.text
    outbox = base / "outbox"
    wait_for(lambda: outbox.exists() and any(outbox.glob("*.eml")), 120, "the delivery")
    [eml] = list(outbox.glob("*.eml"))
    assert float(eml.name.split("-")[0]) >= due  # never early
    assert b"still delivering" in eml.read_bytes()

    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert children(proc.pid) == {}
    text = log.read_text(errors="replace")
    assert "stopped" in text
    errors = [line for line in text.splitlines() if re.search(r"\[error|\bERROR\b", line)]
    assert errors == [], errors
