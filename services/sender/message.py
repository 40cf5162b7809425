"""Preparing a message for the relay (pure): the ``Date`` it goes out, internal headers gone,
and a DKIM signature when the domain has a key."""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import dkim

#: Headers that steer Kairos and are never relayed.
INTERNAL_HEADERS = (
    "X-Scheduled-At",
    "X-Mailgun-Deliver-By",
    "X-Idempotency-Key",
    "X-SMTPAPI",
    "X-Kairos-Batch-Id",
)

#: Headers a DKIM signature covers when present.
SIGNED_HEADERS = [
    b"from",
    b"to",
    b"cc",
    b"reply-to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
]


#: what is stripped, as the lower-case field names the header block is matched against
_STRIPPED = frozenset(name.lower().encode() for name in (*INTERNAL_HEADERS, "Date"))
_EOL = re.compile(rb"\r?\n")


@functools.lru_cache(maxsize=4)
def _date_field(second: int) -> bytes:
    """The ``Date`` field of a message going out in ``second`` (a burst shares a few)."""
    return b"Date: " + email.utils.format_datetime(datetime.fromtimestamp(second, UTC)).encode()


def unsubscribe_fields(url: str, mailto: str | None = None) -> list[bytes]:
    """RFC 8058 one-click unsubscribe: ``List-Unsubscribe`` with the HTTPS ``url`` (and a
    ``mailto:`` when given, one link a line) and ``List-Unsubscribe-Post``."""
    links = [f"<{url}>".encode()]
    if mailto:
        token = url.rsplit("/", 1)[-1]
        links.append(f"<mailto:{mailto}?subject=unsubscribe%20{token}>".encode())
    return [
        b"List-Unsubscribe: " + b",\r\n ".join(links),
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    ]


def prepare(raw: bytes, now: float, message_id_domain: str, extra: Sequence[bytes] = ()) -> bytes:
    """The bytes to relay: ``Date`` set to ``now`` (when the message goes out, not when it was
    scheduled), internal headers stripped, a ``Message-ID`` kept or added; CRLF line endings.
    ``extra``: fields Kairos sets (one-click unsubscribe), replacing any of the same names.

    The header block is edited as bytes, field by field (a field is its line and the folded
    lines after it), the way an MTA's cleanup does: every other field and the body go out
    exactly as submitted, unparsed, which keeps them as the author signed or wrote them and
    costs a fraction of a parse and re-serialisation with the ``email`` package."""
    data = _EOL.sub(b"\r\n", raw)
    if data.startswith(b"\r\n"):  # no header fields at all
        head, body = b"", data[2:]
    else:
        head, blank, body = data.partition(b"\r\n\r\n")
        if not blank:  # headers only, no body
            head, body = data.removesuffix(b"\r\n"), b""
    kept: list[bytes] = []
    replaced = frozenset(field.partition(b":")[0].strip().lower() for field in extra)
    has_message_id = False
    keep = True
    for line in head.split(b"\r\n") if head else []:
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the field above
            if keep:
                kept.append(line)
            continue
        name = line.partition(b":")[0].strip().lower()
        keep = name not in _STRIPPED and name not in replaced
        has_message_id = has_message_id or name == b"message-id"
        if keep:
            kept.append(line)
    kept.append(_date_field(int(now)))
    kept.extend(extra)
    if not has_message_id:
        kept.append(b"Message-ID: " + email.utils.make_msgid(domain=message_id_domain).encode())
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def dkim_sign(data: bytes, domain: str, selector: str, private_key: bytes) -> bytes:
    """``data`` with a DKIM-Signature header (relaxed/relaxed, rsa-sha256) prepended."""
    present = {
        line.split(b":", 1)[0].strip().lower()
        for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if b":" in line
    }
    headers = [h for h in SIGNED_HEADERS if h in present]
    signature = dkim.sign(
        data,
        selector.encode(),
        domain.encode(),
        private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=headers,
    )
    return bytes(signature) + data


class DkimKeys:
    """Private keys by domain: ``<dir>/<domain>.pem``, read once and cached."""

    def __init__(self, directory: Path | None, selector: str) -> None:
        self.directory, self.selector = directory, selector
        self._cache: dict[str, bytes | None] = {}

    def key_for(self, domain: str) -> bytes | None:
        domain = domain.lower()
        if domain not in self._cache:
            path = self.directory / f"{domain}.pem" if self.directory else None
            self._cache[domain] = path.read_bytes() if path and path.is_file() else None
        return self._cache[domain]

    def sign(self, data: bytes, domain: str) -> bytes:
        """``data`` signed for ``domain`` if it has a key, else unchanged."""
        key = self.key_for(domain)
        return dkim_sign(data, domain, self.selector, key) if key else data
