"""Issue 18 on a real broker: local time per recipient, spread sends, one-click unsubscribe.

* The submission core runs in-process on a fake clock over the real transactional publisher,
  and the real timer process (its ticker off) is driven by ticks the test writes: a five-zone
  submission fires at five local 09:00s, each DST case at its second, a spread batch inside its
  window, and nothing fires a second early (the tick one second before fires nothing).
* The passed-time policies, on the schedule stream and the outcomes topic.
* Unsubscribe end to end, every service its own process: three messages to one recipient,
  the first's List-Unsubscribe link (DKIM-verified with dkimpy over the new fields) clicked,
  the other two recorded as ``recipient_suppressed`` failures.
"""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kairos.clock import FakeClock, SystemClock
from kairos.kafka.producer import DurableProducer, TransactionalProducer
from schemas.codec import decode, decode_as
from schemas.events import Due, Failed, Scheduled
from services.ingest.http import create_app
from services.ingest.publish import KafkaPublisher
from services.ingest.sendgrid import sendgrid_router
from services.ingest.submit import Submitter
from tests.integration.conftest import Stack, Watcher, read_values_to_end
from tests.integration.test_smtp_submission import wait_eml
from tests.integration.test_timer import Schedule
from tests.unit.ingest.fakes import API_KEY, View, Writer, batch

pytestmark = pytest.mark.kafka

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


class InProcessIngest:
    """The ingest HTTP app over fake reference data and a fake clock, publishing for real
    (``accept_by`` stamped from the wall clock: the broker's append time is real)."""

    def __init__(self, stack: Stack) -> None:
        bootstrap = stack.settings.kafka_bootstrap or ""
        self.transactions = TransactionalProducer(
            bootstrap, f"{stack.settings.group('t18')}-tx", "t18-transactions"
        )
        self.plain = DurableProducer(bootstrap, "t18-plain")
        self.publisher = KafkaPublisher(
            self.transactions,
            self.plain,
            stack.settings.topic("schedule"),
            SystemClock(),
            outcomes=stack.settings.topic("outcomes"),
        )
        self.view = View()
        self.writer = Writer(self.view)

    async def __aenter__(self) -> InProcessIngest:
        await self.transactions.start()
        await self.plain.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transactions.stop()
        await self.plain.stop()

    def client(self, clock: FakeClock) -> httpx.AsyncClient:
        submitter = Submitter(self.view, self.publisher, clock)

        async def broadcast(account_id: str, batch_id: str, action: str) -> None:
            return None

        routers = [sendgrid_router(self.view, self.writer, broadcast, submitter, clock)]  # type: ignore[arg-type]
        app = create_app(submitter, self.view, lambda: True, None, routers)
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://kairos", headers=AUTH
        )


def email(**extra: Any) -> dict[str, Any]:
    return {"from": "hi@example.com", "to": "u@example.org", "subject": "s", "text": "t", **extra}


#: five zones with whole, half and three-quarter hour offsets: their 09:00s within 90 minutes
FIVE = ["Asia/Bangkok", "Asia/Yangon", "Asia/Dhaka", "Asia/Kathmandu", "Asia/Kolkata"]


def address(zone: str) -> str:
    return f"{zone.split('/')[1].lower()}@example.org"


#: (submitted at, zone, local time asked, the second it is due): DST transitions of 2026 and
#: 2027 (a gap moves to its end, a repeated time is its first occurrence)
DST = [
    ("2026-03-06T00:00:00", "America/New_York", "2026-03-08T02:30:00", "2026-03-08T07:00:00"),
    ("2026-03-27T00:00:00", "Europe/Berlin", "2026-03-29T02:30:00", "2026-03-29T01:00:00"),
    ("2026-04-02T00:00:00", "Australia/Adelaide", "2026-04-05T02:30:00", "2026-04-04T16:00:00"),
    ("2026-10-01T00:00:00", "Australia/Lord_Howe", "2026-10-04T02:15:00", "2026-10-03T15:30:00"),
    ("2026-10-23T00:00:00", "Europe/Berlin", "2026-10-25T02:30:00", "2026-10-25T00:30:00"),
    ("2026-10-30T00:00:00", "America/New_York", "2026-11-01T01:30:00", "2026-11-01T05:30:00"),
    ("2027-03-12T00:00:00", "America/New_York", "2027-03-14T02:00:00", "2027-03-14T07:00:00"),
    ("2027-03-26T00:00:00", "Europe/Berlin", "2027-03-28T02:30:00", "2027-03-28T01:00:00"),
    ("2027-03-31T00:00:00", "America/Mexico_City", "2027-04-04T02:30:00", "2027-04-04T08:30:00"),
    ("2027-10-01T00:00:00", "Australia/Adelaide", "2027-10-03T02:30:00", "2027-10-02T16:30:00"),
    ("2027-10-29T00:00:00", "Europe/Berlin", "2027-10-31T02:30:00", "2027-10-31T00:30:00"),
]


async def scheduled_on(stack: Stack) -> dict[str, Scheduled]:
    """Every scheduled event on the stack's schedule stream, by message id."""
    values = await read_values_to_end(
        stack.settings.kafka_bootstrap or "", stack.settings.topic("schedule")
    )
    events = (decode(v, "schedule") for v in values)
    return {e.message_id: e for e in events if isinstance(e, Scheduled)}


async def test_dst_cases_on_the_schedule_stream(stack: Stack) -> None:
    """Each case submitted two days ahead on its own (fake) clock; its due second is on the
    schedule stream as the timer reads it."""
    expected = {}
    async with InProcessIngest(stack) as ingest:
        for submitted, zone, local, due in DST:
            async with ingest.client(FakeClock(utc(submitted))) as c:
                r = await c.post("/email", json=email(sendAt={"local": local, "timezone": zone}))
            assert r.status_code == 202, r.text
            expected[r.json()["id"]] = (zone, local, utc(due))
    scheduled = await scheduled_on(stack)
    got = {mid: (zone, local, scheduled[mid].due_at) for mid, (zone, local, _) in expected.items()}
    assert got == expected


async def test_five_zones_and_a_spread_batch_fire_at_their_seconds_never_early(
    stack: Stack,
) -> None:
    """The timer on ticks the test writes: one second before each due second (nothing may
    fire), then the second itself. Days ahead of the wall clock, so every tick is the
    timer's now."""
    stack.env["KAIROS_TICK_INTERVAL"] = "0"
    stack.start("timer")
    bootstrap = stack.settings.kafka_bootstrap or ""
    day = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()
    nines = {zone: local_nine(zone, day) for zone in FIVE}
    spread_at = min(nines.values()) - 600
    async with (
        InProcessIngest(stack) as ingest,
        ingest.client(FakeClock(spread_at - 3600)) as c,
        Watcher(bootstrap, stack.settings.topic("due")) as w,
        Schedule(stack) as sched,
    ):
        await sched.tick(spread_at - 3600)  # the timer's first now: its walk starts here
        to = [{"email": address(zone), "timezone": zone} for zone in FIVE]
        r = await c.post("/email", json=email(to=to, sendAt={"local": f"{day}T09:00:00"}))
        assert r.status_code == 202, r.text
        five = {m["id"]: m["scheduled_at"] for m in r.json()["messages"]}
        assert sorted(five.values()) == sorted(nines.values())
        # a SendGrid batch of 40, spread over 120 s
        ingest.view.batches["spread"] = batch("spread", spread_at - 7200)
        r = await c.post(
            "/v3/mail/send",
            json={
                "personalizations": [{"to": [{"email": f"s{i}@example.org"}]} for i in range(40)],
                "from": {"email": "hi@example.com"},
                "subject": "spread",
                "content": [{"type": "text/plain", "value": "t"}],
                "send_at": spread_at,
                "batch_id": "spread",
                "deliver_within": 120,
            },
        )
        assert r.status_code == 202, r.text
        spread_ids = r.headers["X-Kairos-Message-Ids"].split(",")
        scheduled = await scheduled_on(stack)
        spread = {mid: scheduled[mid].due_at for mid in spread_ids}
        assert sorted(spread.values()) == [spread_at + 3 * i for i in range(40)]  # evenly
        expected = {**five, **spread}
        for second in sorted(set(expected.values())):
            await sched.tick(second - 1)
            await sched.tick(second)
        await w.wait_for(lambda r: len(r) >= len(expected), timeout=90, what="all due")
        dues = [decode_as(v, Due) for _, v in w.records]
    assert sorted(d.message_id for d in dues) == sorted(expected)
    for d in dues:
        assert d.due_at == expected[d.message_id]
        # fired by the tick of its own second, not by the one a second before: never early
        assert d.emitted_at == datetime.fromtimestamp(d.due_at, UTC), d.message_id
        if d.message_id in five:
            [zone] = [z for z in FIVE if address(z) == d.content.rcpt_to[0]]
            shown = d.emitted_at.astimezone(ZoneInfo(zone))
            assert (shown.date().isoformat(), shown.hour, shown.minute) == (day, 9, 0)


def local_nine(zone: str, day: str) -> int:
    """09:00 on ``day`` in ``zone``, from zoneinfo directly."""
    return int(datetime.fromisoformat(f"{day}T09:00:00").replace(tzinfo=ZoneInfo(zone)).timestamp())


async def test_passed_time_policies(stack: Stack) -> None:
    """10:00 UTC: 09:00 has passed in London and Lagos, not in New York."""
    bootstrap = stack.settings.kafka_bootstrap or ""
    now = utc("2026-12-03T10:00:00")
    to = [
        {"email": "london@example.org", "timezone": "Europe/London"},
        {"email": "ny@example.org", "timezone": "America/New_York"},
    ]
    ids: dict[str, list[dict[str, Any]]] = {}
    rejected: list[dict[str, Any]] = []
    async with InProcessIngest(stack) as ingest, ingest.client(FakeClock(now)) as c:
        for policy in ("next_day", "send_now", "skip"):
            r = await c.post(
                "/email", json=email(to=to, sendAt={"local": "09:00", "ifPassed": policy})
            )
            assert r.status_code == 202, r.text
            ids[policy] = r.json()["messages"]
            rejected += r.json()["rejected"]
        everyone_passed = await c.post(
            "/email", json=email(to=to[:1], sendAt={"local": "09:00", "ifPassed": "skip"})
        )
    assert everyone_passed.status_code == 400
    assert everyone_passed.json()["error"]["code"] == "LOCAL_TIME_PASSED"
    ny = utc("2026-12-03T14:00:00")
    assert [(m["to"], m["scheduled_at"]) for m in ids["next_day"]] == [
        (["london@example.org"], utc("2026-12-04T09:00:00")),
        (["ny@example.org"], ny),
    ]
    assert [(m["to"], m["scheduled_at"]) for m in ids["send_now"]] == [
        (["london@example.org"], None),
        (["ny@example.org"], ny),
    ]
    assert [(m["to"], m["scheduled_at"]) for m in ids["skip"]] == [(["ny@example.org"], ny)]
    assert [(r["to"], r["reason"]) for r in rejected] == [
        (["london@example.org"], "local_time_passed")
    ]
    schedule = [
        decode(v, "schedule")
        for v in await read_values_to_end(bootstrap, stack.settings.topic("schedule"))
    ]
    dues = {e.message_id: e.due_at for e in schedule if isinstance(e, Scheduled)}
    assert dues == {
        ids["next_day"][0]["id"]: utc("2026-12-04T09:00:00"),
        ids["next_day"][1]["id"]: ny,
        ids["send_now"][0]["id"]: now,
        ids["send_now"][1]["id"]: ny,
        ids["skip"][0]["id"]: ny,
    }
    outcomes = [
        decode(v, "outcomes")
        for v in await read_values_to_end(bootstrap, stack.settings.topic("outcomes"))
    ]
    [failed] = outcomes
    assert isinstance(failed, Failed)
    assert (failed.message_id, failed.stage, failed.reason, failed.recipients) == (
        rejected[0]["id"], "submit", "local_time_passed", ["london@example.org"],
    )  # fmt: skip


@pytest.fixture
def dkim_keys(tmp_path: Path) -> tuple[Path, bytes]:
    """A DKIM key for example.com in a key folder, and its public key's DNS record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    folder = tmp_path / "dkim"
    folder.mkdir()
    (folder / "example.com.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return folder, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


async def test_one_click_unsubscribe_end_to_end(
    stack: Stack, dkim_keys: tuple[Path, bytes]
) -> None:
    folder, record = dkim_keys
    stack.env["KAIROS_DKIM_KEY_DIR"] = str(folder)
    stack.env["KAIROS_UNSUBSCRIBE_KEY"] = "uns_integration-test"
    stack.start("sink", "ingest", "timer", "validator", "sender")
    account, key = stack.create_account("unsub")
    r = stack.admin("PATCH", f"/accounts/{account}", json={"list_unsubscribe": True})
    assert r.status_code == 200 and r.json()["list_unsubscribe"] is True, r.text
    later = int(time.time()) + 25
    async with (
        httpx.AsyncClient(
            base_url=stack.http, timeout=30, headers={"Authorization": f"Bearer {key}"}
        ) as c,
        Watcher(stack.settings.kafka_bootstrap or "", stack.settings.topic("outcomes")) as w,
    ):
        first = (await c.post("/email", json=email(to="Reader@example.org"))).json()["id"]
        others = []
        for _ in range(2):
            r = await c.post("/email", json=email(to="reader@example.org", scheduledAt=later))
            assert r.status_code == 202, r.text
            others.append(r.json()["id"])
        raw = wait_eml(stack.outbox, first)
        # the relayed message: both fields present and covered by a valid DKIM signature
        message = message_from_bytes(raw)
        link = re.fullmatch(r"<(http://[^>]+/u/([A-Za-z0-9_-]+))>", message["List-Unsubscribe"])
        assert link is not None, message["List-Unsubscribe"]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "reader" not in link[2].lower()
        data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        signature = re.sub(rb"\r\n[ \t]+", b" ", data.split(b"\r\n\r\n")[0])
        names = re.search(rb"DKIM-Signature:.*?\bh=([^;]+);", signature)
        assert names is not None
        signed = names[1].replace(b" ", b"").lower().split(b":")
        assert b"list-unsubscribe" in signed and b"list-unsubscribe-post" in signed
        assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record)
        # a GET changes nothing; the one-click POST unsubscribes, again and again 200
        async with httpx.AsyncClient(timeout=30) as browser:
            page = await browser.get(link[1])
            assert page.status_code == 200 and '<form method="post">' in page.text
            forged = await browser.post(
                link[1][:-4] + "AAAA", data={"List-Unsubscribe": "One-Click"}
            )
            assert forged.status_code == 400
            assert forged.json()["error"]["code"] == "INVALID_UNSUBSCRIBE_TOKEN"
            for _ in range(2):
                click = await browser.post(link[1], data={"List-Unsubscribe": "One-Click"})
                assert click.status_code == 200, click.text
        assert time.time() < later, "the click must land before the other two are due"
        suppressions = stack.admin("GET", f"/accounts/{account}/suppressions").json()
        assert [(s["address"], s["reason"]) for s in suppressions["suppressions"]] == [
            ("reader@example.org", "unsubscribe")
        ]
        await w.wait_for(lambda r: len(r) >= 3, timeout=90, what="three outcomes")
        got = {o.message_id: o for o in (decode(v, "outcomes") for _, v in w.records)}
    assert got[first].type == "delivered"
    for mid in others:
        outcome = got[mid]
        assert isinstance(outcome, Failed), outcome
        assert (outcome.stage, outcome.reason) == ("validation", "recipient_suppressed")
