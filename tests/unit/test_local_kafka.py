"""The pure parts of the local broker: configuration, prerequisites, pid files, port checks.

Fast and broker-free: nothing here starts a JVM or runs Maven.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kairos.kafka import local
from kairos.kafka.cli import kafka
from kairos.kafka.local import LocalKafka, LocalKafkaError
from kairos.ports import free_port
from kairos.settings import KairosSettings


@pytest.fixture
def broker(tmp_path: Path) -> LocalKafka:
    return LocalKafka(
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        port=41092,
        controller_port=41093,
        heap="256m",
    )


@pytest.fixture
def listening() -> Iterator[int]:
    """A port some other process is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield int(sock.getsockname()[1])


def _free_port() -> int:
    return free_port()


def _parse_properties(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key] = value
    return props


def test_error_text_is_reason_dash_fix() -> None:
    error = LocalKafkaError("no java", "install it")
    assert str(error) == "no java — install it"
    assert (error.reason, error.fix) == ("no java", "install it")


def test_from_settings_maps_every_local_setting(tmp_path: Path) -> None:
    settings = KairosSettings(
        state_dir=tmp_path / "s",
        cache_dir=tmp_path / "c",
        local_kafka_port=40001,
        local_kafka_controller_port=40002,
        local_kafka_heap="1g",
    )
    broker = LocalKafka.from_settings(settings)
    assert broker.home == tmp_path / "s" / "kafka"
    assert broker.lib_dir == tmp_path / "c" / "kafka" / local.KAFKA_VERSION / "libs"
    assert (broker.port, broker.controller_port, broker.heap) == (40001, 40002, "1g")
    assert broker.bootstrap == "127.0.0.1:40001"


def test_relative_state_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    broker = LocalKafka(state_dir=Path(".kairos"), cache_dir=Path("cache"))
    assert broker.home == tmp_path / ".kairos" / "kafka"
    assert broker.data_dir.is_absolute()


def test_server_properties_single_node_kraft(broker: LocalKafka) -> None:
    props = _parse_properties(broker.render_server_properties())
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:41093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:41092,CONTROLLER://127.0.0.1:41093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:41092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(broker.data_dir)
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "num.partitions",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    assert props["message.max.bytes"] == "16777216"
    assert props["replica.fetch.max.bytes"] == "16777216"
    assert int(props["offsets.topic.num.partitions"]) <= 10


def test_server_properties_escape_backslashes(tmp_path: Path) -> None:
    broker = LocalKafka(state_dir=tmp_path / "a\\b", cache_dir=tmp_path)
    props = _parse_properties(broker.render_server_properties())
    assert props["log.dirs"] == str(broker.data_dir).replace("\\", "\\\\")


def test_log4j2_config_writes_kafka_log(broker: LocalKafka) -> None:
    xml = broker.render_log4j2()
    assert "${sys:kafka.logs.dir}/${sys:kairos.log.name:-kafka}.log" in xml
    assert '<Root level="INFO">' in xml


def test_java_command_uses_heap_flags_and_classpath(broker: LocalKafka) -> None:
    cmd = broker.java_command("/usr/bin/java", "kafka.Kafka", "server.properties")
    assert cmd[:3] == ["/usr/bin/java", "-Xmx256m", "-Xms256m"]
    assert "-XX:+UseG1GC" in cmd
    assert f"-Dlog4j2.configurationFile={broker.log4j_file}" in cmd
    assert f"-Dkafka.logs.dir={broker.logs_dir}" in cmd
    assert cmd[cmd.index("-cp") + 1] == f"{broker.lib_dir}/*"
    assert cmd[-2:] == ["kafka.Kafka", "server.properties"]
    tool = broker.java_command("java", "kafka.tools.StorageTool", heap=False)
    assert not any(arg.startswith("-Xmx") for arg in tool)


def test_missing_java_is_a_clear_error(broker: LocalKafka, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(LocalKafkaError) as info:
        broker.find_java()
    assert "java" in info.value.reason
    assert "openjdk-17" in info.value.fix


def test_missing_java_stops_start_before_anything_runs(
    broker: LocalKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(LocalKafkaError, match="no `java` on PATH"):
        broker.start(timeout=1)
    assert not broker.pid_file.exists()


@pytest.mark.parametrize(
    ("text", "major"),
    [("1.8.0_401", 8), ("11.0.2", 11), ("17.0.15", 17), ("21", 21), ("25-ea", 25), ("x", 0)],
)
def test_parse_java_version(text: str, major: int) -> None:
    assert local.parse_java_version(text) == major


def test_old_java_is_a_clear_error(
    broker: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(LocalKafkaError) as info:
        broker.find_java()
    assert "Java 11" in info.value.reason
    assert "17" in info.value.fix


def test_missing_maven_is_a_clear_error(
    broker: LocalKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(LocalKafkaError) as info:
        broker.ensure_jars()
    assert "mvn" in info.value.reason
    assert "Maven" in info.value.fix


def test_jars_need_a_marker_of_the_current_pom(broker: LocalKafka) -> None:
    broker.lib_dir.mkdir(parents=True)
    assert not broker.jars_present()  # download never finished
    (broker.jar_root / ".complete").write_text("an older pom\n")
    assert not broker.jars_present()
    (broker.jar_root / ".complete").write_text(local._pom_digest() + "\n")
    assert broker.jars_present()
    assert broker.ensure_jars() == broker.lib_dir


def test_pom_pins_the_versions() -> None:
    pom = local._pom_bytes().decode()
    assert f"<kafka.version>{local.KAFKA_VERSION}</kafka.version>" in pom
    plugin_version = local.MAVEN_DEPENDENCY_PLUGIN.rpartition(":")[2]
    assert f"<version>{plugin_version}</version>" in pom
    assert "log4j-slf4j-impl" in pom


def test_first_maven_error_skips_boilerplate() -> None:
    output = (
        "[ERROR] Failed to execute goal on project x: Could not resolve dependencies\n"
        "[ERROR] \n[ERROR] To see the full stack trace of the errors, re-run Maven\n"
        "[ERROR] [Help 1] http://example.invalid/help\n"
    )
    assert local._first_maven_error(output).startswith("Failed to execute goal")


def test_port_in_use_by_another_process_is_detected(broker: LocalKafka, listening: int) -> None:
    broker.port, broker.controller_port = listening, _free_port()
    with pytest.raises(LocalKafkaError) as info:
        broker.check_ports_free()
    assert str(listening) in info.value.reason
    assert "KAIROS_LOCAL_KAFKA_PORT" in info.value.fix


def test_busy_controller_port_names_its_setting(broker: LocalKafka, listening: int) -> None:
    broker.port = _free_port()
    broker.controller_port = listening
    with pytest.raises(LocalKafkaError) as info:
        broker.check_ports_free()
    assert "KAIROS_LOCAL_KAFKA_CONTROLLER_PORT" in info.value.fix


def test_free_ports_pass(broker: LocalKafka) -> None:
    broker.port, broker.controller_port = _free_port(), _free_port()
    broker.check_ports_free()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_pid_file_is_removed_silently(broker: LocalKafka) -> None:
    broker.home.mkdir(parents=True)
    broker.pid_file.write_text(f"{_dead_pid()}\n")
    state = broker.status()
    assert not state.running
    assert state.pid is None
    assert not broker.pid_file.exists()
    assert broker.stop() is False


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_pid_of_an_unrelated_process_is_not_ours(broker: LocalKafka) -> None:
    broker.home.mkdir(parents=True)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            broker.pid_file.write_text(f"{other.pid}\n")
            assert broker.stop() is False  # never signals a process that is not our broker
            assert other.poll() is None
            assert not broker.pid_file.exists()
        finally:
            other.kill()


def test_garbage_pid_file_is_removed(broker: LocalKafka) -> None:
    broker.home.mkdir(parents=True)
    broker.pid_file.write_text("not a pid")
    assert broker.status().pid is None
    assert not broker.pid_file.exists()


def test_cluster_id_looks_like_kafkas() -> None:
    for _ in range(200):
        cluster_id = local.new_cluster_id()
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_invalid_heap_is_a_clear_error(broker: LocalKafka) -> None:
    broker.heap = "lots"
    with pytest.raises(LocalKafkaError, match="KAIROS_LOCAL_KAFKA_HEAP"):
        broker._validate_heap()


def test_flock_excludes_a_second_holder(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with local._flock(lock, timeout=1, what="x"):
        script = (
            "import sys; from pathlib import Path; from kairos.kafka import local\n"
            "try:\n"
            f"    with local._flock(Path({str(lock)!r}), timeout=0.3, what='x'): sys.exit(0)\n"
            "except local.LocalKafkaError: sys.exit(3)\n"
        )
        assert subprocess.run([sys.executable, "-c", script]).returncode == 3
    # released: a second holder gets it
    with local._flock(lock, timeout=1, what="x"):
        pass


def test_cli_status_exits_1_when_not_running(tmp_path: Path) -> None:
    env = {"KAIROS_STATE_DIR": str(tmp_path / "s"), "KAIROS_LOCAL_KAFKA_PORT": "41992"}
    result = CliRunner().invoke(kafka, ["status"], env=env)
    assert result.exit_code == 1
    assert "not running" in result.output


def test_cli_prints_reason_and_fix_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    env = {"KAIROS_CACHE_DIR": str(tmp_path / "c")}
    result = CliRunner().invoke(kafka, ["jars"], env=env)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: no `mvn` on PATH")
    assert lines[1].startswith("  fix: install Maven")
    assert "Traceback" not in result.output


def test_cli_stop_when_nothing_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(kafka, ["stop"], env={"KAIROS_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 0
    assert "not running" in result.output


def test_which_is_used_for_maven_only_when_jars_are_missing(
    broker: LocalKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.lib_dir.mkdir(parents=True)
    (broker.jar_root / ".complete").write_text(local._pom_digest())
    calls: list[str] = []
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: calls.append(name))
    broker.ensure_jars()
    assert calls == []
