"""A private Postfix instance (Debian's package), started by the test harness: listens on a
loopback port and relays everything to ``[127.0.0.1]:<relay_port>``. Needs root (Postfix's
master runs as root and drops to the ``postfix`` user)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"


def available() -> str | None:
    """None when a private Postfix can run here, else why not."""
    if not Path(POSTFIX).exists():
        return "postfix is not installed (apt-get install postfix; scripts/system-deps.sh)"
    if os.geteuid() != 0:
        return "a private postfix instance needs root"
    return None


class Postfix:
    """``start()`` a Postfix on 127.0.0.1:``port`` relaying to 127.0.0.1:``relay_port``."""

    def __init__(self, base: Path, port: int, relay_port: int) -> None:
        self.base, self.port, self.relay_port = base, port, relay_port
        self.etc = base / "etc"
        self.maillog = base / "maillog"

    def _main_cf(self) -> str:
        b = self.base
        return "\n".join(
            [
                "compatibility_level = 3.6",
                f"queue_directory = {b / 'spool'}",
                f"data_directory = {b / 'data'}",
                "mail_owner = postfix",
                "setgid_group = postdrop",
                "inet_interfaces = 127.0.0.1",
                "inet_protocols = ipv4",
                "myhostname = relay.kairos.test",
                "mydomain = kairos.test",
                "mydestination =",
                "local_recipient_maps =",
                "alias_maps =",
                "alias_database =",
                f"relayhost = [127.0.0.1]:{self.relay_port}",
                "mynetworks = 127.0.0.0/8",
                "smtpd_relay_restrictions = permit_mynetworks, reject",
                "smtpd_recipient_restrictions = permit_mynetworks, reject",
                "smtp_dns_support_level = disabled",
                "smtp_tls_security_level = none",
                "smtpd_tls_security_level = none",
                "smtpd_banner = $myhostname ESMTP kairos-test",
                f"maillog_file = {self.maillog}",
                f"maillog_file_prefixes = {self.base}",
                "queue_run_delay = 1s",
                "minimal_backoff_time = 1s",
                "maximal_backoff_time = 2s",
                "message_size_limit = 52428800",
                "",
            ]
        )

    def _master_cf(self) -> str:
        text = Path("/etc/postfix/master.cf").read_text()
        lines = []
        for line in text.splitlines():
            fields = line.split()
            if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                fields[4] = "n"  # no chroot: the queue lives in a temp dir
                line = "  ".join(fields[:8]) + ("  " + " ".join(fields[8:]) if fields[8:] else "")
            lines.append(line)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 30) -> None:
        for d in ("etc", "spool", "data"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        (self.etc / "main.cf").write_text(self._main_cf())
        (self.etc / "master.cf").write_text(self._master_cf())
        shutil.chown(self.base / "data", "postfix")
        self._postfix("start")
        deadline = time.monotonic() + timeout
        import socket

        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if b"kairos-test" in s.recv(200):
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"postfix did not answer on {self.port}: {self.log_tail()}")

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.etc), "stop"], capture_output=True, timeout=60)

    def _postfix(self, command: str) -> None:
        run = subprocess.run(
            [POSTFIX, "-c", str(self.etc), command], capture_output=True, text=True, timeout=60
        )
        if run.returncode != 0:
            raise AssertionError(f"postfix {command} failed: {run.stdout} {run.stderr}")

    def log_tail(self, lines: int = 20) -> str:
        if not self.maillog.exists():
            return ""
        return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])

    def relayed(self) -> list[str]:
        """Queue ids Postfix relayed with ``status=sent``."""
        return re.findall(
            r"postfix/smtp\[\d+\]: (\w+): .*status=sent",
            self.maillog.read_text() if self.maillog.exists() else "",
        )
