"""The scanners' pure parts: clamd replies, addresses, and how verdicts become refusals."""

from __future__ import annotations

import pytest

from services.ingest.compose import SubmitError
from services.ingest.scanners import (
    CLEAN,
    ScannerUnavailable,
    Scanning,
    Verdict,
    parse_address,
    parse_clamd_reply,
)
from services.ingest.smtp import smtp_reply


def test_clamd_replies() -> None:
    assert parse_clamd_reply(b"stream: OK\0") == CLEAN
    found = parse_clamd_reply(b"stream: Win.Test.EICAR_HDB-1 FOUND\0")
    assert (found.clean, found.code) == (False, "MESSAGE_INFECTED")
    assert "Win.Test.EICAR_HDB-1" in found.detail
    too_big = parse_clamd_reply(b"INSTREAM size limit exceeded. ERROR\0")
    assert too_big.code == "MESSAGE_TOO_LARGE"
    with pytest.raises(ScannerUnavailable):
        parse_clamd_reply(b"stream: Can't allocate memory ERROR\0")


def test_addresses() -> None:
    assert parse_address("unix:///run/clamav/clamd.ctl", 3310) == "/run/clamav/clamd.ctl"
    assert parse_address("tcp://10.0.0.5:3311", 3310) == ("10.0.0.5", 3311)
    assert parse_address("spamd.mail:7830", 783) == ("spamd.mail", 7830)
    assert parse_address("spamd.mail", 783) == ("spamd.mail", 783)


class Fixed:
    def __init__(self, name: str, result: Verdict | Exception) -> None:
        self.name, self.result, self.calls = name, result, 0

    async def scan(self, raw: bytes) -> Verdict:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def refusal(scanning: Scanning) -> tuple[str, int]:
    with pytest.raises(SubmitError) as err:
        await scanning.check(b"message")
    return err.value.code, err.value.status


async def test_verdicts_become_refusals_with_stable_codes() -> None:
    virus = Verdict(False, "MESSAGE_INFECTED", "virus found: X")
    spam = Verdict(False, "MESSAGE_SPAM", "spam score 9")
    assert await refusal(Scanning([Fixed("clamd", virus)])) == ("MESSAGE_INFECTED", 400)
    assert await refusal(Scanning([Fixed("c", CLEAN), Fixed("s", spam)])) == ("MESSAGE_SPAM", 400)
    down = Fixed("clamd", ScannerUnavailable("refused"))
    assert await refusal(Scanning([down])) == ("SCANNER_UNAVAILABLE", 503)
    await Scanning([Fixed("clamd", CLEAN), Fixed("spamd", CLEAN)]).check(b"message")


async def test_fail_open_passes_only_an_unavailable_scanner() -> None:
    down, spam = Fixed("clamd", ScannerUnavailable("x")), Verdict(False, "MESSAGE_SPAM", "9")
    await Scanning([down], fail_open=True).check(b"message")
    assert down.calls == 1
    assert await refusal(Scanning([down, Fixed("s", spam)], fail_open=True)) == (
        "MESSAGE_SPAM",
        400,
    )


def test_smtp_replies_for_scanning() -> None:
    assert smtp_reply("MESSAGE_INFECTED", "virus").startswith("554 5.7.1 MESSAGE_INFECTED")
    assert smtp_reply("MESSAGE_SPAM", "spam").startswith("550 5.7.1 MESSAGE_SPAM")
    assert smtp_reply("SCANNER_UNAVAILABLE", "retry").startswith("451 4.7.0")
