"""The supervisor that ``kairos up``, the tests and the bench share, on real child processes
(tiny Python programs, no Kafka): health by HTTP, exits seen, restarts with backoff, stop."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from kairos.ports import free_port
from kairos.supervisor import ServiceFailed, Supervisor, service_command

#: a "service" that answers /healthz on the port it is given, until SIGTERM
HEALTHY = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404); self.end_headers()
    def log_message(self, *a): pass
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def test_a_service_is_run_as_its_own_composition_root() -> None:
    assert service_command("timer") == ["-m", "services.timer"]
    assert service_command("sink")[:2] == ["-m", "kairos.cli"]


def test_start_wait_healthy_and_stop(tmp_path: Path) -> None:
    supervisor = Supervisor({}, tmp_path)
    port = free_port()
    supervisor.start("web", port=port, args=python(HEALTHY, str(port)))
    try:
        assert supervisor.wait_healthy("web", timeout=30) >= 0
        assert supervisor.exited() == {}
        assert "serving" in supervisor.tail("web")
    finally:
        code = supervisor.stop("web", signal.SIGTERM, timeout=10)
    assert code == -signal.SIGTERM
    assert supervisor.children == {}


def test_a_service_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    supervisor = Supervisor({}, tmp_path)
    supervisor.start("crash", port=free_port(), args=python("print('boom'); raise SystemExit(3)"))
    with pytest.raises(ServiceFailed, match=r"crash exited 3: boom"):
        supervisor.wait_healthy("crash", timeout=30)


def test_a_dead_service_is_restarted_with_growing_backoff(tmp_path: Path) -> None:
    supervisor = Supervisor({}, tmp_path)
    supervisor.start("flaky", args=python("raise SystemExit(1)"))
    supervisor.children["flaky"].proc.wait()
    now = time.monotonic()
    assert supervisor.exited() == {"flaky": 1}
    assert supervisor.restart_exited(now, backoff=1.0) == []  # waits its backoff first
    assert supervisor.restart_exited(now + 1.0, backoff=1.0) == ["flaky"]
    child = supervisor.children["flaky"]
    assert child.restarts == 1
    child.proc.wait()
    later = now + 1.5
    assert supervisor.restart_exited(later, backoff=1.0) == []
    assert supervisor.restart_exited(later + 1.9, backoff=1.0) == []  # 2 s the second time
    assert supervisor.restart_exited(later + 2.0, backoff=1.0) == ["flaky"]
    supervisor.children["flaky"].proc.wait()
    # two restarts in a row, the limit: it keeps dying, and is left alone
    assert supervisor.failing(limit=2) == ["flaky"]
    assert supervisor.restart_exited(later + 100, backoff=1.0, limit=2) == []
    supervisor.stop_all(timeout=5)


def test_a_service_that_ran_a_while_starts_its_backoff_afresh(tmp_path: Path) -> None:
    supervisor = Supervisor({}, tmp_path)
    supervisor.start("once", args=python("raise SystemExit(1)"))
    child = supervisor.children["once"]
    child.proc.wait()
    child.restarts, child.started = 4, time.monotonic() - 120  # it had run two minutes
    now = time.monotonic()
    assert supervisor.failing(limit=4) == ["once"]
    assert supervisor.restart_exited(now, backoff=1.0, most=60.0, limit=4) == []  # 1 s first
    assert supervisor.restart_exited(now + 1.0, backoff=1.0, most=60.0, limit=4) == ["once"]
    assert supervisor.children["once"].restarts == 1
    supervisor.stop_all(timeout=5)


STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
time.sleep(60)
"""


def test_stop_all_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    supervisor = Supervisor({}, tmp_path)
    proc = supervisor.start("stubborn", args=python(STUBBORN))
    deadline = time.monotonic() + 30
    while "up" not in supervisor.tail("stubborn") and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.stop_all(timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
