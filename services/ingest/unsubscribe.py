"""RFC 8058 one-click unsubscribe: ``POST /u/{token}`` (no authentication: the signed token
is the authority) suppresses the token's recipient for its account, reason ``unsubscribe``,
with the message it came from. Every later message to that address from that account fails its
send-time check as ``recipient_suppressed``, the ones scheduled before the click included.

* ``POST`` with the body ``List-Unsubscribe=One-Click`` (form-encoded or multipart, as mail
  providers send it): 200, and 200 again when repeated (the suppression is published once);
  a malformed, altered or forged token is ``400 INVALID_UNSUBSCRIBE_TOKEN`` and publishes
  nothing; a body without the field is ``400 INVALID_REQUEST``.
* ``GET`` shows a page with a button that POSTs: mail scanners follow links, and a GET
  unsubscribes no one.
"""

from __future__ import annotations

import html
from typing import Protocol

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from kairos.clock import Clock, to_datetime
from kairos.logging import get_logger
from kairos.unsubscribe import Unsubscribe, read_token
from schemas.reference import AccountState, SuppressionState
from services.ingest.compose import error_body
from services.reference.commands import Record, RefError, add_suppression

log = get_logger("kairos.ingest.unsubscribe")

#: RFC 8058 2: the body of a one-click POST.
ONE_CLICK = ("List-Unsubscribe", "One-Click")


class Suppressions(Protocol):
    def account(self, account_id: str) -> AccountState | None: ...

    def suppression(self, account_id: str, address: str) -> SuppressionState | None: ...


class Writer(Protocol):
    async def apply(self, records: list[Record]) -> None: ...


def suppression_for(view: Suppressions, unsub: Unsubscribe, now: float) -> Record | None:
    """The suppression to publish for a valid token (pure): None when the address is already
    suppressed (a repeated click, or an earlier bounce); RefError for an unknown account."""
    if view.suppression(unsub.account_id, unsub.recipient.lower()) is not None:
        return None
    return add_suppression(
        view,  # type: ignore[arg-type]
        unsub.account_id,
        unsub.recipient,
        "unsubscribe",
        to_datetime(now),
        message_id=unsub.message_id,
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">
<h1>{title}</h1>
{body}
</body></html>
"""


def page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body))


def unsubscribe_router(view: Suppressions, writer: Writer, key: bytes, clock: Clock) -> APIRouter:
    """``GET`` and ``POST /u/{token}``."""
    router = APIRouter(tags=["unsubscribe"])

    def invalid() -> JSONResponse:
        return JSONResponse(
            error_body("INVALID_UNSUBSCRIBE_TOKEN", "this unsubscribe link is not valid", "token"),
            status_code=400,
        )

    @router.get(
        "/u/{token}",
        response_class=HTMLResponse,
        responses={400: {"description": "INVALID_UNSUBSCRIBE_TOKEN (the error shape)"}},
    )
    async def confirm(token: str) -> Response:
        """A confirmation page: a button that POSTs (a GET changes nothing)."""
        unsub = read_token(key, token)
        if unsub is None or view.account(unsub.account_id) is None:
            return invalid()
        form = (
            '<form method="post">'
            f'<input type="hidden" name="{ONE_CLICK[0]}" value="{ONE_CLICK[1]}">'
            '<p>Stop receiving these emails?</p><button type="submit">Unsubscribe</button></form>'
        )
        return page("Unsubscribe", form)

    @router.post(
        "/u/{token}",
        responses={
            200: {"description": "Unsubscribed (also when repeated)"},
            400: {"description": "INVALID_UNSUBSCRIBE_TOKEN, or INVALID_REQUEST (no body)"},
            503: {"description": "Not durable yet; retry"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "required": ["List-Unsubscribe"],
                            "properties": {
                                "List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}
                            },
                        }
                    }
                },
            }
        },
    )
    async def one_click(token: str, request: Request) -> Response:
        """RFC 8058 one-click unsubscribe: suppress the link's recipient for its account."""
        unsub = read_token(key, token)
        if unsub is None:
            return invalid()
        try:
            form = await request.form()
            clicked = form.get(ONE_CLICK[0]) == ONE_CLICK[1]
        except Exception:  # a body the form parser refuses is no click
            clicked = False
        if not clicked:
            return JSONResponse(
                error_body("INVALID_REQUEST", "the body is List-Unsubscribe=One-Click", "body"),
                status_code=400,
            )
        try:
            record = suppression_for(view, unsub, clock.now())
        except RefError:  # an account that no longer exists
            return invalid()
        if record is not None:
            try:
                await writer.apply([record])
            except Exception as exc:  # the broker's errors are many: none is a yes
                log.warning("unsubscribe not stored", error=repr(exc))
                return JSONResponse(
                    error_body("BROKER_UNAVAILABLE", "could not store it; retry", None),
                    status_code=503,
                )
            log.info("unsubscribed", account_id=unsub.account_id, message_id=unsub.message_id)
        accept = request.headers.get("accept", "")
        if "text/html" in accept:
            return page("Unsubscribed", "<p>You will not receive these emails any more.</p>")
        return JSONResponse({"status": "unsubscribed"})

    return router
