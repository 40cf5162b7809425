"""Virus and spam scanning at submit time, through pluggable scanners (off by default).

* :class:`ClamdScanner` streams the raw message to clamd with ``INSTREAM`` (TCP or a unix
  socket). Written here rather than taken from a library: the async clients on PyPI read the
  message 1 KiB at a time through a thread each and speak TCP only.
* :class:`SpamdScanner` asks spamd with ``aiospamc`` (the maintained async spamc client).
* :class:`Scanning` runs the configured scanners in order and turns a verdict into a refusal
  with a stable code: ``MESSAGE_INFECTED``, ``MESSAGE_SPAM``, or ``SCANNER_UNAVAILABLE`` (a
  transient refusal: an unscanned message is never accepted unless ``KAIROS_SCAN_FAIL_OPEN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass
from typing import Protocol

from kairos.logging import get_logger
from kairos.metrics import REJECTED
from kairos.settings import KairosSettings
from services.ingest.compose import SubmitError

log = get_logger("kairos.scan")

#: INSTREAM chunk size (clamd's StreamMaxLength bounds the total, not a chunk).
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Verdict:
    """What a scanner found: ``clean``, or the refusal ``code`` with a human ``detail``."""

    clean: bool
    code: str = ""
    detail: str = ""


CLEAN = Verdict(True)


class ScannerUnavailable(RuntimeError):
    """The scanner could not give a verdict (down, timed out, or answered an error)."""


class Scanner(Protocol):
    name: str

    async def scan(self, raw: bytes) -> Verdict: ...


def parse_clamd_reply(reply: bytes) -> Verdict:
    """A verdict from clamd's INSTREAM reply (``stream: OK``, ``stream: <name> FOUND``);
    ScannerUnavailable for an error reply."""
    text = reply.rstrip(b"\0\n").decode("utf-8", "replace")
    _, _, result = text.partition(": ")
    if result == "OK":
        return CLEAN
    if result.endswith(" FOUND"):
        name = result.removesuffix(" FOUND")
        return Verdict(False, "MESSAGE_INFECTED", f"virus found: {name}")
    if "size limit exceeded" in text:
        return Verdict(False, "MESSAGE_TOO_LARGE", "larger than the virus scanner accepts")
    raise ScannerUnavailable(f"clamd answered {text!r}")


def parse_address(address: str, default_port: int) -> tuple[str, int] | str:
    """``unix:///path`` -> the path; ``tcp://host:port``, ``host:port`` or ``host`` ->
    (host, port)."""
    if address.startswith("unix://"):
        return address.removeprefix("unix://")
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    if not host:
        return port, default_port
    return host, int(port)


class ClamdScanner:
    name = "clamd"

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = parse_address(address, 3310)
        self.timeout = timeout

    async def scan(self, raw: bytes) -> Verdict:
        try:
            return await asyncio.wait_for(self._instream(raw), self.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise ScannerUnavailable(f"clamd: {exc or type(exc).__name__}") from exc

    async def _instream(self, raw: bytes) -> Verdict:
        if isinstance(self.address, str):
            reader, writer = await asyncio.open_unix_connection(self.address)
        else:
            reader, writer = await asyncio.open_connection(*self.address)
        try:
            writer.write(b"zINSTREAM\0")
            for i in range(0, len(raw), CHUNK):
                chunk = raw[i : i + CHUNK]
                writer.write(struct.pack("!L", len(chunk)) + chunk)
                await writer.drain()
            writer.write(struct.pack("!L", 0))
            await writer.drain()
            return parse_clamd_reply(await reader.readuntil(b"\0"))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class SpamdScanner:
    name = "spamd"

    def __init__(self, address: str, timeout: float = 30.0, threshold: float | None = None) -> None:
        self.address = parse_address(address, 783)
        self.timeout, self.threshold = timeout, threshold

    async def scan(self, raw: bytes) -> Verdict:
        import aiospamc
        from aiospamc.exceptions import ClientException, TimeoutException
        from aiospamc.responses import ResponseException

        target = (
            {"socket_path": self.address}
            if isinstance(self.address, str)
            else {"host": self.address[0], "port": self.address[1]}
        )
        try:
            response = await aiospamc.check(
                raw,
                timeout=aiospamc.Timeout(total=self.timeout),
                **target,
            )
        except (ClientException, ResponseException, TimeoutException, OSError, TimeoutError) as exc:
            raise ScannerUnavailable(f"spamd: {exc or type(exc).__name__}") from exc
        spam = response.headers["Spam"]
        score, threshold = float(spam.score), float(spam.threshold)
        if self.threshold is not None:
            threshold = self.threshold
            is_spam = score >= threshold
        else:
            is_spam = bool(spam.value)
        if is_spam:
            return Verdict(False, "MESSAGE_SPAM", f"spam score {score:g} (threshold {threshold:g})")
        return CLEAN


class Scanning:
    """The configured scanners, run in order on a message before it is accepted."""

    def __init__(self, scanners: list[Scanner], fail_open: bool = False) -> None:
        self.scanners, self.fail_open = scanners, fail_open

    async def check(self, raw: bytes) -> None:
        """Return if every scanner passes the message; SubmitError otherwise."""
        for scanner in self.scanners:
            try:
                verdict = await scanner.scan(raw)
            except ScannerUnavailable as exc:
                if self.fail_open:
                    REJECTED.labels("scan", "SCANNER_UNAVAILABLE_PASSED").inc()
                    log.warning("scanner unavailable; passing unscanned", error=str(exc))
                    continue
                log.warning("scanner unavailable", error=str(exc))
                raise SubmitError(
                    "SCANNER_UNAVAILABLE",
                    f"the {scanner.name} scanner is unavailable; retry",
                    None,
                    503,
                ) from exc
            if not verdict.clean:
                status = 413 if verdict.code == "MESSAGE_TOO_LARGE" else 400
                raise SubmitError(verdict.code, verdict.detail, None, status)


def scanning_from(settings: KairosSettings) -> Scanning | None:
    """The scanners ``KAIROS_SCAN_*`` configures, or None (the default: no scanning)."""
    scanners: list[Scanner] = []
    if settings.scan_clamd:
        scanners.append(ClamdScanner(settings.scan_clamd, settings.scan_timeout))
    if settings.scan_spamd:
        scanners.append(
            SpamdScanner(settings.scan_spamd, settings.scan_timeout, settings.scan_spam_threshold)
        )
    return Scanning(scanners, settings.scan_fail_open) if scanners else None
