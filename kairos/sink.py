"""The dev SMTP sink: accepts every message and writes it to ``outbox_dir`` as an .eml file.

The embedded default relays here, so ``make run`` delivers somewhere a person can look.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from kairos.logging import get_logger

log = get_logger("kairos.sink")


class OutboxHandler:
    """aiosmtpd handler writing each message (with its envelope in headers) to a folder."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        outbox.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{time.time():.6f}-{uuid.uuid4().hex[:8]}.eml"
        head = (
            f"X-Kairos-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Kairos-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        tmp = self.outbox / f".{name}.tmp"
        tmp.write_bytes(head + envelope.original_content)
        tmp.rename(self.outbox / name)  # atomic: readers never see half a file
        log.info("sink stored", file=name, rcpt=envelope.rcpt_tos)
        return f"250 2.0.0 Ok: stored as {name}"


def start_sink(host: str, port: int, outbox: Path) -> Controller:
    """Start the sink in a background thread; ``.stop()`` the returned controller."""
    controller = Controller(
        OutboxHandler(outbox), hostname=host, port=port, data_size_limit=64 * 1024 * 1024
    )
    controller.start()
    return controller


async def run(host: str, port: int, outbox: Path, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set."""
    controller = start_sink(host, port, outbox)
    log.info("sink started", smtp=f"{host}:{port}", outbox=str(outbox))
    try:
        await stop.wait()
    finally:
        controller.stop()
