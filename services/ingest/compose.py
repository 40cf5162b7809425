"""Turning a JetEmail-style JSON body into an RFC 5322 message (pure)."""

from __future__ import annotations

import base64
import binascii
import email.contentmanager
import email.utils
import functools
import re
import secrets
from dataclasses import dataclass
from email.errors import MessageError
from email.headerregistry import Address, BaseHeader, HeaderRegistry
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


#: Header fields that a request sets through its own fields, or that composing the message sets;
#: never through ``headers`` (compared case-insensitively).
RESERVED_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)
#: Fields a message has at most once (RFC 5322 3.6) that ``headers`` may set.
_SINGLE = frozenset({"reply-to", "in-reply-to", "references"})
#: An RFC 5322 field name: printable US-ASCII (33..126) except ':'.
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
#: A MIME type token (RFC 2045 ``token "/" token``).
_MIME_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CONTENT_TYPE = re.compile(rf"({_MIME_TOKEN})/({_MIME_TOKEN})")
_FORBIDDEN_IN_LINE = ("\r", "\n", "\0")
#: a From field at the start of a line of a message's header block
_FROM_LINE = re.compile(rb"^from[ \t]*:", re.IGNORECASE | re.MULTILINE)


class _Registry(HeaderRegistry):
    """The standard header registry, building each field name's class once: the standard
    one builds a new class for every header of every message (a tenth of composing)."""

    @functools.lru_cache(maxsize=512)  # noqa: B019 - one registry for the process
    def __getitem__(self, name: str) -> type[BaseHeader]:
        return super().__getitem__(name)


#: the SMTP policy (CRLF, 8-bit-clean) with the caching registry
POLICY = SMTP.clone(header_factory=_Registry())


def check_field_name(name: str, field: str = "headers") -> None:
    """SubmitError ``INVALID_HEADER`` unless ``name`` is an RFC 5322 field name."""
    if not _FIELD_NAME.fullmatch(name):
        raise SubmitError(
            "INVALID_HEADER",
            f"{name!r} is not a header name (printable US-ASCII except ':', no spaces)",
            field,
        )


def check_line(value: str, field: str) -> None:
    """SubmitError ``INVALID_HEADER`` if ``value`` (bound for a header line) holds a CR, LF
    or NUL: it would end the line and start another, whatever the field."""
    if any(c in value for c in _FORBIDDEN_IN_LINE):
        raise SubmitError("INVALID_HEADER", f"{field} must not contain CR, LF or NUL", field)


def check_unicode(value: Any, field: str = "") -> None:
    """SubmitError ``INVALID_REQUEST`` if a string anywhere in a JSON value is not valid
    Unicode (a lone surrogate, which JSON's ``\\ud800`` escapes can carry)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SubmitError(
                "INVALID_REQUEST", "a string is not valid Unicode (lone surrogate)", field or None
            ) from exc
    elif isinstance(value, dict):
        for k, v in value.items():
            check_unicode(k, field)
            check_unicode(v, f"{field}.{k}" if field else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_unicode(v, f"{field}[{i}]")


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


def _address(value: str, field: str) -> Address:
    """One mailbox (``addr`` or ``Name <addr>``); SubmitError otherwise."""
    check_line(value, field)
    parsed = email.utils.getaddresses([value])
    bad = SubmitError("INVALID_ADDRESS", f"{value!r} is not one email address", field)
    if len(parsed) != 1:
        raise bad
    name, addr = parsed[0]
    if "@" not in addr or addr.startswith("@") or addr.endswith("@") or " " in addr:
        raise bad
    try:
        if _PLAIN_ADDR.fullmatch(addr):
            # a dot-atom address is its own parse: the same Address without the parser
            local, _, domain = addr.rpartition("@")
            return Address(display_name=name, username=local, domain=domain)
        return Address(display_name=name, addr_spec=addr)
    except (ValueError, MessageError) as exc:
        raise bad from exc


def _addresses(values: list[str] | None, field: str) -> list[Address]:
    return [_address(value, field) for value in values or []]


def _extra_headers(req: EmailRequest) -> list[tuple[str, str]]:
    """The ``headers`` of a request, checked: field names, one line each, none that another
    field sets, none of the at-most-once fields twice."""
    seen: set[str] = set()
    out = []
    for name, value in (req.headers or {}).items():
        check_field_name(name)
        check_line(value, f"headers.{name}")
        lower = name.lower()
        if lower in RESERVED_HEADERS or (lower == "reply-to" and req.reply_to):
            raise SubmitError(
                "RESERVED_HEADER", f"header {name!r} is set by its own field", "headers"
            )
        if lower in _SINGLE and lower in seen:
            raise SubmitError("INVALID_HEADER", f"header {name!r} given twice", "headers")
        seen.add(lower)
        out.append((name, value))
    return out


def compose(req: EmailRequest, message_id: str) -> MessageContent:
    """Build the message and its envelope. Raises SubmitError for a bad address, an empty
    recipient list, a body-less message, an attachment that is not base64, and for anything
    that would not stay on its own header line (``INVALID_HEADER``: a CR, LF or NUL in a
    header-bound field, a header name that is not an RFC 5322 field name) or that another
    field sets (``RESERVED_HEADER``). The message has exactly one From."""
    sender = _address(req.from_, "from")
    to = _addresses(req.to if isinstance(req.to, list) else [req.to], "to")
    cc = _addresses(req.cc if isinstance(req.cc, list) else None, "cc")
    bcc = _addresses(req.bcc if isinstance(req.bcc, list) else None, "bcc")
    reply_to = _addresses(req.reply_to if isinstance(req.reply_to, list) else None, "reply_to")
    if not to:
        raise SubmitError("MISSING_RECIPIENT", "at least one recipient is required", "to")
    if req.text is None and req.html is None:
        raise SubmitError("MISSING_BODY", "text or html is required", "text")
    check_line(req.subject, "subject")
    extra = _extra_headers(req)
    domain = sender.domain.lower()
    try:
        checked = Checked(message_id, sender, to, cc, reply_to, extra, domain)
        raw = _plain(req, checked)
        if raw is None:
            raw = _message(req, checked).as_bytes()
    except SubmitError:
        raise
    except (ValueError, TypeError, MessageError) as exc:  # what the checks above did not foresee
        raise SubmitError(
            "INVALID_MESSAGE", "these fields do not make a valid message", None
        ) from exc
    # the message as a receiver reads it: one From line in its header block, whatever the
    # checks above let through
    if len(_FROM_LINE.findall(raw.split(b"\r\n\r\n", 1)[0])) != 1:
        raise SubmitError("INVALID_HEADER", "a message has exactly one From", "headers")
    return MessageContent(
        mail_from=sender.addr_spec,
        rcpt_to=[a.addr_spec for a in to + cc + bcc],
        from_domain=domain,
        mime=raw.decode("utf-8"),
        size=len(raw),
    )


#: what the standard library writes as is in a header: a phrase of atoms (a display name
#: needing no quotes), a dot-atom address, printable ASCII without encoded-word look-alikes
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_NAME = re.compile(rf"{_ATEXT}(?: {_ATEXT})*")
_PLAIN_ADDR = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*")
_PLAIN_TEXT = re.compile(r"(?:[\x21-\x7e]+(?: [\x21-\x7e]+)*)?")
_STRUCTURED = frozenset(HeaderRegistry().registry)


@dataclass(frozen=True)
class Checked:
    """A request's header-bound fields once checked: what both ways of writing it take."""

    message_id: str
    sender: Address
    to: list[Address]
    cc: list[Address]
    reply_to: list[Address]
    extra: list[tuple[str, str]]
    domain: str


def _plain_address(a: Address) -> str | None:
    if not _PLAIN_ADDR.fullmatch(a.addr_spec):
        return None
    if not a.display_name:
        return a.addr_spec
    if not _PLAIN_NAME.fullmatch(a.display_name):
        return None
    return f"{a.display_name} <{a.addr_spec}>"


def _plain(req: EmailRequest, m: Checked) -> bytes | None:
    """The bytes :func:`_message` writes, for the common message it writes without any
    folding, quoting or encoded words: one text part (plain or HTML, no attachment), plain
    ASCII header fields that each fit on one line (78 characters, the policy's). None for any
    other message (then the standard library composes it). Its header parsing is most of
    composing's cost; the body is encoded by the standard library's own function, as
    ``set_content`` does (both paths are compared byte for byte in the tests)."""
    if req.attachments or (req.text is not None and req.html is not None):
        return None
    fields: list[tuple[str, str | None]] = [
        ("From", _plain_address(m.sender)),
        ("To", _plain_list(m.to)),
    ]
    if m.cc:
        fields.append(("Cc", _plain_list(m.cc)))
    if m.reply_to:
        fields.append(("Reply-To", _plain_list(m.reply_to)))
    fields.append(("Subject", req.subject if _PLAIN_TEXT.fullmatch(req.subject) else None))
    fields.append(("Message-ID", f"<{m.message_id}@{m.domain}>"))
    for name, value in m.extra:
        # (set_content drops any Content-* field of the request: the standard library's
        # message is the reference, whatever it does)
        lower = name.lower()
        if lower in _STRUCTURED or lower.startswith("content-") or not _PLAIN_TEXT.fullmatch(value):
            return None
        fields.append((name, value))
    lines: list[str] = []
    for name, field_value in fields:
        if field_value is None or "=?" in field_value or len(name) + 2 + len(field_value) > 78:
            return None
        value = field_value
        lines.append(f"{name}: {value}" if value else f"{name}:")
    subtype, text = ("plain", req.text) if req.text is not None else ("html", req.html)
    assert text is not None
    cte, body = email.contentmanager._encode_text(text, "utf-8", None, POLICY)  # type: ignore[attr-defined]
    lines += [
        f'Content-Type: text/{subtype}; charset="utf-8"',
        f"Content-Transfer-Encoding: {cte}",
        "MIME-Version: 1.0",
        "",
        "",
    ]
    head = "\r\n".join(lines).encode("ascii")
    return head + _NEWLINES.sub("\r\n", body).encode("utf-8", "surrogateescape")


#: a line break of any convention, written as CRLF (as the generator does)
_NEWLINES = re.compile(r"\r\n|\r|\n")


def _plain_list(addresses: list[Address]) -> str | None:
    out = [_plain_address(a) for a in addresses]
    return None if None in out else ", ".join(o for o in out if o is not None)


def _message(req: EmailRequest, m: Checked) -> EmailMessage:
    msg = EmailMessage(policy=POLICY)
    msg["From"] = m.sender
    msg["To"] = m.to
    if m.cc:
        msg["Cc"] = m.cc
    if m.reply_to:
        msg["Reply-To"] = m.reply_to
    msg["Subject"] = req.subject
    msg["Message-ID"] = f"<{m.message_id}@{m.domain}>"
    for name, value in m.extra:
        msg[name] = value
    if req.text is not None:
        msg.set_content(req.text)
        if req.html is not None:
            msg.add_alternative(req.html, subtype="html")
    else:
        assert req.html is not None
        msg.set_content(req.html, subtype="html")
    for i, att in enumerate(req.attachments or []):
        check_line(att.filename, f"attachments[{i}].filename")
        kind = _CONTENT_TYPE.fullmatch(att.content_type)
        if kind is None or kind[1].lower() in ("multipart", "message"):
            raise SubmitError(
                "INVALID_ATTACHMENT",
                f"attachment {i}: a content type is type/subtype (not multipart or message)",
                f"attachments[{i}].contentType",
            )
        try:
            payload = base64.b64decode(att.content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SubmitError(
                "INVALID_ATTACHMENT", f"attachment {i} is not base64", f"attachments[{i}].content"
            ) from exc
        msg.add_attachment(payload, maintype=kind[1], subtype=kind[2], filename=att.filename)
    for part in msg.walk():
        if part.is_multipart():
            # unguessable, and '=_' appears in no base64 or quoted-printable body: the
            # generator's own would compile a regex per message to check the body for it
            part.set_boundary(f"=_{secrets.token_hex(16)}")
    return msg


def error_body(code: str, message: str, field: str | None) -> dict[str, Any]:
    """The JSON error body of the HTTP API."""
    return {"error": {"code": code, "message": message, "field": field}}
