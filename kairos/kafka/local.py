"""A real single-node Apache Kafka (KRaft) broker, run from its published jars, for development.

No Docker and no Kafka distribution are needed: only Java 17+ and, once per machine, Maven.

* Jars: :meth:`LocalKafka.ensure_jars` resolves ``kafka_2.13`` (plus an SLF4J-to-log4j2 bridge and
  ``kafka-tools``) with Maven into ``<cache_dir>/kafka/<version>/libs``, once per machine.
* State: everything else lives under ``<state_dir>/kafka/``::

      server.properties   generated on every start
      log4j2.xml          generated on every start
      cluster.id          the cluster id the storage was formatted with
      data/               log.dirs (topics and the KRaft metadata log)
      logs/kafka.log      the broker's log; logs/kafka.out its stdout/stderr;
      logs/tools.log      the log of the storage formatting tool
      kafka.pid           pid of the running broker
      lock                flock(2) lock: one start or stop at a time, across processes

* The JVM is detached (its own session, re-parented to init), so it outlives the process that
  started it and ignores a Ctrl-C of that process. ``stop`` (or ``kairos kafka stop``) ends it.

Every failure a user can fix raises :class:`LocalKafkaError` with a one-line reason and fix.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kairos.settings import KairosSettings

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka version the local broker runs (keep equal to ``kafka.version`` in pom.xml)."""

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
"""The plugin that copies the jars, by full coordinates (keep equal to the version in pom.xml)."""

MIN_JAVA = 17
"""Kafka 4.x brokers need Java 17 or newer."""

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""``message.max.bytes`` and ``replica.fetch.max.bytes`` of the local broker."""

HOST = "127.0.0.1"

_JVM_FLAGS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_JAVA_VERSION_RE = re.compile(r'version\s+"([^"]+)"')
_MARKER = ".complete"
_LOG_TAIL_LINES = 5


class LocalKafkaError(Exception):
    """A problem with the local broker that the user can fix.

    ``reason`` says what went wrong in one line, ``fix`` what to do about it;
    ``str(error)`` is ``"<reason> — <fix>"``.
    """

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason, fix)
        self.reason = reason
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.reason} — {self.fix}"


@dataclass(frozen=True)
class LocalKafkaStatus:
    """A snapshot of the local broker.

    ``running`` is true when the broker process recorded in the pid file is alive *and* answers
    a Kafka metadata request on ``bootstrap``. ``pid`` is that process's id while it is alive
    (possibly still starting up), else ``None``.
    """

    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    log_file: Path


class LocalKafka:
    """One local single-node KRaft broker, identified by its state directory.

    Instances are cheap and hold no resources; any number of them (in any number of processes)
    may point at the same state directory. ``start``/``stop`` serialise on a file lock.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        cache_dir: Path,
        port: int = 19092,
        controller_port: int = 19093,
        heap: str = "512m",
    ) -> None:
        """Describe a broker; nothing is checked, written or started here.

        Relative directories are resolved against the current working directory now.
        """
        self.home = (Path(state_dir).expanduser() / "kafka").absolute()
        self.jar_root = (Path(cache_dir).expanduser() / "kafka" / KAFKA_VERSION).absolute()
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self._java_checked = False

    @classmethod
    def from_settings(cls, settings: KairosSettings) -> LocalKafka:
        """The broker of ``settings``: ``state_dir``, ``cache_dir`` and ``local_kafka_*``."""
        return cls(
            state_dir=settings.state_dir,
            cache_dir=settings.cache_dir,
            port=settings.local_kafka_port,
            controller_port=settings.local_kafka_controller_port,
            heap=settings.local_kafka_heap,
        )

    # -- paths ---------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>``, the bootstrap servers of this broker."""
        return f"{HOST}:{self.port}"

    @property
    def lib_dir(self) -> Path:
        """The folder of broker jars (filled by :meth:`ensure_jars`)."""
        return self.jar_root / "libs"

    @property
    def data_dir(self) -> Path:
        """``log.dirs`` of the broker."""
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        """Where the broker writes its logs (``-Dkafka.logs.dir``)."""
        return self.home / "logs"

    @property
    def log_file(self) -> Path:
        """The broker's main log file."""
        return self.logs_dir / "kafka.log"

    @property
    def out_file(self) -> Path:
        """The JVM's stdout and stderr (start-up failures land here)."""
        return self.logs_dir / "kafka.out"

    @property
    def properties_file(self) -> Path:
        """The generated ``server.properties``."""
        return self.home / "server.properties"

    @property
    def log4j_file(self) -> Path:
        """The generated log4j2 configuration."""
        return self.home / "log4j2.xml"

    @property
    def pid_file(self) -> Path:
        """The pid of the running broker."""
        return self.home / "kafka.pid"

    @property
    def lock_file(self) -> Path:
        """The flock(2) lock serialising start and stop."""
        return self.home / "lock"

    @property
    def cluster_id_file(self) -> Path:
        """The cluster id the storage is formatted with."""
        return self.home / "cluster.id"

    # -- rendering (pure) ----------------------------------------------------------------------

    def server_properties(self) -> dict[str, str]:
        """The broker configuration: single node, KRaft combined mode, loopback only."""
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "10",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(MAX_MESSAGE_BYTES),
            "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        }
        return props

    def render_server_properties(self) -> str:
        """``server.properties`` as text (Java properties syntax)."""
        lines = [
            "# Generated by kairos.kafka.local on every start; edits are overwritten.",
            f"# Apache Kafka {KAFKA_VERSION}, single node, KRaft combined broker+controller.",
        ]
        for key, value in self.server_properties().items():
            lines.append(f"{key}={_escape_property(value)}")
        return "\n".join(lines) + "\n"

    def render_log4j2(self) -> str:
        """A log4j2 XML configuration: INFO to ``logs/kafka.log`` (rolled at 10 MB, 5 kept).

        The file name is ``${sys:kairos.log.name}.log`` (default ``kafka``), so tools run with
        the same configuration log elsewhere.
        """
        return _LOG4J2_XML

    def java_command(self, java: str, main: str, *args: str, heap: bool = True) -> list[str]:
        """The command line that runs ``main`` with the broker classpath and logging set up.

        ``heap=True`` (the broker) adds the heap and GC flags and logs to ``logs/kafka.log``;
        ``heap=False`` (a tool such as the StorageTool) uses JVM defaults and ``logs/tools.log``.
        """
        cmd = [java]
        if heap:
            cmd += [f"-Xmx{self.heap}", f"-Xms{self.heap}", *_JVM_FLAGS]
        else:
            cmd += ["-Dkairos.log.name=tools"]
        cmd += [
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            str(self.lib_dir / "*"),
            main,
            *args,
        ]
        return cmd

    # -- prerequisites -------------------------------------------------------------------------

    def find_java(self) -> str:
        """The ``java`` executable (``$JAVA_HOME/bin/java``, else ``java`` on PATH), Java 17+."""
        java_home = os.environ.get("JAVA_HOME")
        java: str | None = None
        if java_home:
            candidate = Path(java_home) / "bin" / "java"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                java = str(candidate)
        if java is None:
            java = shutil.which("java")
        if java is None:
            raise LocalKafkaError(
                "no `java` on PATH (the local Kafka broker needs Java 17+)",
                "install OpenJDK 17 or newer, e.g. `apt-get install openjdk-17-jre-headless`, "
                "or set KAIROS_KAFKA_BOOTSTRAP to use an existing cluster",
            )
        if not self._java_checked:
            version = _java_major_version(java)
            if version < MIN_JAVA:
                raise LocalKafkaError(
                    f"{java} is Java {version}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+",
                    "install OpenJDK 17 or newer (e.g. `apt-get install openjdk-17-jre-headless`) "
                    "and put it first on PATH or point JAVA_HOME at it",
                )
            self._java_checked = True
        return java

    def jars_present(self) -> bool:
        """Whether a completed download of the current pom.xml is in the cache."""
        marker = self.jar_root / _MARKER
        try:
            return marker.read_text().strip() == _pom_digest() and self.lib_dir.is_dir()
        except OSError:
            return False

    def ensure_jars(self) -> Path:
        """Download the broker jars once per machine; return the folder holding them.

        Runs ``mvn -q -B <maven-dependency-plugin>:copy-dependencies`` on a temporary copy of the
        packaged pom.xml. A marker file is written only after Maven succeeds, so an interrupted
        download is redone from scratch; a lock keeps two processes from downloading at once.
        """
        if self.jars_present():
            return self.lib_dir
        self.jar_root.mkdir(parents=True, exist_ok=True)
        with _flock(self.jar_root / "lock", timeout=1800, what="the Kafka jar download"):
            if self.jars_present():
                return self.lib_dir
            mvn = shutil.which("mvn")
            if mvn is None:
                raise LocalKafkaError(
                    f"no `mvn` on PATH (needed once, to download the Kafka {KAFKA_VERSION} jars)",
                    "install Maven 3.6+, e.g. `apt-get install maven`",
                )
            (self.jar_root / _MARKER).unlink(missing_ok=True)
            shutil.rmtree(self.lib_dir, ignore_errors=True)
            with tempfile.TemporaryDirectory(prefix="kairos-kafka-pom-") as tmp:
                pom = Path(tmp) / "pom.xml"
                pom.write_bytes(_pom_bytes())
                cmd = [
                    mvn,
                    "-q",
                    "-B",
                    "-Dstyle.color=never",
                    "-f",
                    str(pom),
                    f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
                    f"-DoutputDirectory={self.lib_dir}",
                ]
                try:
                    proc = subprocess.run(
                        cmd, cwd=tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL
                    )
                except OSError as exc:
                    raise LocalKafkaError(
                        f"could not run {mvn}: {exc}", "check the Maven installation"
                    ) from exc
            if proc.returncode != 0 or not any(self.lib_dir.glob("kafka_2.13-*.jar")):
                detail = _first_maven_error(proc.stdout + "\n" + proc.stderr)
                raise LocalKafkaError(
                    f"Maven could not download the Kafka {KAFKA_VERSION} jars"
                    + (f": {detail}" if detail else f" (exit code {proc.returncode})"),
                    "check network access to the Maven repository (or the proxy/mirror settings "
                    "in ~/.m2/settings.xml), then retry",
                )
            (self.jar_root / _MARKER).write_text(_pom_digest() + "\n")
        return self.lib_dir

    def check_ports_free(self) -> None:
        """Raise :class:`LocalKafkaError` if the broker or controller port is taken."""
        for port, var in (
            (self.port, "KAIROS_LOCAL_KAFKA_PORT"),
            (self.controller_port, "KAIROS_LOCAL_KAFKA_CONTROLLER_PORT"),
        ):
            if not _port_free(HOST, port):
                raise LocalKafkaError(
                    f"port {port} on {HOST} is in use by a process that is not the local "
                    f"Kafka broker of {self.home}",
                    f"set {var} to a free port, or stop the other process",
                )

    # -- process bookkeeping -------------------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is alive and is a broker started with our server.properties."""
        if not _pid_alive(pid):
            return False
        cmdline = _cmdline(pid)
        if cmdline is None:  # cannot tell: trust the pid file
            return True
        return "kafka.Kafka" in cmdline and str(self.properties_file) in cmdline

    def _live_pid(self, *, cleanup: bool) -> int | None:
        """The pid of our running broker, else None.

        With ``cleanup`` (only while holding the lock, so a pid file being written by a
        starting process is never mistaken for garbage) a stale pid file is removed silently.
        """
        pid = self._read_pid()
        if pid is not None and self._is_ours(pid):
            return pid
        if cleanup:
            self.pid_file.unlink(missing_ok=True)
        return None

    def _answers(self, timeout: float = 5.0) -> bool:
        """Whether the listener accepts a TCP connection and answers a metadata request."""
        try:
            with socket.create_connection((HOST, self.port), timeout=min(timeout, 1.0)):
                pass
        except OSError:
            return False
        return _run_coro(_metadata_ok(self.bootstrap, timeout))

    # -- lifecycle -----------------------------------------------------------------------------

    def status(self) -> LocalKafkaStatus:
        """Where the broker is and whether it is running (see :class:`LocalKafkaStatus`)."""
        pid: int | None = None
        if self.home.is_dir():
            try:
                with _flock(self.lock_file, timeout=0, what="the local Kafka broker"):
                    pid = self._live_pid(cleanup=True)
            except LocalKafkaError:  # a start or stop is under way: look, do not touch
                pid = self._live_pid(cleanup=False)
        running = pid is not None and self._answers()
        return LocalKafkaStatus(
            running=running,
            pid=pid,
            bootstrap=self.bootstrap,
            data_dir=self.data_dir,
            log_file=self.log_file,
        )

    def start(self, timeout: float = 90) -> str:
        """Start the broker unless it is running; return its bootstrap servers once it answers.

        Idempotent: a running, answering broker is returned at once, and a broker another process
        is starting is waited for rather than started twice. ``timeout`` bounds the wait for the
        broker to answer (the one-time jar download is not counted). Raises
        :class:`LocalKafkaError` if prerequisites are missing, a port is taken, or the broker
        does not come up (with the last lines of its log).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        pid = self._live_pid(cleanup=False)
        if pid is not None and self._answers():
            return self.bootstrap
        java = self.find_java()
        self.ensure_jars()
        with _flock(self.lock_file, timeout=timeout + 60, what="the local Kafka broker"):
            deadline = time.monotonic() + timeout
            pid = self._live_pid(cleanup=True)
            if pid is None:
                self._validate_heap()
                self.check_ports_free()
                self._prepare(java)
                pid = self._launch(java)
            self._wait_ready(pid, deadline)
        return self.bootstrap

    def ensure_running(self) -> str:
        """The bootstrap servers of the local broker, starting it first if it is not running."""
        return self.start()

    def stop(self, timeout: float = 30) -> bool:
        """Stop the broker: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.

        Returns True if a broker was running and has been stopped, False if none was running.
        Idempotent; the data directory is kept.
        """
        if not self.home.is_dir():
            return False
        with _flock(self.lock_file, timeout=timeout + 120, what="the local Kafka broker"):
            pid = self._live_pid(cleanup=True)
            if pid is None:
                return False
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_exit(pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_exit(pid, 10)
            self.pid_file.unlink(missing_ok=True)
            return True

    # -- start-up steps ------------------------------------------------------------------------

    def _validate_heap(self) -> None:
        if not _HEAP_RE.match(self.heap):
            raise LocalKafkaError(
                f"invalid local Kafka heap size {self.heap!r}",
                "set KAIROS_LOCAL_KAFKA_HEAP to a JVM size such as 512m or 1g",
            )

    def _cluster_id(self) -> str:
        meta = self.data_dir / "meta.properties"
        with contextlib.suppress(OSError):
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.partition("=")[2].strip()
        with contextlib.suppress(OSError):
            stored = self.cluster_id_file.read_text().strip()
            if stored:
                return stored
        cluster_id = new_cluster_id()
        self.cluster_id_file.write_text(cluster_id + "\n")
        return cluster_id

    def _prepare(self, java: str) -> None:
        """Write the configuration files and format the storage once."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        _write_if_changed(self.properties_file, self.render_server_properties())
        _write_if_changed(self.log4j_file, self.render_log4j2())
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = self._cluster_id()
        cmd = self.java_command(
            java,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_file),
            "--ignore-formatted",
            heap=False,
        )
        proc = subprocess.run(
            cmd, cwd=self.home, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            detail = _last_error_line(proc.stdout + "\n" + proc.stderr)
            raise LocalKafkaError(
                f"formatting the Kafka storage in {self.data_dir} failed: {detail}",
                f"stop the broker and delete {self.home} to start afresh",
            )

    def _launch(self, java: str) -> int:
        """Start the JVM detached (own session, re-parented to init); return and record its pid."""
        cmd = self.java_command(java, "kafka.Kafka", str(self.properties_file))
        with self.out_file.open("ab") as out:
            out.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        # `sh` backgrounds the JVM and exits at once, so the JVM never becomes our child: no
        # zombie, no ResourceWarning, and it keeps running when this process ends.
        launcher = 'out=$1; shift; "$@" >>"$out" 2>&1 </dev/null & echo $!'
        proc = subprocess.run(
            ["/bin/sh", "-c", launcher, "sh", str(self.out_file), *cmd],
            cwd=self.home,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            check=False,
        )
        try:
            pid = int(proc.stdout.strip())
        except ValueError as exc:
            raise LocalKafkaError(
                f"could not launch the Kafka JVM: {proc.stderr.strip() or 'no pid'}",
                f"check that {java} runs",
            ) from exc
        _write_if_changed(self.pid_file, f"{pid}\n")  # atomic: readers never see half a pid
        return pid

    def _wait_ready(self, pid: int, deadline: float) -> None:
        while True:
            if not _pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise LocalKafkaError(
                    "the Kafka broker exited during start-up; last log lines:\n" + self._log_tail(),
                    f"see {self.log_file} and {self.out_file}",
                )
            remaining = deadline - time.monotonic()
            if self._answers(timeout=max(1.0, min(5.0, remaining))):
                return
            if time.monotonic() >= deadline:
                raise LocalKafkaError(
                    f"the Kafka broker (pid {pid}) did not answer on {self.bootstrap} in time; "
                    "last log lines:\n" + self._log_tail(),
                    f"see {self.log_file}; retry with a longer timeout or "
                    "`kairos kafka stop` and start again",
                )
            time.sleep(0.25)

    def _log_tail(self) -> str:
        """The last lines the JVM printed since the latest launch, else the last log lines."""
        lines: list[str] = []
        with contextlib.suppress(OSError):
            out = self.out_file.read_text(errors="replace").rpartition("\n--- start ")[2]
            lines = [line for line in out.splitlines()[1:] if line.strip()]
        path = self.out_file
        if not lines:
            path = self.log_file
            with contextlib.suppress(OSError):
                lines = path.read_text(errors="replace").rstrip().splitlines()
        tail = [f"  {path.name}: {line}" for line in lines[-_LOG_TAIL_LINES:]]
        return "\n".join(tail) if tail else "  (no log output)"


# -- helpers ---------------------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A random KRaft cluster id, as ``kafka-storage random-uuid`` makes them.

    Base64url of 16 random bytes without padding; ids starting with ``-`` are avoided (Kafka
    rejects them because they read like command-line flags).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _escape_property(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _write_if_changed(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text`` unless it already holds exactly that."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _pom_bytes() -> bytes:
    return resources.files("kairos.kafka").joinpath("pom.xml").read_bytes()


def _pom_digest() -> str:
    return hashlib.sha256(_pom_bytes()).hexdigest()


def _java_major_version(java: str) -> int:
    """The major version of ``java`` (8 for ``1.8.0_x``, 17 for ``17.0.15``)."""
    try:
        proc = subprocess.run(
            [java, "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(
            f"could not run `{java} -version`: {exc}",
            "install OpenJDK 17 or newer, e.g. `apt-get install openjdk-17-jre-headless`",
        ) from exc
    match = _JAVA_VERSION_RE.search(proc.stderr + proc.stdout)
    if proc.returncode != 0 or match is None:
        raise LocalKafkaError(
            f"`{java} -version` did not report a version",
            "install OpenJDK 17 or newer, e.g. `apt-get install openjdk-17-jre-headless`",
        )
    return parse_java_version(match.group(1))


def parse_java_version(text: str) -> int:
    """The major version in a ``java -version`` string: ``"1.8.0_401"`` → 8, ``"17.0.2"`` → 17."""
    parts = re.split(r"[._+\-]", text)
    try:
        major = int(parts[0])
        if major == 1 and len(parts) > 1:
            major = int(parts[1])
    except ValueError:
        return 0
    return major


def _port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound (a socket in TIME_WAIT does not count as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (only possible if the broker was our direct child).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[0] == "Z":
            return False
    return True


def _cmdline(pid: int) -> str | None:
    """The command line of ``pid``, or None when it cannot be read on this platform."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
    try:
        out = subprocess.run(
            ["ps", "-ww", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _last_error_line(output: str) -> str:
    """The most telling line of a tool's output (the last ERROR line, else the last line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "Exception" in line]
    line = (errors or lines or [""])[-1]
    return _clip(re.sub(r"\x1b\[[0-9;]*m", "", line))


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_maven_error(output: str) -> str:
    """The first meaningful ``[ERROR]`` line of Maven's output (without the prefix)."""
    for raw in output.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw).strip()
        if not line.startswith("[ERROR]"):
            continue
        text = line.removeprefix("[ERROR]").strip()
        if text and not text.startswith(("[Help", "->", "To see", "Re-run", "For more")):
            return _clip(text)
    return _last_error_line(output)


@contextlib.contextmanager
def _flock(path: Path, *, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive flock(2) on ``path`` (created if missing) for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if timeout <= 0 or time.monotonic() >= deadline:
                    raise LocalKafkaError(
                        f"another process has held the lock {path} on {what} "
                        f"for more than {timeout:.0f}s",
                        "wait for it to finish, or find it with `fuser " + str(path) + "`",
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def _metadata_ok(bootstrap: str, wait: float) -> bool:
    """Whether a metadata request to ``bootstrap`` lists at least one broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(1000, int(wait * 1000)),
        client_id="kairos-local-kafka-probe",
    )
    try:
        async with asyncio.timeout(wait):
            await admin.start()
            cluster: dict[str, Any] = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _run_coro(coro: Any) -> bool:
    """Run a coroutine to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return bool(asyncio.run(coro))
    result: list[bool] = [False]

    def runner() -> None:
        result[0] = bool(asyncio.run(coro))

    thread = threading.Thread(target=runner, name="kairos-kafka-probe", daemon=True)
    thread.start()
    thread.join()
    return result[0]


_LOG4J2_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by kairos.kafka.local; edits are overwritten. -->
<Configuration status="WARN" name="kairos-local-kafka">
  <Appenders>
    <RollingFile name="kafka" fileName="${sys:kafka.logs.dir}/${sys:kairos.log.name:-kafka}.log"
                 filePattern="${sys:kafka.logs.dir}/${sys:kairos.log.name:-kafka}.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies>
        <SizeBasedTriggeringPolicy size="10 MB"/>
      </Policies>
      <DefaultRolloverStrategy max="5"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO">
      <AppenderRef ref="kafka"/>
    </Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.network.RequestChannel$" level="WARN"/>
  </Loggers>
</Configuration>
"""
