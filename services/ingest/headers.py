"""The header block of a submitted message, read and checked as bytes (pure).

A front door that takes a message as the client wrote it (SMTP DATA) must not trust a parser
that forgives: ``email``'s parsers register ``X-Scheduled-At : 1`` (space before the colon) as a
field named ``X-Scheduled-At `` or as a defect, split a field at a bare LF, and hand back
``Header`` objects for 8-bit values. Here the block is split into fields exactly as RFC 5322
section 2.2 defines them, and anything that is not a well-formed field is refused with a stable
code, so that what Kairos reads and what a downstream MTA or mail reader sees cannot differ.

Guarantees of :func:`parse`:

* every field name is 1+ printable US-ASCII characters other than ``:`` (RFC 5322 3.6.8);
  whitespace before the colon (the obsolete syntax of 4.5.3) is refused, not repaired;
* no bare CR, bare LF or NUL anywhere in the header block; folded continuation lines
  (CRLF followed by space or tab) belong to the field above;
* the block is at most ``max_bytes`` long and has at most ``max_fields`` fields.

Raises :class:`HeaderError` (``code``: ``INVALID_HEADER_NAME``, ``INVALID_HEADER_VALUE``,
``HEADERS_TOO_LARGE``; ``field``: the lower-case name at fault when one can be told, with
whitespace before the colon removed, so a caller can answer a malformed ``X-Scheduled-At :``
as a bad schedule).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from email.policy import default as _default_policy

#: RFC 5322 3.6.8: ftext = %d33-57 / %d59-126
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_WSP = b" \t"
_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+")
#: a header block larger than this is refused (X-SMTPAPI with 10,000 send_each_at fits)
MAX_HEADER_BYTES = 1024 * 1024
MAX_FIELDS = 1000

#: Fields RFC 5322 3.6 allows at most once (From exactly once); a second is refused.
SINGLE_FIELDS = frozenset(
    ("from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id", "in-reply-to")
)


class HeaderError(ValueError):
    """A header block that cannot be accepted: a stable ``code``, the lower-case ``field``
    name at fault (or None), and a message safe to show the client (ASCII, no input echoed
    beyond a short, escaped excerpt)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


@dataclass(frozen=True)
class Field:
    """One header field: its name as written and its lines exactly as received (CRLF each)."""

    name: str
    raw: bytes

    @property
    def key(self) -> str:
        """The name in lower case, for matching."""
        return self.name.lower()

    @property
    def value(self) -> bytes:
        """The unfolded value: the CRLF of each fold removed, outer whitespace stripped."""
        return self.raw.partition(b":")[2].replace(b"\r\n", b"").strip(_WSP)

    def text(self) -> str:
        """The unfolded value as text. Raises HeaderError (``INVALID_HEADER_VALUE``) unless
        it is UTF-8."""
        try:
            return self.value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HeaderError(
                "INVALID_HEADER_VALUE", f"{self.name} is not valid UTF-8", self.key
            ) from exc

    def ascii(self) -> str | None:
        """The unfolded value if it is printable US-ASCII (and space/tab), else None."""
        value = self.value
        if all(0x20 <= b < 0x7F or b == 0x09 for b in value):
            return value.decode("ascii")
        return None


@dataclass(frozen=True)
class Message:
    """A message split into its header fields and the rest (the blank line and the body,
    as received; empty when the message has no body)."""

    fields: tuple[Field, ...]
    rest: bytes

    def all(self, name: str) -> list[Field]:
        """Every field called ``name`` (any case), in order."""
        key = name.lower()
        return [f for f in self.fields if f.key == key]

    def one(self, name: str) -> Field | None:
        """The field called ``name``, None if absent; HeaderError (``DUPLICATE_HEADER``) if
        it appears more than once."""
        found = self.all(name)
        if len(found) > 1:
            raise HeaderError(
                "DUPLICATE_HEADER", f"{found[0].name} appears {len(found)} times", name.lower()
            )
        return found[0] if found else None

    def without(self, names: Collection[str] = (), prefixes: Iterable[str] = ()) -> bytes:
        """The message as bytes without the fields named (any case) or whose name starts
        with one of ``prefixes``; every other field and the body exactly as received."""
        drop = {n.lower() for n in names}
        starts = tuple(p.lower() for p in prefixes)
        kept = [f.raw for f in self.fields if f.key not in drop and not f.key.startswith(starts)]
        return b"".join(kept) + self.rest


def _escaped(data: bytes, limit: int = 40) -> str:
    """A short, printable-ASCII excerpt of client input for an error message."""
    text = data[:limit].decode("ascii", "backslashreplace")
    text = "".join(c if 0x20 <= ord(c) < 0x7F else f"\\x{ord(c):02x}" for c in text)
    return text + ("..." if len(data) > limit else "")


def parse(raw: bytes, max_bytes: int = MAX_HEADER_BYTES, max_fields: int = MAX_FIELDS) -> Message:
    """Split ``raw`` (a message as received over SMTP: lines ending in CRLF) into its header
    fields and the rest. The header block ends at the first empty line, or at the end of the
    message. Raises HeaderError; see the module docstring for what is guaranteed."""
    if raw.startswith(b"\r\n"):
        head, rest = b"", raw
    else:
        end = raw.find(b"\r\n\r\n")
        head, rest = (raw, b"") if end < 0 else (raw[: end + 2], raw[end + 2 :])
    if len(head) > max_bytes:
        raise HeaderError("HEADERS_TOO_LARGE", f"the header block is over {max_bytes} bytes")
    lines = head.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    starts: list[tuple[str, list[bytes]]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not starts:
                raise HeaderError(
                    "INVALID_HEADER_NAME", "the message starts with a folded continuation line"
                )
            field = starts[-1][0].lower()
        else:
            name, colon, _ = line.partition(b":")
            if not colon:
                raise HeaderError(
                    "INVALID_HEADER_NAME", f"not a header field: {_escaped(line)!r}", None
                )
            field = name.strip(_WSP).decode("ascii", "replace").lower()
            if not _FIELD_NAME.fullmatch(name):
                problem = (
                    "whitespace before the colon"
                    if name.rstrip(_WSP) != name and _FIELD_NAME.fullmatch(name.rstrip(_WSP))
                    else "characters not allowed in a field name"
                )
                raise HeaderError(
                    "INVALID_HEADER_NAME", f"header {_escaped(name)!r}: {problem}", field
                )
            if len(starts) >= max_fields:
                raise HeaderError("HEADERS_TOO_LARGE", f"more than {max_fields} header fields")
            starts.append((name.decode("ascii"), []))
        for bad, what in ((b"\r", "a bare CR"), (b"\n", "a bare LF"), (b"\0", "a NUL byte")):
            if bad in line:
                raise HeaderError(
                    "INVALID_HEADER_VALUE", f"header {starts[-1][0]!r} contains {what}", field
                )
        starts[-1][1].append(line)
    fields = tuple(Field(name, b"".join(ln + b"\r\n" for ln in body)) for name, body in starts)
    if head and not head.endswith(b"\r\n"):
        # no final CRLF: keep the bytes exactly as received
        last = fields[-1]
        fields = (*fields[:-1], Field(last.name, last.raw[:-2]))
    return Message(fields, rest)


_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def check_body(rest: bytes) -> None:
    """The body has no NUL byte and no bare CR or LF (RFC 5321 2.3.8, RFC 6152: neither is
    allowed without BINARYMIME, which is not offered; a bare LF before a dot is how SMTP
    smuggling reaches a downstream MTA). Raises HeaderError (``INVALID_BODY``)."""
    if b"\0" in rest:
        raise HeaderError("INVALID_BODY", "the message contains a NUL byte")
    if _BARE_EOL.search(rest):
        raise HeaderError("INVALID_BODY", "the message contains a bare CR or LF; use CRLF")


def check_structure(message: Message) -> Field:
    """Exactly one ``From``, at most one of each field in :data:`SINGLE_FIELDS`; returns the
    From field. Raises HeaderError (``MISSING_FROM``, ``MULTIPLE_FROM``,
    ``DUPLICATE_HEADER``)."""
    froms = message.all("from")
    if not froms:
        raise HeaderError("MISSING_FROM", "the message has no From header", "from")
    if len(froms) > 1:
        raise HeaderError("MULTIPLE_FROM", f"the message has {len(froms)} From headers", "from")
    for name in sorted(SINGLE_FIELDS):
        message.one(name)
    return froms[0]


def mailbox(field: Field) -> tuple[str, str]:
    """The one mailbox of an address field (From, Sender): ``(addr-spec, domain)``, the domain
    in lower case. Raises HeaderError (``INVALID_ADDRESS``) for anything else: no address,
    several, a group, a parse defect (``a@x.com <b@evil.com>`` is not read as either), a
    domain that is not a plain DNS name."""
    text = field.text()
    try:
        parsed = _default_policy.header_factory(field.key, text)
        addresses = list(getattr(parsed, "addresses", ()))
        defects = list(getattr(parsed, "defects", ()))
        groups = [g for g in getattr(parsed, "groups", ()) if g.display_name is not None]
    except Exception as exc:  # the parser of hostile input may fail in any way
        raise HeaderError(
            "INVALID_ADDRESS", f"{field.name} is not one email address", field.key
        ) from exc
    if defects or groups or len(addresses) != 1:
        raise HeaderError(
            "INVALID_ADDRESS", f"{field.name} must hold exactly one email address", field.key
        )
    address = addresses[0]
    domain = str(address.domain).lower()
    if not address.username or not _DOMAIN.fullmatch(domain):
        raise HeaderError(
            "INVALID_ADDRESS", f"{field.name} is not a valid email address", field.key
        )
    return str(address.addr_spec), domain


def envelope_domain(address: str) -> str | None:
    """The domain of an envelope address (MAIL FROM), lower case; None unless it is a plain
    DNS name after the last ``@``."""
    local, at, domain = address.rpartition("@")
    domain = domain.lower()
    if not at or not local or not _DOMAIN.fullmatch(domain):
        return None
    return domain
