"""Copies of one dispatch (same message id and attempt) are relayed once: copies in one
fetch, handled side by side, as well as copies after a restart."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from schemas.events import Dispatch, MessageContent
from tests.integration.conftest import Stack, publish

pytestmark = pytest.mark.kafka


def dispatch(message_id: str, attempt: int = 1) -> Dispatch:
    now = datetime.now(UTC)
    mime = (
        f"From: a@x.test\r\nTo: ok@y.test\r\nSubject: dedupe\r\nMessage-ID: <{message_id}@x.test>"
        "\r\n\r\nbody\r\n"
    ).encode()
    return Dispatch(
        occurred_at=now,
        account_id="acc_test",
        message_id=message_id,
        due_at=int(time.time()),
        attempt=attempt,
        submitted_at=now,
        emitted_at=now,
        lateness_ms=0,
        validated_at=now,
        content=MessageContent(
            mail_from="a@x.test",
            rcpt_to=["ok@y.test"],
            from_domain="x.test",
            mime=mime.decode(),
            size=len(mime),
        ),
    )


def deliveries(stack: Stack, message_id: str) -> int:
    if not stack.outbox.exists():
        return 0
    needle = f"<{message_id}@x.test>".encode()
    return sum(1 for p in stack.outbox.glob("*.eml") if needle in p.read_bytes())


def wait_delivered(stack: Stack, ids: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(deliveries(stack, i) for i in ids):
            return
        time.sleep(0.1)
    raise AssertionError(f"not all of {ids} delivered")


def test_copies_of_a_dispatch_are_relayed_once(stack: Stack) -> None:
    stack.start("sink")
    # written before the sender starts: its first fetch holds every copy
    ids = [f"dup{i}" for i in range(5)]
    copies = [dispatch(i) for i in ids for _ in range(4)]
    asyncio.run(publish(stack, "dispatch", copies))
    stack.start("sender")
    wait_delivered(stack, ids)
    # a repeat after a restart (the timer re-emitting after a crash) is not relayed either
    stack.stop("sender")
    asyncio.run(publish(stack, "dispatch", [dispatch(ids[0]), dispatch("fresh")]))
    stack.start("sender")
    wait_delivered(stack, ["fresh"])
    counts = {i: deliveries(stack, i) for i in ids}
    assert counts == dict.fromkeys(ids, 1), counts
