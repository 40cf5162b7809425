"""Running schemathesis over every operation of an OpenAPI document, bounded, collecting
server errors (5xx) and answers that are not in a documented error shape instead of stopping
at the first."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

#: Fields that pass the submit-time checks (a verified sender, a plain recipient), laid over
#: generated bodies so that some of them reach composing the message.
VERIFIED_FROM = {
    "/email": {"from": "hi@example.com"},
    "/emails": {"from": "hi@example.com"},
    "/v3/{domain}/messages": {"from": "hi@example.com"},
    "/v3/mail/send": {"from": {"email": "hi@example.com", "name": "Hi"}},
}
RECIPIENT = {
    "/email": {"to": "u@example.org", "text": "t"},
    "/emails": {"to": "u@example.org", "text": "t", "subject": "s"},
    "/v3/{domain}/messages": {"to": "u@example.org", "text": "t"},
    "/v3/mail/send": {"personalizations": [{"to": [{"email": "u@example.org"}]}], "subject": "s"},
}


_MAILGUN = re.compile(r"^/v3/\{domain\}/messages")


def basic(headers: dict[str, str]) -> dict[str, str]:
    """The Bearer key of ``headers`` as Mailgun's Basic ``api:KEY``."""
    key = headers.get("Authorization", "").removeprefix("Bearer ")
    return {**headers, "Authorization": "Basic " + base64.b64encode(f"api:{key}".encode()).decode()}


@dataclass(frozen=True)
class Failure:
    operation: str
    status: int
    answer: str
    request: str


def _overlay(body: Any, fields: dict[str, Any] | None) -> Any:
    return {**body, **fields} if fields and isinstance(body, dict) else body


def _well_shaped(path: str, status: int, answer: Any) -> bool:
    """An error answer in the documented shape of its API."""
    if status < 400:
        return True
    if path == "/emails" or path.startswith("/emails/"):  # Resend's
        return isinstance(answer, dict) and {"statusCode", "name", "message"} <= set(answer)
    if _MAILGUN.match(path):
        return isinstance(answer, dict) and isinstance(answer.get("message"), str)
    if path.startswith("/v3/"):
        errors = answer.get("errors") if isinstance(answer, dict) else None
        return isinstance(errors, list) and bool(errors) and "help" in errors[0]
    error = answer.get("error") if isinstance(answer, dict) else None
    return isinstance(error, dict) and {"code", "message"} <= set(error)


def fuzz(
    schema: Any,
    headers: dict[str, str],
    examples: int,
    skip: tuple[str, ...] = ("/admin", "/metrics"),
    call: dict[str, Any] | None = None,
) -> list[Failure]:
    """Call every operation (but those under ``skip``) with ``examples`` generated requests
    of each mode (valid by the schema, and not), some from a verified sender to a plain
    recipient; return
    every 5xx and every error not in its API's shape (at most one per operation and kind)."""
    failures: dict[tuple[str, int], Failure] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith(skip):
            _fuzz_operation(operation, headers, examples, call or {}, failures)
    return list(failures.values())


def _fuzz_operation(
    operation: Any,
    headers: dict[str, str],
    examples: int,
    call: dict[str, Any],
    failures: dict[tuple[str, int], Failure],
) -> None:
    path = operation.path
    label = f"{operation.method.upper()} {path}"
    if _MAILGUN.match(path):
        headers = basic(headers)
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in GenerationMode))

    def verified(case: Any) -> Any:
        case.body = _overlay(case.body, VERIFIED_FROM.get(path))
        if _MAILGUN.match(path) and isinstance(case.path_parameters, dict):
            case.path_parameters["domain"] = "example.com"
        return case

    def deliverable(case: Any) -> Any:
        case.body = _overlay(verified(case).body, RECIPIENT.get(path))
        return case

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategy, strategy.map(verified), strategy.map(deliverable)))
    def run(case: Any) -> None:
        response = case.call(headers=headers, **call)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        status = response.status_code
        if status >= 500 or not _well_shaped(path, status, answer):
            failures.setdefault(
                (label, status),
                Failure(label, status, response.text[:500], case.as_curl_command()),
            )

    run()
