"""Postfix's SMTP test tools: ``smtp-sink`` (C, accepts and discards, the relay of the
throughput scenarios) and ``smtp-source`` (C, the SMTP ceiling's client).

The SMTP ceiling is ``smtp-source`` sending the bench's message size over as many parallel
connections as the sender keeps (``KAIROS_RELAY_POOL_SIZE``), each connection reused for the
next message (``-d``) as the sender's pool does, to a ``smtp-sink`` of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import cpu
from bench.harness import wait_port
from kairos.supervisor import spawn

DIRS = ("/usr/sbin", "/usr/lib/postfix/sbin", "/usr/libexec/postfix", "/usr/local/sbin")


def find(tool: str) -> str | None:
    """The path of a Postfix tool (``smtp-sink``, ``smtp-source``); None when not installed."""
    found = shutil.which(tool)
    if found:
        return found
    for d in DIRS:
        path = Path(d) / tool
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def available() -> bool:
    return find("smtp-sink") is not None and find("smtp-source") is not None


_MESG = re.compile(rb"mesg=(\d+)")


def parse_counter(out: bytes) -> int:
    """Messages received from ``smtp-sink -c``'s output: its last ``mesg=N`` (0 if none)."""
    found = _MESG.findall(out)
    return int(found[-1]) if found else 0


class SmtpSink:
    """``smtp-sink -c`` on a port, in its own process: discards every message and counts them
    (its running counter, read from the tail of its output)."""

    def __init__(self, port: int, base: Path) -> None:
        self.port, self.out = port, base / f"smtp-sink-{port}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        tool = find("smtp-sink")
        if tool is None:
            raise RuntimeError("smtp-sink (Postfix) is not installed: make system-deps")
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = spawn([tool, *user, "-c", f"127.0.0.1:{self.port}", "1024"], log=self.out)
        wait_port(self.port)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def count(self) -> int:
        try:
            with open(self.out, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - 256))
                return parse_counter(f.read())
        except OSError:
            return 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def smtp_ceiling(
    base: Path, port: int, messages: int, connections: int, size: int
) -> dict[str, Any]:
    """``smtp-source`` sends ``messages`` of ``size`` bytes over ``connections`` sessions to a
    fresh ``smtp-sink``: messages per second, and the CPU of each side per 1,000 messages."""
    tool = find("smtp-source")
    if tool is None:
        raise RuntimeError("smtp-source (Postfix) is not installed: make system-deps")
    sink = SmtpSink(port, base)
    sink.start()
    try:
        sink_pid = sink.pid
        before = cpu.snapshot({"smtp-sink": sink_pid})
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                tool,
                "-d",
                "-s",
                str(connections),
                "-m",
                str(messages),
                "-l",
                str(size),
                "-f",
                "hello@bench.test",
                "-t",
                "user@example.org",
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        after = cpu.snapshot({"smtp-sink": sink_pid})
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode != 0:
            raise RuntimeError(f"smtp-source failed: {err[-300:]}")
        deadline = time.monotonic() + 5
        while sink.count < messages and time.monotonic() < deadline:
            time.sleep(0.1)
        received = sink.count
    finally:
        sink.stop()
    sink_ms = cpu.delta_ms(before, after)["smtp-sink"]
    source_ms = (usage.ru_utime + usage.ru_stime) * 1000
    return {
        "messages": messages,
        "connections": connections,
        "message_bytes": size,
        "seconds": seconds,
        "per_s": messages / seconds if seconds > 0 else None,
        "received_by_sink": received,
        "cpu_ms": {"smtp-source": source_ms, "smtp-sink": sink_ms},
        "ms_per_1000": {
            "smtp-source": cpu.per_thousand(source_ms, messages),
            "smtp-sink": cpu.per_thousand(sink_ms, messages),
        },
    }
