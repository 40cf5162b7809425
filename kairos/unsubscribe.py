"""One-click unsubscribe tokens (RFC 8058): what the sender puts in a message's
``List-Unsubscribe`` link and ingest's ``/u/{token}`` reads back.

A token names the account, the message and its recipient, and is signed with a key from the
settings (HMAC-SHA256): a forged or altered token is refused. It carries no readable address:
the recipient is encrypted with a keystream derived from the key and the (account, message)
pair, which is unique to the message (a message with a link has one recipient). Pure apart
from reading or creating the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from kairos.settings import KairosSettings
from kairos.token import state_secret

_VERSION = 1
_MAC_BYTES = 16


@dataclass(frozen=True)
class Unsubscribe:
    """What a valid token says: who asked not to get the account's mail, from which message."""

    account_id: str
    message_id: str
    recipient: str


def _keystream(key: bytes, context: bytes, length: int) -> bytes:
    blocks = []
    for counter in range((length + 31) // 32):
        blocks.append(hmac.new(key, b"enc\0" + context + counter.to_bytes(4, "big"), "sha256"))
    return b"".join(b.digest() for b in blocks)[:length]


def _mac(key: bytes, context: bytes, recipient: bytes) -> bytes:
    return hmac.new(key, b"mac\0" + context + b"\0" + recipient, hashlib.sha256).digest()[
        :_MAC_BYTES
    ]


def _field(value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError("too long for a token")
    return bytes([len(value)]) + value


def make_token(key: bytes, account_id: str, message_id: str, recipient: str) -> str:
    """The URL-safe token for ``recipient`` of ``message_id`` (ValueError for an id or an
    address longer than 255 bytes)."""
    account, message, address = account_id.encode(), message_id.encode(), recipient.encode()
    context = _field(account) + _field(message)
    hidden = bytes(
        a ^ b for a, b in zip(address, _keystream(key, context, len(address)), strict=True)
    )
    raw = bytes([_VERSION]) + context + _field(hidden) + _mac(key, context, address)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def read_token(key: bytes, token: str) -> Unsubscribe | None:
    """What ``token`` says, if it is one this key signed; None for anything else (malformed,
    altered, forged, another key's)."""
    if not 16 <= len(token) <= 1024 or not token.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if raw[0] != _VERSION:
            return None
        fields, at = [], 1
        for _ in range(3):
            size = raw[at]
            fields.append(raw[at + 1 : at + 1 + size])
            if len(fields[-1]) != size:
                return None
            at += 1 + size
        mac = raw[at:]
        account, message, hidden = fields
        context = _field(account) + _field(message)
        address = bytes(
            a ^ b for a, b in zip(hidden, _keystream(key, context, len(hidden)), strict=True)
        )
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, _mac(key, context, address)):
            return None
        return Unsubscribe(account.decode(), message.decode(), address.decode())
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def unsubscribe_key(settings: KairosSettings) -> bytes:
    """``KAIROS_UNSUBSCRIBE_KEY``, else ``<state_dir>/unsubscribe-key`` (created on first use:
    the embedded default, where every service shares the state directory)."""
    if settings.unsubscribe_key is not None:
        return settings.unsubscribe_key.get_secret_value().encode()
    secret = state_secret(settings, "unsubscribe-key", "uns_")
    assert secret is not None
    return secret.encode()
