"""Local time per recipient, spread sends and one-click unsubscribe marking, through the doors
on fakes (no broker): one request with recipients in five zones becomes five messages, the
passed-time policies, the account's default zone, deliverWithin and maxPerMinute, and hostile
input refused with stable codes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session
from fastapi.testclient import TestClient

from kairos.clock import FakeClock
from schemas.events import Failed, Scheduled
from services.ingest.smtp import SubmissionHandler
from tests.unit.ingest.fakes import ACCOUNT, API_KEY, Ingest, ingest

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


#: 2026-12-23 10:00 UTC: 09:00 on the 24th is ahead everywhere
NOW = utc("2026-12-23T10:00:00")
FIVE = {
    "berlin@example.org": ("Europe/Berlin", "2026-12-24T08:00:00"),
    "ny@example.org": ("America/New_York", "2026-12-24T14:00:00"),
    "kolkata@example.org": ("Asia/Kolkata", "2026-12-24T03:30:00"),
    "adelaide@example.org": ("Australia/Adelaide", "2026-12-23T22:30:00"),
    "tokyo@example.org": ("Asia/Tokyo", "2026-12-24T00:00:00"),
}


def post(k: Ingest, body: dict[str, Any], path: str = "/email") -> Any:
    with TestClient(k.app, raise_server_exceptions=False) as c:
        return c.post(path, json=body, headers=AUTH)


def email(**extra: Any) -> dict[str, Any]:
    return {"from": "hi@example.com", "to": "u@example.org", "subject": "s", "text": "t", **extra}


def test_five_zones_become_five_messages_at_five_local_nines() -> None:
    k = ingest(FakeClock(NOW))
    to = [{"email": a, "timezone": z} for a, (z, _) in FIVE.items()]
    r = post(k, email(to=to, sendAt={"local": "2026-12-24T09:00:00"}))
    assert r.status_code == 202, r.text
    answer = r.json()
    dues = {e.content.rcpt_to[0]: e.due_at for e in k.scheduled()}
    assert dues == {a: utc(t) for a, (_, t) in FIVE.items()}
    assert len({e.message_id for e in k.scheduled()}) == 5
    assert [m["scheduled_at"] for m in answer["messages"]] == [utc(t) for _, t in FIVE.values()]
    assert answer["rejected"] == []
    assert answer["scheduled_at"] == answer["messages"][0]["scheduled_at"]


def test_recipients_sharing_a_zone_share_a_message_and_the_request_zone_is_the_default() -> None:
    k = ingest(FakeClock(NOW))
    to = [
        "a@example.org",
        {"email": "b@example.org"},
        {"email": "c@example.org", "timezone": "UTC"},
    ]
    r = post(k, email(to=to, sendAt={"local": "2026-12-24T09:00:00", "timezone": "Asia/Tokyo"}))
    assert r.status_code == 202, r.text
    got = sorted((e.content.rcpt_to, e.due_at) for e in k.scheduled())
    assert got == [
        (["a@example.org", "b@example.org"], utc("2026-12-24T00:00:00")),
        (["c@example.org"], utc("2026-12-24T09:00:00")),
    ]


def test_the_accounts_default_zone_applies_when_none_is_named() -> None:
    k = ingest(FakeClock(NOW))
    k.view.account_state = k.view.account_state.model_copy(update={"time_zone": "Asia/Kolkata"})
    assert post(k, email(sendAt={"local": "2026-12-24T09:00:00"})).status_code == 202
    assert [e.due_at for e in k.scheduled()] == [utc("2026-12-24T03:30:00")]


#: 10:00 UTC: 09:00 has passed in London, is ahead in New York
PASSED_NOW = utc("2026-12-03T10:00:00")
TWO = [
    {"email": "london@example.org", "timezone": "Europe/London"},
    {"email": "ny@example.org", "timezone": "America/New_York"},
]


def test_passed_next_day() -> None:
    k = ingest(FakeClock(PASSED_NOW))
    r = post(k, email(to=TWO, sendAt={"local": "09:00"}))
    assert r.status_code == 202, r.text
    got = {e.content.rcpt_to[0]: e.due_at for e in k.scheduled()}
    assert got == {
        "london@example.org": utc("2026-12-04T09:00:00"),
        "ny@example.org": utc("2026-12-03T14:00:00"),
    }


def test_passed_send_now() -> None:
    k = ingest(FakeClock(PASSED_NOW))
    r = post(k, email(to=TWO, sendAt={"local": "09:00", "ifPassed": "send_now"}))
    assert r.status_code == 202, r.text
    got = {e.content.rcpt_to[0]: e.due_at for e in k.scheduled()}
    assert got == {
        "london@example.org": int(PASSED_NOW),
        "ny@example.org": utc("2026-12-03T14:00:00"),
    }
    assert [m["scheduled_at"] for m in r.json()["messages"]] == [None, utc("2026-12-03T14:00:00")]


def test_passed_skip_is_a_recorded_rejection_never_silent() -> None:
    k = ingest(FakeClock(PASSED_NOW))
    r = post(k, email(to=TWO, sendAt={"local": "09:00", "ifPassed": "skip"}))
    assert r.status_code == 202, r.text
    [rejected] = r.json()["rejected"]
    assert rejected["to"] == ["london@example.org"]
    assert rejected["reason"] == "local_time_passed"
    assert [e.content.rcpt_to for e in k.scheduled()] == [["ny@example.org"]]
    [failed] = [e for e in k.publisher.events if isinstance(e, Failed)]
    assert (failed.message_id, failed.stage, failed.reason) == (
        rejected["id"],
        "submit",
        "local_time_passed",
    )
    assert failed.recipients == ["london@example.org"]


def test_skip_for_every_recipient_is_a_refusal() -> None:
    k = ingest(FakeClock(PASSED_NOW))
    r = post(k, email(to=TWO[:1], sendAt={"local": "09:00", "ifPassed": "skip"}))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "LOCAL_TIME_PASSED"
    assert k.publisher.events == []


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"sendAt": {"local": "09:00", "timezone": "Nowhere/City"}}, "INVALID_TIME_ZONE"),
        ({"sendAt": {"local": "9 o'clock"}}, "SCHEDULED_AT_INVALID"),
        ({"sendAt": {"local": "09:00"}, "scheduledAt": NOW + 60}, "SCHEDULED_AT_CONFLICT"),
        ({"sendAt": "09:00"}, "SCHEDULED_AT_INVALID"),
        ({"sendAt": {"local": "09:00", "ifPassed": 1}}, "INVALID_PASSED_POLICY"),
        ({"to": [{"email": "a@example.org", "timezone": "UTC"}]}, "TIMEZONE_WITHOUT_LOCAL_TIME"),
        ({"to": [{"email": "a@example.org", "tz": "UTC"}]}, "INVALID_REQUEST"),
        ({"to": [{"email": "\u00e9@exämple.org", "name": "x"}]}, "INVALID_ADDRESS"),
        (
            {"to": TWO, "cc": "c@example.org", "sendAt": {"local": "09:00"}},
            "LOCAL_TIME_WITH_CC",
        ),
        ({"sendAt": {"local": "2027-06-01T09:00:00"}}, "SCHEDULED_AT_TOO_FAR"),
        ({"deliverWithin": 0}, "INVALID_SPREAD"),
        ({"deliverWithin": 86401}, "INVALID_SPREAD"),
        ({"deliverWithin": "60"}, "INVALID_SPREAD"),
        ({"maxPerMinute": True}, "INVALID_SPREAD"),
        ({"listUnsubscribe": "yes"}, "INVALID_REQUEST"),
        ({"to": ["a@example.org", "b@example.org"], "listUnsubscribe": True},
         "UNSUBSCRIBE_NEEDS_ONE_RECIPIENT"),
    ],
)  # fmt: skip
def test_hostile_input_is_a_4xx_with_a_stable_code(extra: dict[str, Any], code: str) -> None:
    k = ingest(FakeClock(PASSED_NOW))
    r = post(k, email(**extra))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert k.publisher.events == []


def personalizations(n: int) -> list[dict[str, Any]]:
    return [{"to": [{"email": f"u{i}@example.org"}]} for i in range(n)]


def sendgrid(**extra: Any) -> dict[str, Any]:
    return {
        "from": {"email": "hi@example.com"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "t"}],
        **extra,
    }


def test_sendgrid_personalizations_in_their_own_zones() -> None:
    k = ingest(FakeClock(NOW))
    people = [{"to": [{"email": a}], "custom_args": {"timezone": z}} for a, (z, _) in FIVE.items()]
    r = post(k, sendgrid(personalizations=people, send_at_local="2026-12-24T09:00:00"),
             "/v3/mail/send")  # fmt: skip
    assert r.status_code == 202, r.text
    assert {e.content.rcpt_to[0]: e.due_at for e in k.scheduled()} == {
        a: utc(t) for a, (_, t) in FIVE.items()
    }


def test_sendgrid_skip_reports_the_rejected_ids() -> None:
    k = ingest(FakeClock(PASSED_NOW))
    people = [
        {"to": [{"email": "london@example.org"}], "custom_args": {"timezone": "Europe/London"}},
        {"to": [{"email": "ny@example.org"}], "custom_args": {"timezone": "America/New_York"}},
    ]
    body = sendgrid(personalizations=people, send_at_local="09:00", if_passed="skip")
    r = post(k, body, "/v3/mail/send")
    assert r.status_code == 202, r.text
    [failed] = [e for e in k.publisher.events if isinstance(e, Failed)]
    assert r.headers["X-Kairos-Rejected"] == f"{failed.message_id} local_time_passed"


def test_sendgrid_hostile_zone() -> None:
    k = ingest(FakeClock(NOW))
    people = [{"to": [{"email": "a@example.org"}], "custom_args": {"timezone": "x/../y"}}]
    r = post(k, sendgrid(personalizations=people, send_at_local="09:00"), "/v3/mail/send")
    assert r.status_code == 400
    assert r.json()["errors"][0]["help"] == "INVALID_TIME_ZONE"
    assert r.json()["errors"][0]["field"] == "personalizations[0].custom_args.timezone"


def smtp(k: Ingest, header: str) -> str:
    session = Session(loop=None)
    session.auth_data = ACCOUNT
    envelope = Envelope()
    envelope.mail_from = "hi@example.com"
    envelope.rcpt_tos = ["u@example.org"]
    envelope.original_content = (
        f"From: hi@example.com\r\nTo: u@example.org\r\nSubject: s\r\n{header}\r\n\r\nhi\r\n"
    ).encode()
    return str(
        asyncio.run(SubmissionHandler(k.view, k.submitter).handle_DATA(None, session, envelope))
    )


def test_smtp_send_local_header() -> None:
    k = ingest(FakeClock(NOW))
    reply = smtp(k, "X-Kairos-Send-Local: 2026-12-24T09:00:00 Asia/Kolkata; if-passed=skip")
    assert reply.startswith("250"), reply
    [event] = k.scheduled()
    assert event.due_at == utc("2026-12-24T03:30:00")
    assert b"X-Kairos-Send-Local" not in event.content.raw()


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("X-Kairos-Send-Local: 2026-12-24T09:00:00 Mars/Base", "INVALID_TIME_ZONE"),
        ("X-Kairos-Send-Local: tomorrow", "SCHEDULED_AT_INVALID"),
        ("X-Kairos-Send-Local: 09:00 UTC; when=now", "SCHEDULED_AT_INVALID"),
        ("X-Kairos-Send-Local: 09:00 UTC; if-passed=never", "INVALID_PASSED_POLICY"),
        ("X-Kairos-Send-Local: 09:00 UTC\r\nX-Scheduled-At: 1900000000", "SCHEDULED_AT_CONFLICT"),
    ],
)
def test_smtp_hostile_send_local(header: str, code: str) -> None:
    k = ingest(FakeClock(NOW))
    reply = smtp(k, header)
    assert reply.startswith("554 5.5.4 " + code), reply
    assert k.publisher.events == []


def test_deliver_within_spreads_evenly_by_id_and_never_early() -> None:
    k = ingest(FakeClock(NOW))
    at = int(NOW) + 600
    body = sendgrid(personalizations=personalizations(100), send_at=at, deliver_within=600)
    r = post(k, body, "/v3/mail/send")
    assert r.status_code == 202, r.text
    dues = sorted(e.due_at for e in k.scheduled())
    assert dues == [at + 6 * i for i in range(100)]  # evenly: one every 6 s


def test_max_per_minute_caps_every_minute() -> None:
    k = ingest(FakeClock(NOW))
    at = int(NOW) + 600
    r = post(k, sendgrid(personalizations=personalizations(50), send_at=at, max_per_minute=20),
             "/v3/mail/send")  # fmt: skip
    assert r.status_code == 202, r.text
    dues = sorted(e.due_at for e in k.scheduled())
    assert dues[0] == at and dues[-1] < at + 150
    assert all(sum(1 for d in dues if m <= d < m + 60) <= 20 for m in range(at, at + 150))


def test_spread_is_deterministic_from_the_ids() -> None:
    from services.ingest.spread import Spread

    ids = [f"id-{i}" for i in range(10)]
    first = Spread(within=100).offsets(ids, [0] * 10)
    assert first == Spread(within=100).offsets(list(reversed(ids)), [0] * 10)[::-1]
    assert sorted(first) == list(range(0, 100, 10))


def test_a_spread_immediate_send_starts_now() -> None:
    k = ingest(FakeClock(NOW))
    r = post(k, email(to=["a@example.org"], deliverWithin=60))
    assert r.status_code == 202, r.text
    assert [e.due_at for e in k.scheduled()] == [int(NOW)]


def test_list_unsubscribe_marks_single_recipient_messages() -> None:
    k = ingest(FakeClock(NOW))
    assert post(k, email(listUnsubscribe=True)).status_code == 201
    k.view.account_state = k.view.account_state.model_copy(update={"list_unsubscribe": True})
    assert post(k, email(to=["a@example.org", "b@example.org"])).status_code == 201
    assert post(k, email(listUnsubscribe=False)).status_code == 201
    assert post(k, email()).status_code == 201
    marks = [e.content.list_unsubscribe for e in k.scheduled()]
    assert marks == [True, False, False, True]
    assert isinstance(k.scheduled()[0], Scheduled)


def test_the_lifecycle_api_shows_each_messages_own_due_second_and_the_skipped() -> None:
    from schemas.codec import encode
    from services.ingest.lifecycle import LifecycleStore, Record

    k = ingest(FakeClock(PASSED_NOW))
    to = [*TWO, {"email": "tokyo@example.org", "timezone": "Asia/Tokyo"}]
    r = post(k, email(to=to, sendAt={"local": "09:00", "ifPassed": "skip"}, deliverWithin=600))
    assert r.status_code == 202, r.text
    store = LifecycleStore(":memory:")
    for offset, event in enumerate(k.publisher.events):
        topic = "outcomes" if isinstance(event, Failed) else "schedule"
        store.apply([Record(topic, 0, offset, encode(event))])
    for m in r.json()["messages"]:
        got = store.get(ACCOUNT, m["id"])
        assert got is not None and (got["scheduled_at"], got["to"]) == (m["scheduled_at"], m["to"])
    rejected = r.json()["rejected"]
    assert sorted(x["to"][0] for x in rejected) == ["london@example.org", "tokyo@example.org"]
    for skipped in rejected:
        got = store.get(ACCOUNT, skipped["id"])
        assert got is not None and got["status"] == "failed"
        assert got["timeline"][-1]["reason"] == "local_time_passed"
