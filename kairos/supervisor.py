"""Running Kairos's services as child processes: one supervisor for ``kairos up``, the tests
and the bench.

Each service runs as users run it, ``python -m services.<name>`` (its own composition root),
with its own environment, log file and health endpoint. The supervisor starts them, waits
until each answers ``/healthz``, signals them (stop, freeze, thaw), stops them (SIGTERM, then
SIGKILL after a grace period) and, for ``kairos up``, restarts one that died, with backoff.
Children die with the supervisor (``PR_SET_PDEATHSIG`` on Linux): a supervisor that is killed
leaves no service spinning against a broker that may be gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SERVICES = ("ingest", "timer", "validator", "sender")
_PR_SET_PDEATHSIG = 1


def service_command(service: str) -> list[str]:
    """The interpreter arguments that run ``service`` (or the development sink)."""
    if service == "sink":
        return ["-m", "kairos.cli", "run", "sink"]
    return ["-m", f"services.{service}"]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    quiet: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a child process that is killed when this process exits, however it exits; its
    output appended to ``log``; without one, discarded (``quiet``) or on this process's own
    output."""
    out: Any = None if log is None and not quiet else subprocess.DEVNULL
    if log is not None:
        out = open(log, "ab")  # noqa: SIM115
    try:
        return subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    finally:
        if log is not None:
            out.close()


class ServiceFailed(RuntimeError):
    """A service exited, or did not become healthy in time."""


@dataclass
class Child:
    """One supervised process: what it runs, where it answers, how often it was restarted."""

    service: str
    args: list[str]
    env: dict[str, str]
    #: the port of its ``/healthz`` (for the sink: its SMTP port, healthy when it accepts)
    port: int | None
    proc: subprocess.Popen[bytes]
    restarts: int = 0
    next_restart: float = 0.0
    started: float = field(default_factory=time.monotonic)


@dataclass
class Supervisor:
    """Kairos's services as child processes. ``env``: every child's base environment;
    ``logs``: where each child's output goes (``<logs>/<name>.log``); without it, to this
    process's output (``kairos up`` in a terminal)."""

    env: Mapping[str, str]
    logs: Path | None = None
    children: dict[str, Child] = field(default_factory=dict)

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        return {name: child.proc for name, child in self.children.items()}

    def log_of(self, name: str) -> Path | None:
        return self.logs / f"{name}.log" if self.logs is not None else None

    def start(
        self,
        name: str,
        service: str | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        args: Sequence[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``service`` (default: ``name``) under ``name``, e.g. a second timer worker
        ``timer2`` with a state dir of its own in ``env``. ``port``: its health port;
        ``args``: another command line than the service's own."""
        service = service or name
        full = {**self.env, **(env or {})}
        argv = list(args) if args is not None else [sys.executable, *service_command(service)]
        proc = spawn(argv, full, self.log_of(name), quiet=False)
        self.children[name] = Child(service, argv, full, port, proc)
        return proc

    def healthy(self, name: str) -> bool:
        """Whether ``name`` answers: ``/healthz`` 200, or (the sink) accepts a connection."""
        child = self.children[name]
        if child.port is None:
            return child.proc.poll() is None
        try:
            if child.service == "sink":
                with socket.create_connection(("127.0.0.1", child.port), timeout=1):
                    return True
            r = httpx.get(f"http://127.0.0.1:{child.port}/healthz", timeout=2)
            return r.status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    def wait_healthy(self, name: str, timeout: float = 90.0) -> float:
        """Seconds until ``name`` is healthy; ServiceFailed if it exits or takes longer."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            proc = self.children[name].proc
            if proc.poll() is not None:
                raise ServiceFailed(f"{name} exited {proc.returncode}: {self.tail(name)}")
            if self.healthy(name):
                return time.monotonic() - started
            time.sleep(0.05)
        raise ServiceFailed(f"{name} not healthy in {timeout}s: {self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        """The last ``lines`` of ``name``'s log."""
        path = self.log_of(name)
        text = path.read_text(errors="replace") if path is not None and path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def send(self, name: str, sig: int) -> None:
        """Send ``sig`` to ``name`` (SIGSTOP freezes it, SIGCONT thaws it)."""
        self.children[name].proc.send_signal(sig)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop ``name`` with ``sig`` (SIGKILL after ``timeout``); its exit code."""
        proc = self.children.pop(name).proc
        _stop([proc], sig, timeout)
        return proc.returncode

    def stop_all(self, timeout: float = 20) -> None:
        """SIGTERM to every child at once, SIGKILL to those still running after ``timeout``."""
        procs = [child.proc for child in self.children.values()]
        self.children.clear()
        _stop(procs, signal.SIGTERM, timeout)

    def exited(self) -> dict[str, int]:
        """The children that have exited, with their exit codes."""
        return {
            name: child.proc.returncode
            for name, child in self.children.items()
            if child.proc.poll() is not None
        }

    def failing(self, limit: int) -> list[str]:
        """Children that exited again after ``limit`` restarts in a row: they keep dying."""
        return [
            name
            for name, child in self.children.items()
            if child.restarts >= limit and child.proc.poll() is not None
        ]

    def restart_exited(
        self, now: float, backoff: float = 1.0, most: float = 60.0, limit: int | None = None
    ) -> list[str]:
        """Restart every child that exited, each no sooner than its backoff allows: doubling
        from ``backoff`` to ``most`` seconds with each restart in a row, and from ``backoff``
        again for one that had run ``most`` seconds; none after ``limit`` restarts in a row
        (see :meth:`failing`). ``now``: ``time.monotonic()``. Returns the names restarted."""
        restarted = []
        for name, child in list(self.children.items()):
            if child.proc.poll() is None:
                continue
            if child.next_restart == 0.0 and now - child.started >= most:
                child.restarts = 0
            if limit is not None and child.restarts >= limit:
                continue
            if child.next_restart == 0.0:
                child.next_restart = now + min(most, backoff * 2**child.restarts)
            if now < child.next_restart:
                continue
            proc = spawn(child.args, child.env, self.log_of(name), quiet=False)
            self.children[name] = Child(
                child.service,
                child.args,
                child.env,
                child.port,
                proc,
                child.restarts + 1,
                started=now,
            )
            restarted.append(name)
        return restarted


def _stop(procs: Sequence[subprocess.Popen[bytes]], sig: int, timeout: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
