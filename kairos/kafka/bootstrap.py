"""Where the Kafka cluster is: the configured one, or the local broker started on demand."""

from __future__ import annotations

from kairos.settings import KairosSettings


def resolve_bootstrap(settings: KairosSettings) -> str:
    """The bootstrap servers every entry point connects to.

    ``settings.kafka_bootstrap`` when set (an existing cluster; nothing is started). Otherwise the
    local single-node broker of ``settings.state_dir``, started if it is not running (blocking,
    up to about 90 s plus a one-time jar download). Raises
    :class:`kairos.kafka.local.LocalKafkaError` when the local broker cannot be started.
    """
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    from kairos.kafka.local import LocalKafka

    return LocalKafka.from_settings(settings).ensure_running()
