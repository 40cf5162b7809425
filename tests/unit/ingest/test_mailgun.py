"""Mailgun's ``/v3/{domain}/messages`` and ``/messages.mime`` on fakes: forms into messages,
``o:deliverytime`` within 3 days, and every documented refusal in Mailgun's shape."""

from __future__ import annotations

import base64
import email.utils
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.ingest.conftest import NOW
from tests.unit.ingest.fakes import API_KEY, Ingest

AUTH = {"Authorization": "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()}
URL = "/v3/example.com/messages"


def rfc2822(second: int) -> str:
    return email.utils.formatdate(second)


def form(**extra: Any) -> dict[str, Any]:
    return {"from": "Hello <hello@example.com>", "to": "a@example.org", "subject": "s",
            "text": "hi", **extra}  # fmt: skip


def refusal(r: Any) -> tuple[int, str]:
    body = r.json()
    assert set(body) == {"message", "code"} and isinstance(body["message"], str), body
    return r.status_code, body["code"]


def test_a_scheduled_message_with_attachments_headers_and_variables(
    app: Ingest, client: TestClient
) -> None:
    data = form(
        to=["a@example.org, B <b@example.org>", "c@example.org"],
        cc="d@example.org",
        **{"o:deliverytime": rfc2822(NOW + 3600), "o:tag": ["x", "y"], "h:X-Campaign": "spring",
           "v:user-id": "42", "o:tracking": "yes"},
    )  # fmt: skip
    files = [("attachment", ("a.csv", b"1,2", "text/csv")), ("inline", ("logo.png", b"\x89PNG"))]
    r = client.post(URL, data=data, files=files, headers=AUTH)
    assert r.status_code == 200, r.text
    [event] = app.scheduled()
    assert r.json() == {"id": f"<{event.message_id}@example.com>", "message": "Queued. Thank you."}
    assert (event.due_at, event.source) == (NOW + 3600, "mailgun")
    assert event.content.rcpt_to == [f"{c}@example.org" for c in "abcd"]
    raw = event.content.raw()
    assert b"X-Campaign: spring" in raw and b'X-Mailgun-Variables: {"user-id":"42"}' in raw
    assert b'filename="a.csv"' in raw and b'filename="logo.png"' in raw


def test_urlencoded_and_an_immediate_send(app: Ingest, client: TestClient) -> None:
    r = client.post(URL, data=form(), headers=AUTH)
    assert r.status_code == 200, r.text
    assert app.scheduled()[0].due_at == NOW


def test_recipient_variables_make_one_message_each(app: Ingest, client: TestClient) -> None:
    variables = '{"a@example.org": {"name": "Ann"}, "b@example.org": {"name": "Bob"}}'
    data = form(to="a@example.org,b@example.org", subject="Hi %recipient.name%",
                **{"recipient-variables": variables})  # fmt: skip
    assert client.post(URL, data=data, headers=AUTH).status_code == 200
    events = app.scheduled()
    assert [e.content.rcpt_to for e in events] == [["a@example.org"], ["b@example.org"]]
    assert b"Subject: Hi Ann" in events[0].content.raw()
    assert b"Subject: Hi Bob" in events[1].content.raw()


def test_testmode_validates_without_sending(app: Ingest, client: TestClient) -> None:
    r = client.post(URL, data=form(**{"o:testmode": "yes"}), headers=AUTH)
    assert r.status_code == 200 and app.scheduled() == []
    r = client.post(URL, data=form(**{"o:testmode": "yes", "from": "x@unverified.test"}),
                    headers=AUTH)  # fmt: skip
    assert refusal(r) == (403, "DOMAIN_NOT_VERIFIED")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (form(**{"o:deliverytime": "tomorrow"}), (400, "SCHEDULED_AT_INVALID")),
        (form(**{"o:deliverytime": ""}), (400, "SCHEDULED_AT_INVALID")),
        (form(**{"o:deliverytime": "Fri, 15 Jan 2027 09:00:00"}), (400, "SCHEDULED_AT_INVALID")),
        (form(**{"o:deliverytime": rfc2822(NOW - 60)}), (400, "SCHEDULED_AT_IN_PAST")),
        (form(**{"o:deliverytime": rfc2822(NOW + 3 * 86400 + 1)}),
         (400, "SCHEDULED_AT_TOO_FAR")),
        (form(**{"o:deliverytime": [rfc2822(NOW + 60), rfc2822(NOW + 61)]}),
         (400, "INVALID_REQUEST")),
        (form(**{"o:time-zone-localize": "09:00"}), (400, "UNSUPPORTED_FIELD")),
        (form(**{"o:deliverytime-optimize-period": "24h"}), (400, "UNSUPPORTED_FIELD")),
        (form(template="welcome"), (400, "UNSUPPORTED_FIELD")),
        (form(**{"o:tag": ["1", "2", "3", "4"]}), (400, "INVALID_REQUEST")),
        ({k: v for k, v in form().items() if k != "from"}, (400, "MISSING_FIELD")),
        ({k: v for k, v in form().items() if k != "to"}, (400, "MISSING_RECIPIENT")),
        ({k: v for k, v in form().items() if k != "text"}, (400, "MISSING_BODY")),
        (form(to="not an address"), (400, "INVALID_ADDRESS")),
        (form(**{"from": "x@elsewhere.test"}), (403, "DOMAIN_NOT_OWNED")),
        (form(**{"h:Bcc": "spy@example.org"}), (400, "RESERVED_HEADER")),
        (form(**{"h:X-A": "1\r\nBcc: spy@example.org"}), (400, "INVALID_HEADER")),
        (form(subject="s\r\nBcc: spy@example.org"), (400, "INVALID_HEADER")),
        (form(**{"recipient-variables": "{not json"}), (400, "INVALID_REQUEST")),
        (form(attachment="not a file"), (400, "INVALID_ATTACHMENT")),
    ],
)  # fmt: skip
def test_refusals_in_mailguns_shape(
    app: Ingest, client: TestClient, data: dict[str, Any], expected: tuple[int, str]
) -> None:
    assert refusal(client.post(URL, data=data, headers=AUTH)) == expected
    assert app.scheduled() == []


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        (URL, {}, (401, "UNAUTHORIZED")),
        (URL, {"Authorization": "Basic " + base64.b64encode(b"api:nope").decode()},
         (401, "UNAUTHORIZED")),
        (URL, {"Authorization": "Basic " + base64.b64encode(f"me:{API_KEY}".encode()).decode()},
         (401, "UNAUTHORIZED")),
        (URL, {"Authorization": "Basic !!!"}, (401, "UNAUTHORIZED")),
        (URL, {"Authorization": f"Bearer {API_KEY}"}, (401, "UNAUTHORIZED")),
        ("/v3/elsewhere.test/messages", AUTH, (404, "DOMAIN_NOT_OWNED")),
        ("/v3/unverified.test/messages", AUTH, (403, "DOMAIN_NOT_VERIFIED")),
    ],
)  # fmt: skip
def test_the_key_and_the_domain(
    client: TestClient, path: str, headers: dict[str, str], expected: tuple[int, str]
) -> None:
    r = client.post(path, data=form(), headers=headers)
    assert refusal(r) == expected
    if r.status_code == 401:
        assert r.headers["WWW-Authenticate"].startswith("Basic")


def test_a_body_that_is_not_a_form(client: TestClient) -> None:
    r = client.post(URL, content=b"--x\r\nbroken", headers={
        **AUTH, "Content-Type": "multipart/form-data; boundary=x"})  # fmt: skip
    assert refusal(r)[0] == 400
    assert refusal(client.get(URL, headers=AUTH)) == (405, "METHOD_NOT_ALLOWED")


MIME = (
    b"From: Hello <hello@example.com>\r\nTo: a@example.org\r\nSubject: raw\r\n"
    b"X-Mailgun-Deliver-By: " + rfc2822(NOW + 120).encode() + b"\r\n\r\nbody\r\n"
)


def test_messages_mime(app: Ingest, client: TestClient) -> None:
    r = client.post(
        URL + ".mime",
        data={"to": "a@example.org, b@example.org"},
        files=[("message", ("message.mime", MIME))],
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    [event] = app.scheduled()
    assert (event.due_at, event.content.rcpt_to) == (NOW + 120, ["a@example.org", "b@example.org"])
    assert event.content.mail_from == "hello@example.com"
    assert b"X-Mailgun-Deliver-By" not in event.content.raw()
    assert r.json()["id"] == f"<{event.message_id}@example.com>"


@pytest.mark.parametrize(
    ("data", "message", "expected"),
    [
        ({"to": "a@example.org", "o:deliverytime": rfc2822(NOW + 60)}, MIME,
         (400, "SCHEDULED_AT_CONFLICT")),
        ({"to": "a@example.org"}, b"Subject: no from\r\n\r\nx", (400, "MISSING_FROM")),
        ({"to": "a@example.org"}, MIME.replace(rfc2822(NOW + 120).encode(), b"soon"),
         (400, "SCHEDULED_AT_INVALID")),
        ({"to": "a@example.org", "h:X-A": "1"}, MIME, (400, "UNSUPPORTED_FIELD")),
        ({}, MIME, (400, "MISSING_RECIPIENT")),
        ({"to": "a@example.org"}, None, (400, "MISSING_FIELD")),
    ],
)  # fmt: skip
def test_messages_mime_refusals(
    app: Ingest, client: TestClient, data: dict[str, str], message: bytes | None, expected: Any
) -> None:
    files = [("message", ("m.mime", message))] if message is not None else None
    r = client.post(URL + ".mime", data=data, files=files, headers=AUTH)
    assert refusal(r) == expected
    assert app.scheduled() == []
