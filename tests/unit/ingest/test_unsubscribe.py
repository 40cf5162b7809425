"""One-click unsubscribe (RFC 8058) on fakes: the token (signed, no readable address, forgeries
refused) and ``/u/{token}`` (a POST suppresses once and answers 200 every time, a GET only
shows a button, a bad token is a 400 that publishes nothing)."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from kairos.clock import FakeClock
from kairos.unsubscribe import make_token, read_token
from schemas.reference import SuppressionState
from tests.unit.ingest.fakes import ACCOUNT, UNSUBSCRIBE_KEY, ingest

MESSAGE = "3f1c2b4a-5d6e-4f70-8a9b-0c1d2e3f4a5b"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def test_a_token_round_trips_and_hides_the_address() -> None:
    token = make_token(UNSUBSCRIBE_KEY, ACCOUNT, MESSAGE, "Someone@Example.org")
    read = read_token(UNSUBSCRIBE_KEY, token)
    assert read is not None
    assert (read.account_id, read.message_id, read.recipient) == (
        ACCOUNT,
        MESSAGE,
        "Someone@Example.org",
    )
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"someone" not in raw.lower() and b"example.org" not in raw.lower()
    assert token.replace("-", "").replace("_", "").isalnum()


def test_another_key_or_an_altered_token_is_refused() -> None:
    token = make_token(UNSUBSCRIBE_KEY, ACCOUNT, MESSAGE, "a@example.org")
    assert read_token(b"another key", token) is None
    for i in range(len(token)):
        flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        read = read_token(UNSUBSCRIBE_KEY, flipped)
        assert read is None or read == read_token(UNSUBSCRIBE_KEY, token)  # base64's spare bits


@given(st.text(max_size=300))
def test_any_string_is_a_token_or_none_never_an_exception(text: str) -> None:
    assert read_token(UNSUBSCRIBE_KEY, text) is None


def test_post_unsubscribes_once_and_answers_200_every_time() -> None:
    k = ingest(FakeClock(1_800_000_000))
    token = make_token(UNSUBSCRIBE_KEY, ACCOUNT, MESSAGE, "User@Example.org")
    with TestClient(k.app, raise_server_exceptions=False) as c:
        first = c.post(f"/u/{token}", data=ONE_CLICK)
        again = c.post(f"/u/{token}", data=ONE_CLICK)
        multipart = c.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")})
    assert [first.status_code, again.status_code, multipart.status_code] == [200, 200, 200]
    [record] = k.writer.applied
    assert record.topic == "suppressions" and record.key == f"{ACCOUNT}/user@example.org"
    assert isinstance(record.value, SuppressionState)
    assert (record.value.reason, record.value.message_id) == ("unsubscribe", MESSAGE)


@pytest.mark.parametrize(
    "token",
    [
        "nope",
        "x" * 2000,
        make_token(b"forged", ACCOUNT, MESSAGE, "a@example.org"),
        make_token(UNSUBSCRIBE_KEY, "acc_other", MESSAGE, "a@example.org"),  # no such account
        "%00%ff",
    ],
)
def test_a_bad_token_is_400_and_publishes_nothing(token: str) -> None:
    k = ingest(FakeClock(1_800_000_000))
    with TestClient(k.app, raise_server_exceptions=False) as c:
        posted = c.post(f"/u/{token}", data=ONE_CLICK)
        shown = c.get(f"/u/{token}")
    assert posted.status_code == 400
    assert posted.json()["error"]["code"] == "INVALID_UNSUBSCRIBE_TOKEN"
    assert shown.status_code in (400, 404)
    assert k.writer.applied == []


def test_a_post_without_the_one_click_body_is_400() -> None:
    k = ingest(FakeClock(1_800_000_000))
    token = make_token(UNSUBSCRIBE_KEY, ACCOUNT, MESSAGE, "a@example.org")
    with TestClient(k.app, raise_server_exceptions=False) as c:
        for kwargs in ({}, {"data": {"List-Unsubscribe": "yes"}}, {"content": b"\xff\x00"}):
            r = c.post(f"/u/{token}", **kwargs)  # type: ignore[arg-type]
            assert r.status_code == 400, kwargs
            assert r.json()["error"]["code"] == "INVALID_REQUEST"
    assert k.writer.applied == []


def test_get_shows_a_button_and_changes_nothing() -> None:
    k = ingest(FakeClock(1_800_000_000))
    token = make_token(UNSUBSCRIBE_KEY, ACCOUNT, MESSAGE, "a@example.org")
    with TestClient(k.app, raise_server_exceptions=False) as c:
        r = c.get(f"/u/{token}")
    assert r.status_code == 200
    assert '<form method="post">' in r.text
    assert 'name="List-Unsubscribe" value="One-Click"' in r.text
    assert "a@example.org" not in r.text
    assert k.writer.applied == []


def test_broker_down_is_503_and_a_retry_works() -> None:
    k = ingest(FakeClock(1_800_000_000))
    token = make_token(UNSUBSCRIBE_KEY, ACCOUNT, MESSAGE, "a@example.org")
    k.writer.down = True
    with TestClient(k.app, raise_server_exceptions=False) as c:
        assert c.post(f"/u/{token}", data=ONE_CLICK).status_code == 503
        k.writer.down = False
        assert c.post(f"/u/{token}", data=ONE_CLICK).status_code == 200
    assert len(k.writer.applied) == 1
