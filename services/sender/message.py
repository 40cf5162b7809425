"""Preparing a message for the relay (pure): the ``Date`` it goes out, internal headers gone,
and a DKIM signature when the domain has a key."""

from __future__ import annotations

import email.utils
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import dkim

#: Headers that steer Kairos and are never relayed.
INTERNAL_HEADERS = ("X-Scheduled-At", "X-Idempotency-Key", "X-SMTPAPI", "X-Kairos-Batch-Id")

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
]


def prepare(raw: bytes, now: float, message_id_domain: str) -> bytes:
    """The bytes to relay: ``Date`` set to ``now`` (when the message goes out, not when it was
    scheduled), internal headers stripped, a ``Message-ID`` kept or added."""
    msg = message_from_bytes(raw, policy=policy.SMTP)
    assert isinstance(msg, EmailMessage)
    for name in INTERNAL_HEADERS:
        del msg[name]
    del msg["Date"]
    msg["Date"] = email.utils.formatdate(now, localtime=False, usegmt=True)
    if msg["Message-ID"] is None:
        msg["Message-ID"] = email.utils.make_msgid(domain=message_id_domain)
    return msg.as_bytes(policy=policy.SMTP)


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
