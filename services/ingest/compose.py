"""Turning a JetEmail-style JSON body into an RFC 5322 message (pure)."""

from __future__ import annotations

import base64
import binascii
import email.utils
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.events import MessageContent


class SubmitError(ValueError):
    """A request that cannot be accepted: a stable ``code``, the ``field`` at fault, and the
    HTTP status to answer with."""

    def __init__(
        self, code: str, message: str, field: str | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.status = code, message, field, status


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    filename: str
    content: str = Field(description="base64 of the file")
    content_type: str = Field(default="application/octet-stream", alias="contentType")


class EmailRequest(BaseModel):
    """The body of ``POST /email`` (JetEmail's fields)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from")
    to: str | list[str]
    cc: str | list[str] | None = None
    bcc: str | list[str] | None = None
    reply_to: str | list[str] | None = Field(default=None, alias="reply_to")
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] | None = None
    attachments: list[Attachment] | None = None
    scheduledAt: int | float | str | None = None
    scheduled_at: int | float | str | None = None

    @field_validator("to", "cc", "bcc", "reply_to")
    @classmethod
    def _listify(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        return [v] if isinstance(v, str) else v


def _addresses(values: list[str] | None, field: str) -> list[str]:
    out = []
    for value in values or []:
        _name, addr = email.utils.parseaddr(value)
        if "@" not in addr or addr.startswith("@") or addr.endswith("@") or " " in addr:
            raise SubmitError("INVALID_ADDRESS", f"{value!r} is not an email address", field)
        out.append(addr)
    return out


def compose(req: EmailRequest, message_id: str) -> MessageContent:
    """Build the message and its envelope. Raises SubmitError for a bad address, an empty
    recipient list, a body-less message or an attachment that is not base64."""
    sender_name, sender = email.utils.parseaddr(req.from_)
    (sender,) = _addresses([req.from_], "from")
    to = _addresses(req.to if isinstance(req.to, list) else [req.to], "to")
    cc = _addresses(req.cc if isinstance(req.cc, list) else None, "cc")
    bcc = _addresses(req.bcc if isinstance(req.bcc, list) else None, "bcc")
    reply_to = _addresses(req.reply_to if isinstance(req.reply_to, list) else None, "reply_to")
    if not to:
        raise SubmitError("MISSING_RECIPIENT", "at least one recipient is required", "to")
    if req.text is None and req.html is None:
        raise SubmitError("MISSING_BODY", "text or html is required", "text")
    domain = sender.rsplit("@", 1)[1].lower()
    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address(display_name=sender_name, addr_spec=sender) if sender_name else sender
    msg["To"] = ", ".join(req.to if isinstance(req.to, list) else [req.to])
    if req.cc:
        msg["Cc"] = ", ".join(req.cc)
    if req.reply_to:
        msg["Reply-To"] = ", ".join(reply_to)
    msg["Subject"] = req.subject
    msg["Message-ID"] = f"<{message_id}@{domain}>"
    for name, value in (req.headers or {}).items():
        if name.lower() in {"from", "to", "cc", "bcc", "subject", "message-id", "date"}:
            raise SubmitError(
                "RESERVED_HEADER", f"header {name!r} is set by its own field", "headers"
            )
        msg[name] = value
    if req.text is not None:
        msg.set_content(req.text)
        if req.html is not None:
            msg.add_alternative(req.html, subtype="html")
    else:
        assert req.html is not None
        msg.set_content(req.html, subtype="html")
    for i, att in enumerate(req.attachments or []):
        try:
            payload = base64.b64decode(att.content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SubmitError(
                "INVALID_ATTACHMENT", f"attachment {i} is not base64", f"attachments[{i}].content"
            ) from exc
        maintype, _, subtype = att.content_type.partition("/")
        msg.add_attachment(
            payload,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=att.filename,
        )
    raw = msg.as_bytes()
    return MessageContent(
        mail_from=sender,
        rcpt_to=to + cc + bcc,
        from_domain=domain,
        mime=raw.decode("utf-8"),
        size=len(raw),
    )


def error_body(code: str, message: str, field: str | None) -> dict[str, Any]:
    """The JSON error body of the HTTP API."""
    return {"error": {"code": code, "message": message, "field": field}}
