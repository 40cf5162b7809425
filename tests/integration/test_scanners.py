"""Virus and spam scanning at submit time, against the real daemons from Debian's packages:
clamd with a local test signature for the EICAR string, spamd with the GTUBE string. Each
daemon runs as this test module's own process, with its own configuration, on a free port."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from tests.integration.conftest import Stack, free_port, make_stack, read_values_to_end
from tests.integration.test_pipeline import body

pytestmark = pytest.mark.kafka

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def missing(reason: str) -> NoReturn:
    """Skip for a missing daemon, except in CI, which must run these tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the scanner tests: {reason}")
    pytest.skip(reason)


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on {port} within {limit}s")


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = shutil.which("clamd") or "/usr/sbin/clamd"
    if not Path(binary).exists():
        missing("clamd is not installed (Debian: clamav-daemon; scripts/system-deps.sh)")
    home = tmp_path_factory.mktemp("clamd")
    (home / "db").mkdir()
    # a local signature (type 0: any file) for the EICAR test string; no downloaded database
    (home / "db" / "kairos-test.ndb").write_text(f"Kairos.Test.EICAR:0:*:{EICAR.hex()}\n")
    port = free_port()
    (home / "clamd.conf").write_text(
        f"Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\n"
        f"DatabaseDirectory {home / 'db'}\nLogFile {home / 'clamd.log'}\nStreamMaxLength 25M\n"
    )
    started = time.monotonic()
    proc = subprocess.Popen([binary, "-c", str(home / "clamd.conf")], stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, "clamd")
        print(f"clamd listening after {time.monotonic() - started:.2f}s")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = shutil.which("spamd") or "/usr/sbin/spamd"
    if not Path(binary).exists():
        missing("spamd is not installed (Debian: spamd; scripts/system-deps.sh)")
    home = tmp_path_factory.mktemp("spamd")
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [binary, f"--listen=127.0.0.1:{port}", "--nouser-config", "--local",
         "--max-children=2", f"--pidfile={home / 'spamd.pid'}", "--syslog=stderr",
         *(["--username=nobody"] if _root() else [])],
        stdout=subprocess.DEVNULL,
        stderr=open(home / "spamd.log", "wb"),  # noqa: SIM115 - closed with the process
    )  # fmt: skip
    try:
        wait_listening(port, proc, "spamd")
        print(f"spamd listening after {time.monotonic() - started:.2f}s")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _root() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="module")
def scanned(
    clamd: int, spamd: int, bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Ingest with both scanners, and a second ingest whose clamd is down."""
    stack = make_stack(bootstrap, tmp_path_factory.mktemp("scanned"))
    stack.env["KAIROS_SCAN_CLAMD"] = f"tcp://127.0.0.1:{clamd}"
    stack.env["KAIROS_SCAN_SPAMD"] = f"127.0.0.1:{spamd}"
    down = {
        "KAIROS_HTTP_PORT": str(free_port()),
        "KAIROS_SMTP_PORT": str(free_port()),
        "KAIROS_SCAN_CLAMD": f"tcp://127.0.0.1:{free_port()}",  # nothing listens there
    }
    stack.env["_DOWN_HTTP"], stack.env["_DOWN_SMTP"] = (
        down["KAIROS_HTTP_PORT"],
        down["KAIROS_SMTP_PORT"],
    )
    try:
        stack.start("ingest")
        stack.start_as("ingest_down", "ingest", env=down, wait=False)
        stack.create_account("scanned")
        deadline = time.monotonic() + 60
        url = f"http://127.0.0.1:{down['KAIROS_HTTP_PORT']}/healthz"
        while True:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (
                f"ingest_down not healthy: {stack.tail('ingest_down')}"
            )
            time.sleep(0.2)
        yield stack
    finally:
        stack.stop_all()


def post(stack: Stack, payload: dict[str, object], port: int | None = None) -> httpx.Response:
    base = f"http://127.0.0.1:{port}" if port else stack.http
    return httpx.post(
        f"{base}/email",
        json=payload,
        headers={"Authorization": f"Bearer {stack.api_key}"},
        timeout=60,
    )


def smtp(
    stack: Stack, text: str, port: int | None = None, attach: bytes | None = None
) -> tuple[int, str]:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "hello@example.com", "u@example.org", "scan"
    msg["X-Scheduled-At"] = str(int(time.time()) + 3600)
    msg.set_content(text)
    if attach is not None:
        msg.add_attachment(attach, maintype="application", subtype="octet-stream", filename="e.com")
    with smtplib.SMTP("127.0.0.1", port or int(stack.env["KAIROS_SMTP_PORT"]), timeout=60) as c:
        c.login("scan", stack.api_key)
        try:
            c.send_message(msg)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
    return 250, ""


def later() -> int:
    return int(time.time()) + 3600


def test_clean_mail_passes_both_scanners(scanned: Stack) -> None:
    r = post(scanned, body("clean", scheduledAt=later()))
    assert r.status_code == 202, r.text
    assert smtp(scanned, "a clean message") == (250, "")


def test_a_virus_is_refused_over_http_and_smtp(scanned: Stack) -> None:
    attachment = {"filename": "e.com", "content": base64.b64encode(EICAR).decode()}
    r = post(scanned, body("infected attachment", scheduledAt=later(), attachments=[attachment]))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "MESSAGE_INFECTED" and "Kairos.Test.EICAR" in error["message"]
    r = post(scanned, body("infected text", text=EICAR.decode()))
    assert r.json()["error"]["code"] == "MESSAGE_INFECTED"
    code, reply = smtp(scanned, "see attached", attach=EICAR)
    assert (code, reply.split(":")[0]) == (554, "5.7.1 MESSAGE_INFECTED")
    sg = httpx.post(
        f"{scanned.http}/v3/mail/send",
        headers={"Authorization": f"Bearer {scanned.api_key}"},
        json={
            "personalizations": [{"to": [{"email": "u@example.org"}]}],
            "from": {"email": "hello@example.com"},
            "subject": "infected via sendgrid",
            "content": [{"type": "text/plain", "value": EICAR.decode()}],
        },
    )
    assert (sg.status_code, sg.json()["errors"][0]["help"]) == (400, "MESSAGE_INFECTED")


def test_spam_is_refused_over_http_and_smtp(scanned: Stack) -> None:
    r = post(scanned, body("spam", scheduledAt=later(), text=f"buy now\n{GTUBE}\n"))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "MESSAGE_SPAM"), r.text
    code, reply = smtp(scanned, f"buy now\n{GTUBE}\n")
    assert (code, reply.split(":")[0]) == (550, "5.7.1 MESSAGE_SPAM")


def test_a_scanner_that_is_down_is_a_transient_refusal(scanned: Stack) -> None:
    r = post(scanned, body("unscanned", scheduledAt=later()), port=int(scanned.env["_DOWN_HTTP"]))
    assert (r.status_code, r.json()["error"]["code"]) == (503, "SCANNER_UNAVAILABLE"), r.text
    code, reply = smtp(scanned, "unscanned", port=int(scanned.env["_DOWN_SMTP"]))
    assert (code, reply.split(":")[0]) == (451, "4.7.0 SCANNER_UNAVAILABLE")


def test_nothing_refused_was_published(scanned: Stack) -> None:
    # refusals of this test's own (the tests above add theirs when run with it)
    r = post(scanned, body("infected control", scheduledAt=later(), text=EICAR.decode()))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "MESSAGE_INFECTED"), r.text
    r = post(scanned, body("spam control", scheduledAt=later(), text=f"buy\n{GTUBE}\n"))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "MESSAGE_SPAM"), r.text
    r = post(
        scanned, body("unscanned control", scheduledAt=later()), port=int(scanned.env["_DOWN_HTTP"])
    )
    assert (r.status_code, r.json()["error"]["code"]) == (503, "SCANNER_UNAVAILABLE"), r.text
    r = post(scanned, body("published control", scheduledAt=later()))
    assert r.status_code == 202, r.text
    # a 202 is an acknowledged record: the topic read to its end offsets holds it
    values = asyncio.run(
        read_values_to_end(
            scanned.settings.kafka_bootstrap or "", scanned.settings.topic("schedule")
        )
    )
    mimes = [json.loads(v)["content"]["mime"] for v in values if b'"scheduled"' in v]
    assert any("published control" in m for m in mimes)
    for marker in ("infected", "EICAR", "GTUBE", "unscanned"):
        assert not any(marker in m for m in mimes), marker
