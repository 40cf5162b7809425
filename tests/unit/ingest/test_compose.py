"""Composing a ``POST /email`` body into a message (pure): hostile fields are refused with
stable codes, never turned into extra header lines."""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import SMTP
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import MessageContent
from services.ingest.compose import EmailRequest, SubmitError, check_unicode, compose


def request(**extra: Any) -> EmailRequest:
    return EmailRequest.model_validate(
        {"from": "Hello <hi@example.com>", "to": "u@example.org", "subject": "s", "text": "t"}
        | extra
    )


def refusal(**extra: Any) -> tuple[str, str | None]:
    with pytest.raises(SubmitError) as err:
        compose(request(**extra), "m-1")
    assert err.value.status == 400
    return err.value.code, err.value.field


def headers_of(content: MessageContent) -> Any:
    return BytesHeaderParser(policy=SMTP).parsebytes(content.mime.encode())


@pytest.mark.parametrize(
    "name",
    [
        "X-A\r\nFrom",
        "X-A\nFrom",
        "X-A\rFrom",
        "X-A\0",
        "X A",
        "X-A:",
        "",
        "X-\u00e9",
        "X-\x7f",
        "\tX",
    ],
)
def test_a_header_name_must_be_an_rfc5322_field_name(name: str) -> None:
    assert refusal(headers={name: "ceo@bank.example"}) == ("INVALID_HEADER", "headers")


def test_a_crlf_in_a_header_name_never_spoofs_a_second_from() -> None:
    with pytest.raises(SubmitError) as err:
        compose(request(headers={"X-A\r\nFrom": "ceo@bank.example"}), "m-1")
    assert err.value.code == "INVALID_HEADER"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"headers": {"X-A": "v\r\nFrom: ceo@bank.example"}}, "headers.X-A"),
        ({"headers": {"X-A": "v\nBcc: x@evil.example"}}, "headers.X-A"),
        ({"headers": {"X-A": "v\0"}}, "headers.X-A"),
        ({"subject": "hi\r\nFrom: ceo@bank.example"}, "subject"),
        ({"subject": "hi\rthere"}, "subject"),
        ({"to": "u@example.org\r\nFrom: ceo@bank.example"}, "to"),
        ({"to": ["ok@example.org", "u@example.org\nX: y"]}, "to"),
        ({"cc": "c@example.org\r\nX: y"}, "cc"),
        ({"from": "Hello\r\nFrom: ceo@bank.example <hi@example.com>"}, "from"),
        ({"reply_to": "r@example.org\n"}, "reply_to"),
        (
            {"attachments": [{"filename": "a\r\nFrom: x", "content": "YQ=="}]},
            "attachments[0].filename",
        ),
    ],
)
def test_no_header_bound_field_may_hold_cr_lf_or_nul(extra: dict[str, Any], field: str) -> None:
    assert refusal(**extra) == ("INVALID_HEADER", field)


@pytest.mark.parametrize(
    "name", ["From", "FROM", "from", "fRoM", "Sender", "sender", "TO", "Cc", "BCC", "Date",
             "MESSAGE-ID", "Subject", "Content-Type", "mime-version"],
)  # fmt: skip
def test_reserved_headers_are_compared_case_insensitively(name: str) -> None:
    assert refusal(headers={name: "ceo@bank.example"}) == ("RESERVED_HEADER", "headers")


def test_reply_to_is_set_once() -> None:
    assert refusal(reply_to="r@example.org", headers={"Reply-To": "x@example.org"})[0] == (
        "RESERVED_HEADER"
    )
    assert refusal(headers={"In-Reply-To": "<a@b>", "in-reply-to": "<c@d>"}) == (
        "INVALID_HEADER",
        "headers",
    )
    content = compose(request(headers={"Reply-To": "x@example.org"}), "m-1")
    assert headers_of(content).get_all("Reply-To") == ["x@example.org"]


@pytest.mark.parametrize(
    "content_type", ["text/plain\r\nX: y", "nosubtype", "a/b/c", "a b/c", "multipart/mixed",
                     "message/rfc822", "", "text/plain; charset=x"],
)  # fmt: skip
def test_an_attachment_content_type_is_one_mime_type(content_type: str) -> None:
    att = {"filename": "a.txt", "content": "YQ==", "contentType": content_type}
    assert refusal(attachments=[att]) == ("INVALID_ATTACHMENT", "attachments[0].contentType")


@pytest.mark.parametrize(
    "value", ["a@b@c", "a@b.c, d@e.f", "a@b..c", "@b.c", "a@", "no address", "a@b.c>"]
)
def test_each_address_field_holds_one_address(value: str) -> None:
    assert refusal(to=value) == ("INVALID_ADDRESS", "to")


def test_an_ordinary_message_has_one_from_and_its_headers() -> None:
    content = compose(
        request(
            to=["A <a@example.org>", "b@example.org"],
            cc="c@example.org",
            bcc="d@example.org",
            headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
            attachments=[
                {"filename": "r\u00e9sum\u00e9.txt", "content": "YQ==", "contentType": "text/plain"}
            ],
        ),
        "m-1",
    )
    parsed = headers_of(content)
    assert parsed.get_all("From") == ["Hello <hi@example.com>"]
    assert parsed["X-Campaign"] == "spring" and "Bcc" not in parsed
    assert content.rcpt_to == ["a@example.org", "b@example.org", "c@example.org", "d@example.org"]
    assert (content.mail_from, content.from_domain) == ("hi@example.com", "example.com")


def test_lone_surrogates_are_refused_anywhere_in_a_body() -> None:
    with pytest.raises(SubmitError) as err:
        check_unicode({"headers": {"X-A": "\ud800"}})
    assert (err.value.code, err.value.field) == ("INVALID_REQUEST", "headers.X-A")
    check_unicode({"subject": "\u00e9\U0001f600", "to": ["a"]})


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=4),
    subject=st.text(max_size=40),
    name=st.text(max_size=20),
)
def test_whatever_the_fields_one_from_and_no_injected_line(
    headers: dict[str, str], subject: str, name: str
) -> None:
    """Either a SubmitError, or a message with exactly one From whose extra headers are
    exactly the ones asked for."""
    try:
        check_unicode([headers, subject, name])
        from_ = f'"{name}" <hi@example.com>' if name else "hi@example.com"
        content = compose(request(headers=headers, subject=subject, **{"from": from_}), "m-1")
    except SubmitError as exc:
        assert exc.status == 400 and exc.code
        return
    parsed = headers_of(content)
    assert len(parsed.get_all("From") or []) == 1
    assert len(parsed.get_all("To") or []) == 1
    for header in headers:
        assert len(parsed.get_all(header) or []) == 1


@pytest.mark.parametrize("name", ["X-A\r\nFrom", "X-A\r\nfrom ", "X-A\r\nFROM\t"])
def test_a_second_from_line_that_slipped_past_the_field_checks_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The last guard reads the composed bytes as a receiver would: with the name check
    switched off, an injected From line is still refused."""
    import services.ingest.compose as module

    monkeypatch.setattr(module, "check_field_name", lambda *_a, **_k: None)
    assert refusal(headers={name: "ceo@bank.example"}) == ("INVALID_HEADER", "headers")
    # and a From inside a folded line, or a field merely starting with "From", is not one
    content = compose(request(headers={"X-Note": "From: a\tb", "From-Campaign": "x"}), "m-1")
    assert len(headers_of(content).get_all("From") or []) == 1


def test_multipart_boundaries_are_unique_and_absent_from_the_bodies() -> None:
    contents = [compose(request(text="plain", html="<p>html</p>"), f"m-{i}") for i in range(2)]
    boundaries = [headers_of(c).get_boundary() for c in contents]
    assert boundaries[0] != boundaries[1]
    for content, boundary in zip(contents, boundaries, strict=True):
        assert content.mime.count(f"--{boundary}") == 3  # two parts, one close


def both_paths(body: dict[str, Any]) -> tuple[bytes | None, bytes]:
    """(the plain path's bytes or None, the standard library's) for one request."""
    from services.ingest.compose import (
        Checked,
        _address,
        _addresses,
        _extra_headers,
        _message,
        _plain,
    )

    req = EmailRequest.model_validate(body)
    checked = Checked(
        "m-1",
        _address(req.from_, "from"),
        _addresses(req.to if isinstance(req.to, list) else [req.to], "to"),
        _addresses(req.cc if isinstance(req.cc, list) else None, "cc"),
        _addresses(req.reply_to if isinstance(req.reply_to, list) else None, "reply_to"),
        _extra_headers(req),
        "example.com",
    )
    return _plain(req, checked), _message(req, checked).as_bytes()


#: pieces a header or body is made of: plain, and every kind the plain path must leave alone
_PLAIN_WORDS = st.sampled_from(["a", "Hello", "order-42", "x" * 70])
_WORDS = st.one_of(  # mostly plain words, else what the plain path must leave alone
    _PLAIN_WORDS,
    _PLAIN_WORDS,
    _PLAIN_WORDS,
    st.sampled_from(["=?utf-8?q?x?=", "é", "日本", "a.b", '"q"', "(c)", "", " ", "  ", "\t", ";",
                     ",", "<", "@", "\\"]),
)  # fmt: skip
_TEXT = st.lists(_WORDS, max_size=6).map(" ".join)
_MAILBOX = st.tuples(_TEXT, st.sampled_from(["u@example.org", "first.last@sub.example.org"])).map(
    lambda p: f"{p[0]} <{p[1]}>" if p[0].strip() else p[1]
)
_BODY = st.lists(
    st.sampled_from(["line", "x" * 100, "é" * 50, "", "\r", "\n", "\r\n", "=", ".", " "]),
    max_size=12,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(
    sender=_MAILBOX,
    to=st.lists(_MAILBOX, min_size=1, max_size=3),
    cc=st.lists(_MAILBOX, max_size=2),
    subject=_TEXT,
    extra=st.dictionaries(
        st.sampled_from(["X-Tag", "X-Campaign", "In-Reply-To", "Content-Language", "SUBJECT"]),
        _TEXT,
    ),
    body=_BODY,
    kind=st.sampled_from(["text", "html"]),
)
def test_the_plain_path_writes_what_the_standard_library_writes(
    sender: str, to: list[str], cc: list[str], subject: str, extra: dict[str, str], body: str,
    kind: str,
) -> None:  # fmt: skip
    """The plain path is only a shortcut: wherever it answers, its bytes are the standard
    library's, to the byte."""
    request = {"from": sender, "to": to, "subject": subject, kind: body, "headers": extra}
    if cc:
        request["cc"] = cc
    try:
        plain, full = both_paths(request)
    except SubmitError:
        return  # refused on both paths alike (the checks come before either)
    if plain is not None:
        assert plain == full


_PLAIN_TEXT = st.lists(_PLAIN_WORDS, min_size=1, max_size=3).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(
    name=_PLAIN_TEXT,
    subject=_PLAIN_TEXT,
    extra=st.dictionaries(
        st.sampled_from(["X-Tag", "Content-Language", "content-id", "Content-Base", "Keywords",
                         "Comments", "List-Id", "In-Reply-To", "References", "Resent-Date"]),
        _PLAIN_TEXT,
        max_size=3,
    ),
    body=_BODY,
)  # fmt: skip
def test_plain_requests_are_written_as_the_standard_library_writes_them(
    name: str, subject: str, extra: dict[str, str], body: str
) -> None:
    """Requests the plain path mostly takes, with header names of every kind."""
    request = {"from": f"{name} <hi@example.com>", "to": "u@example.org", "subject": subject,
               "text": body, "headers": extra}  # fmt: skip
    try:
        plain, full = both_paths(request)
    except SubmitError:
        return
    if plain is not None:
        assert plain == full


@pytest.mark.parametrize(
    "body",
    [
        {"text": "x" * 400},  # the bench's: one long line (quoted-printable)
        {"text": "Hi,\nsee you.\n", "cc": ["Ann <ann@example.org>"], "headers": {"X-Tag": "a"}},
        {"html": "<p>" + "é" * 300 + "</p>"},  # base64
        {"text": "héllo"},  # 8bit
    ],
)
def test_a_common_message_takes_the_plain_path(body: dict[str, Any]) -> None:
    plain, full = both_paths({"from": "Hello <hi@example.com>", "to": "u@example.org",
                              "subject": "Your order", **body})  # fmt: skip
    assert plain is not None and plain == full


@pytest.mark.parametrize(
    "body",
    [
        {"subject": "Grüße"},  # an encoded word
        {"subject": "x" * 80},  # folded
        {"from": "Dr. Who <hi@example.com>"},  # a quoted display name
        {"text": "t", "html": "<p>t</p>"},  # multipart
        {"attachments": [{"filename": "a.txt", "content": "YQ=="}]},
        {"headers": {"Content-Language": "en"}},  # the standard library drops it
    ],
)
def test_anything_else_is_left_to_the_standard_library(body: dict[str, Any]) -> None:
    plain, _ = both_paths({"from": "hi@example.com", "to": "u@example.org", "text": "t"} | body)
    assert plain is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "B9", "x.y", "!#$%&'*+/=?^_`{|}~-", ".", "@", "é", '"']),
             min_size=1, max_size=6).map("".join),
    st.sampled_from(["example.org", "a.b.c", "[1.2.3.4]", "ex ample.org", "x..y"]),
)  # fmt: skip
def test_an_address_read_without_the_parser_is_the_parsed_one(local: str, domain: str) -> None:
    from email.errors import MessageError
    from email.headerregistry import Address
    from email.utils import getaddresses

    from services.ingest.compose import _address

    value = f"N <{local}@{domain}>"
    try:  # the parser's reading of what the request's field parsed to
        parsed = Address(display_name="N", addr_spec=getaddresses([value])[0][1])
    except (ValueError, IndexError, MessageError):  # IndexError: an empty one
        parsed = None
    try:
        ours = _address(value, "to")
    except SubmitError:
        ours = None
    if ours is not None:
        assert ours == parsed
