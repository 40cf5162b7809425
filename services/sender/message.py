"""Preparing a message for the relay (pure): the ``Date`` it goes out, internal headers gone."""

from __future__ import annotations

import email.utils
from email import message_from_bytes, policy
from email.message import EmailMessage

#: Headers that steer Kairos and are never relayed.
INTERNAL_HEADERS = ("X-Scheduled-At", "X-Idempotency-Key", "X-SMTPAPI", "X-Kairos-Batch-Id")


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
