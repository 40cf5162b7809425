"""End to end through a real MTA: timer -> validator -> sender -> Postfix -> the dev sink."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path

import pytest

from kairos.kafka.clients import make_producer
from kairos.sink import start_sink
from schemas.codec import decode, encode
from schemas.events import Delivered, MessageContent, Scheduled
from tests.integration.conftest import Stack, Watcher, free_port
from tests.integration.postfix import Postfix, available

pytestmark = pytest.mark.kafka


@pytest.fixture
def postfix(stack: Stack) -> Iterator[Postfix]:
    reason = available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Postfix test: {reason}")
        pytest.skip(reason)
    sink_port = free_port()
    sink = start_sink("127.0.0.1", sink_port, stack.outbox)
    # Postfix's daemons run as the postfix user: its folders must be reachable, and pytest's
    # temporary folders are private to root
    base = Path(tempfile.mkdtemp(prefix="kairos-postfix-"))
    base.chmod(0o755)
    mta = Postfix(base, stack.settings.relay_port, sink_port)
    mta.start()
    try:
        yield mta
    finally:
        mta.stop()
        sink.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_relay_through_postfix_to_the_sink(stack: Stack, postfix: Postfix) -> None:
    stack.start("ingest", "timer", "validator", "sender")
    account, _ = stack.create_account("senders", domain="x.test")
    due = math.floor(time.time()) + 2
    now = datetime.now(UTC)
    mime = (
        "From: Kairos <hello@x.test>\r\nTo: user@y.test\r\nSubject: through postfix\r\n"
        "Message-ID: <pf-1@x.test>\r\nX-Scheduled-At: 1\r\n\r\nhello via a real MTA\r\n"
    )
    event = Scheduled(
        occurred_at=now,
        account_id=account,
        message_id="pf-1",
        due_at=due,
        submitted_at=now,
        source="smtp",
        content=MessageContent(
            mail_from="hello@x.test",
            rcpt_to=["user@y.test"],
            from_domain="x.test",
            mime=mime,
            size=len(mime),
        ),
    )
    async with Watcher(stack.settings.kafka_bootstrap or "", stack.settings.topic("outcomes")) as w:
        producer = make_producer(stack.settings.kafka_bootstrap or "")
        await producer.start()
        await producer.send_and_wait(stack.settings.topic("schedule"), encode(event), key=b"pf-1")
        await producer.stop()
        await w.wait_for(lambda r: len(r) >= 1, timeout=60, what="the outcome")
        outcome = decode(w.records[0][1], "outcomes")
        assert isinstance(outcome, Delivered), outcome
        assert "queued as" in outcome.smtp_text.lower(), "Postfix answered, not the sink"
        deadline = time.monotonic() + 30
        emls: list[Path] = []
        while not emls and time.monotonic() < deadline:
            emls = list(stack.outbox.glob("*.eml"))
            await asyncio.sleep(0.1)
        assert emls, f"nothing reached the sink: {postfix.log_tail()}"
        msg = message_from_bytes(emls[0].read_bytes())
        assert msg["Message-ID"] == "<pf-1@x.test>"
        assert msg["X-Scheduled-At"] is None, "internal headers are not relayed"
        assert "postfix" in msg["Received"].lower() or "relay.kairos.test" in msg["Received"]
        assert float(emls[0].name.split("-", 1)[0]) >= due
        assert postfix.relayed(), postfix.log_tail()
