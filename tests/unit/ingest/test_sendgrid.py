"""SendGrid v3 ``mail/send`` bodies into Kairos messages (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest.compose import EmailRequest, SubmitError
from services.ingest.schedule import ScheduleError
from services.ingest.sendgrid import personalize

NOW = 1_800_000_000.0


def body(**extra: Any) -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": "a@example.org", "name": "A"}]}],
        "from": {"email": "hello@example.com", "name": "Hello"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "hi"}, {"type": "text/html", "value": "<p>"}],
        **extra,
    }


def judged(b: dict[str, Any]) -> list[tuple[EmailRequest, int | None]]:
    """The messages of ``b`` with their due seconds, as the submission core judges them at
    NOW (on a plan allowing any horizon: SendGrid's own 72 hours apply)."""
    return [(req, w.check(NOW, 10**9) if w else None) for req, w in personalize(b)]


def code_of(b: dict[str, Any]) -> tuple[str, str | None]:
    with pytest.raises((SubmitError, ScheduleError)) as err:
        judged(b)
    return err.value.code, err.value.field


def test_each_personalization_is_a_message_with_its_own_send_at() -> None:
    b = body(send_at=int(NOW) + 60)
    b["personalizations"].append(
        {"to": [{"email": "b@example.org"}], "subject": "other", "send_at": int(NOW) + 120}
    )
    (first, due1), (second, due2) = judged(b)
    assert (due1, due2) == (int(NOW) + 60, int(NOW) + 120)
    assert first.to == ["A <a@example.org>"] and first.subject == "s"
    assert second.subject == "other" and second.html == "<p>" and second.text == "hi"


def test_no_send_at_is_an_immediate_send() -> None:
    [(_, due)] = judged(body())
    assert due is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"send_at": int(NOW) + 72 * 3600 + 1}, ("SCHEDULED_AT_TOO_FAR", "send_at")),
        ({"send_at": int(NOW) - 1}, ("SCHEDULED_AT_IN_PAST", "send_at")),
        ({"send_at": "tomorrow"}, ("SCHEDULED_AT_INVALID", "send_at")),
        ({"send_at": 1.5e9}, ("SCHEDULED_AT_INVALID", "send_at")),
        ({"send_each_at": [1, 2]}, ("UNSUPPORTED_FIELD", "send_each_at")),
        ({"template_id": "d-1"}, ("UNSUPPORTED_FIELD", "template_id")),
        ({"personalizations": []}, ("INVALID_REQUEST", "personalizations")),
        ({"from": "x@example.com"}, ("INVALID_REQUEST", "from")),
        ({"content": [{"type": "text/rtf", "value": ""}]}, ("INVALID_REQUEST", "content[0].type")),
        ({"surprise": 1}, ("INVALID_REQUEST", "surprise")),
    ],
)
def test_refusals_have_stable_codes(extra: dict[str, Any], expected: tuple[str, str]) -> None:
    assert code_of(body(**extra)) == expected


def test_a_personalization_send_at_is_checked_too() -> None:
    b = body()
    b["personalizations"][0]["send_at"] = int(NOW) + 73 * 3600
    assert code_of(b) == ("SCHEDULED_AT_TOO_FAR", "personalizations[0].send_at")
