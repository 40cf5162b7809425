"""The raw header block of an SMTP submission (services/ingest/headers.py), pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.headers import (
    Field,
    HeaderError,
    check_structure,
    envelope_domain,
    mailbox,
    parse,
)


def error_of(raw: bytes) -> tuple[str, str | None]:
    with pytest.raises(HeaderError) as err:
        parse(raw)
    return err.value.code, err.value.field


def test_fields_folds_and_body_are_kept_exactly() -> None:
    raw = b"From: A <a@x.com>\r\nSubject: one\r\n\ttwo\r\nBcc: b@y.com\r\n\r\nbody\r\n\r\nmore\r\n"
    message = parse(raw)
    assert [f.name for f in message.fields] == ["From", "Subject", "Bcc"]
    assert message.fields[1].value == b"one\ttwo"
    assert message.rest == b"\r\nbody\r\n\r\nmore\r\n"
    assert b"".join(f.raw for f in message.fields) + message.rest == raw
    assert message.without(["BCC"]) == raw.replace(b"Bcc: b@y.com\r\n", b"")
    assert message.without(prefixes=["sub"]) == raw.replace(b"Subject: one\r\n\ttwo\r\n", b"")


def test_a_message_without_body_or_without_headers() -> None:
    assert parse(b"From: a@x.com\r\n").rest == b""
    no_headers = parse(b"\r\nbody\r\n")
    assert no_headers.fields == () and no_headers.rest == b"\r\nbody\r\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"X-Scheduled-At : 1800000060\r\n\r\n", ("INVALID_HEADER_NAME", "x-scheduled-at")),
        (b"X-Scheduled-At\t: 1\r\n\r\n", ("INVALID_HEADER_NAME", "x-scheduled-at")),
        (b"From : evil@evil.test\r\n\r\n", ("INVALID_HEADER_NAME", "from")),
        (b"Fr om: a@x.com\r\n\r\n", ("INVALID_HEADER_NAME", "fr om")),
        (b"X-\xc3\xa9: 1\r\n\r\n", ("INVALID_HEADER_NAME", "x-\ufffd\ufffd")),
        (b": no name\r\n\r\n", ("INVALID_HEADER_NAME", "")),
        (b"not a field\r\n\r\nbody", ("INVALID_HEADER_NAME", None)),
        (b" folded first\r\nFrom: a@x.com\r\n\r\n", ("INVALID_HEADER_NAME", None)),
        (b"Subject: hi\nBcc: evil@evil.test\r\n\r\n", ("INVALID_HEADER_VALUE", "subject")),
        (b"Subject: hi\rBcc: evil@evil.test\r\n\r\n", ("INVALID_HEADER_VALUE", "subject")),
        (b"Subject: hi\r\n x\0y\r\n\r\n", ("INVALID_HEADER_VALUE", "subject")),
        (b"X-Idempotency-Key: a\0\r\n\r\n", ("INVALID_HEADER_VALUE", "x-idempotency-key")),
    ],
)
def test_malformed_fields_are_refused_with_the_field_named(
    raw: bytes, expected: tuple[str, str | None]
) -> None:
    assert error_of(raw) == expected


def test_size_and_count_limits() -> None:
    with pytest.raises(HeaderError) as err:
        parse(b"X-A: " + b"a" * 200 + b"\r\n\r\n", max_bytes=100)
    assert err.value.code == "HEADERS_TOO_LARGE"
    with pytest.raises(HeaderError) as err:
        parse(b"X-A: 1\r\n" * 11 + b"\r\n", max_fields=10)
    assert err.value.code == "HEADERS_TOO_LARGE"
    assert len(parse(b"X-A: 1\r\n" * 10 + b"\r\n", max_fields=10).fields) == 10


def test_structure_exactly_one_from_and_single_fields_once() -> None:
    def code(raw: bytes) -> str:
        with pytest.raises(HeaderError) as err:
            check_structure(parse(raw))
        return err.value.code

    assert code(b"Subject: x\r\n\r\n") == "MISSING_FROM"
    assert code(b"From: a@x.com\r\nfrom: b@evil.test\r\n\r\n") == "MULTIPLE_FROM"
    assert code(b"From: a@x.com\r\nSubject: 1\r\nSUBJECT: 2\r\n\r\n") == "DUPLICATE_HEADER"
    assert code(b"From: a@x.com\r\nSender: a@x.com\r\nSender: b@x.com\r\n\r\n") == (
        "DUPLICATE_HEADER"
    )
    assert check_structure(parse(b"From: a@x.com\r\nReceived: 1\r\nReceived: 2\r\n\r\n")).name == (
        "From"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"a@x.com", ("a@x.com", "x.com")),
        (b"Alice <a@X.Com>", ("a@X.Com", "x.com")),
        (b'"bob@evil.test" <a@x.com>', ("a@x.com", "x.com")),
        (b"=?utf-8?q?Z=C3=BC?= <a@x.com>", ("a@x.com", "x.com")),
        ("Zoë <a@x.com>".encode(), ("a@x.com", "x.com")),
        (b'"a@x.com"@evil.test', ('"a@x.com"@evil.test', "evil.test")),
    ],
)
def test_one_mailbox(value: bytes, expected: tuple[str, str]) -> None:
    assert mailbox(Field("From", b"From: " + value + b"\r\n")) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"a@x.com, b@evil.test",
        b"a@x.com <b@evil.test>",
        b"alice@x.com)<bob@evil.test>",
        b"group: a@x.com;",
        b"a@@x.com",
        b"nobody",
        b"a@[10.0.0.1]",
        b"a@x",
        b"h\xe9llo@x.com",
        b"a@x.com;b@evil.test",
    ],
)
def test_not_one_mailbox(value: bytes) -> None:
    with pytest.raises(HeaderError) as err:
        mailbox(Field("From", b"From: " + value + b"\r\n"))
    assert err.value.code in ("INVALID_ADDRESS", "INVALID_HEADER_VALUE")


def test_envelope_domain() -> None:
    assert envelope_domain("a@Example.COM") == "example.com"
    assert envelope_domain('"x@y"@evil.test') == "evil.test"
    for bad in ("", "a", "@x.com", "a@", "a@[1.2.3.4]", "a@x"):
        assert envelope_domain(bad) is None


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_header_error(raw: bytes) -> None:
    try:
        message = parse(raw)
    except HeaderError as exc:
        assert exc.code in ("INVALID_HEADER_NAME", "INVALID_HEADER_VALUE", "HEADERS_TOO_LARGE")
        assert all(0x20 <= ord(c) < 0x7F for c in exc.message)
        return
    assert b"".join(f.raw for f in message.fields) + message.rest == raw
    for f in message.fields:
        assert b"\0" not in f.raw and f.raw.count(b"\n") == f.raw.count(b"\r\n")


@given(
    st.lists(
        st.tuples(
            st.from_regex(rb"\A[!-9;-~]{1,20}\Z"),
            st.from_regex(rb"\A[ -~]{0,40}\Z"),
        ),
        max_size=10,
    )
)
def test_well_formed_fields_always_parse(pairs: list[tuple[bytes, bytes]]) -> None:
    raw = b"".join(name + b":" + value + b"\r\n" for name, value in pairs) + b"\r\nbody"
    message = parse(raw)
    assert [f.name.encode() for f in message.fields] == [n for n, _ in pairs]
    assert [f.value for f in message.fields] == [v.strip(b" \t") for _, v in pairs]
