"""Typed settings, parsed once at start-up from the environment (prefix ``KAIROS_``).

Nothing here connects to anything; entry points build a :class:`KairosSettings` and hand it on.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.registry import TopicSpec


class KairosSettings(BaseSettings):
    """Every setting of every service. Each field reads ``KAIROS_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="KAIROS_", frozen=True, extra="ignore")

    # -- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Bootstrap servers of an existing cluster. Unset: the local broker, "
        "started on demand.",
    )
    topic_prefix: str = Field(default="kairos.", description="Prefix of every topic name.")
    topic_partitions: int | None = Field(
        default=None, ge=1, description="Override the registry's partition count for every topic."
    )
    replication_factor: int = Field(default=1, ge=1, description="Replication factor of topics.")
    group_prefix: str = Field(default="kairos", description="Prefix of consumer group ids.")
    session_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds before a silent consumer (a killed worker) loses its partitions.",
    )

    timer_instance_id: str | None = Field(
        default=None,
        description="A stable name for this timer worker (the StatefulSet's pod name): Kafka's "
        "static group membership, so a worker restarted under the same name takes its "
        "partitions back at once instead of after session_timeout; a worker that stops for good "
        "hands them on only after session_timeout.",
    )

    # -- local embedded broker ---------------------------------------------------------------
    state_dir: Path = Field(default=Path(".kairos"), description="Where local state lives.")
    local_kafka_port: int = Field(default=19092, description="Port of the local broker.")
    local_kafka_controller_port: int = Field(
        default=19093, description="KRaft controller port of the local broker."
    )
    local_kafka_heap: str = Field(default="512m", description="JVM heap of the local broker.")
    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "kairos",
        description="Per-user cache (Kafka jars).",
    )

    # -- HTTP / SMTP -------------------------------------------------------------------------
    http_host: str = Field(default="127.0.0.1", description="Ingest HTTP bind address.")
    http_port: int = Field(default=8080, description="Ingest HTTP port.")
    ingest_instance_id: str | None = Field(
        default=None,
        description="A stable, unique name for this ingest replica: its Kafka transactional "
        "id (a restarted replica under the same name aborts what its predecessor left open at "
        "once; otherwise after 15 s). Unset: the host name and HTTP port.",
    )
    smtp_host: str = Field(default="127.0.0.1", description="SMTP submission bind address.")
    smtp_port: int = Field(default=2525, description="SMTP submission port (0: no SMTP server).")
    smtp_allow_plaintext_auth: bool | None = Field(
        default=None,
        description="Allow AUTH without TLS. Unset: allowed only when bound to loopback.",
    )
    smtp_tls_cert: Path | None = Field(default=None, description="Certificate for STARTTLS.")
    smtp_tls_key: Path | None = Field(default=None, description="Private key for STARTTLS.")
    scan_clamd: str | None = Field(
        default=None,
        description="clamd to scan submissions with (tcp://host:3310 or unix:///path); "
        "unset: no virus scanning.",
    )
    scan_spamd: str | None = Field(
        default=None, description="spamd to scan submissions with (host:783); unset: none."
    )
    scan_spam_threshold: float | None = Field(
        default=None, description="Spam score refused at or above. Unset: spamd's own verdict."
    )
    scan_timeout: float = Field(default=30.0, gt=0, description="Seconds for each scan.")
    scan_fail_open: bool = Field(
        default=False,
        description="Accept a message unscanned when a scanner is unavailable (default: "
        "refuse it as transient, 503 / 451 4.7.0).",
    )
    idempotency_in_flight_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds an idempotency key stays claimed by a request that has not "
        "completed (a replica killed mid-request): then a retry may proceed. Written into each "
        "claim, so every replica decides alike. Keep it above the longest request (scan_timeout "
        "plus 10 s to publish); a completed key answers with its first response for 24 h.",
    )
    open_batch_limit: int = Field(
        default=1000,
        ge=1,
        description="Batch ids (POST /v3/mail/batch) an account may hold open at once (a batch "
        "id is open for 10 days after it was created); past it 429 BATCH_LIMIT.",
    )
    lifecycle_retention: float = Field(
        default=30 * 86400,
        gt=0,
        description="Seconds a settled message (delivered, failed, cancelled) stays in the "
        "lifecycle projection after its last event; then it and its timeline are pruned, as "
        "the outcomes topic forgets it (30 days), so a rebuilt replica agrees with an old one.",
    )
    lifecycle_db: Path | None = Field(
        default=None,
        description="SQLite file of the ingest's lifecycle projection (message status and "
        "timeline), rebuilt from the log when missing. Unset: "
        "<state_dir>/lifecycle-<http_port>.sqlite3.",
    )
    health_port: int | None = Field(
        default=None,
        description="Health/metrics port of a non-HTTP service (timer 8081, validator 8082, "
        "sender 8083 when unset).",
    )

    # -- admin -------------------------------------------------------------------------------
    admin_token: SecretStr | None = Field(
        default=None,
        description="Token of the admin API. Unset: one is generated into "
        "<state_dir>/admin-token on first start (the embedded default).",
    )
    admin_url: str = Field(
        default="http://127.0.0.1:8080", description="Where `kairos admin` finds the admin API."
    )

    # -- delivery ----------------------------------------------------------------------------
    relay_host: str = Field(default="127.0.0.1", description="SMTP relay the sender delivers to.")
    relay_port: int = Field(default=1025, description="SMTP relay port.")
    relay_username: str | None = Field(default=None, description="SMTP relay AUTH user.")
    relay_password: SecretStr | None = Field(default=None, description="SMTP relay AUTH password.")
    relay_starttls: bool = Field(default=False, description="Use STARTTLS with the relay.")
    relay_tls: bool = Field(default=False, description="Use implicit TLS with the relay.")
    relay_timeout: float = Field(default=30.0, gt=0, description="Seconds for each SMTP step.")
    relay_verify_tls: bool = Field(default=True, description="Verify the relay's certificate.")
    relay_pool_size: int = Field(
        default=32,
        ge=1,
        description="Connections (and concurrent deliveries) per sender; lower it for a relay "
        "that limits concurrent connections per client.",
    )
    retry_base: float = Field(
        default=60.0, gt=0, description="Seconds before the first retry; doubles each attempt."
    )
    retry_cap: float = Field(default=3600.0, gt=0, description="Longest wait between attempts.")
    retry_max_attempts: int = Field(default=8, ge=1, description="Attempts before giving up.")
    retry_max_age: float = Field(
        default=72 * 3600.0, gt=0, description="Seconds after the due second to stop retrying."
    )
    dedupe_lookback: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds of outcomes a sender re-reads on start-up to skip messages it "
        "already handled (a redelivered dispatch is not sent twice).",
    )
    dkim_key_dir: Path | None = Field(
        default=None, description="Folder of DKIM private keys, one <domain>.pem per domain."
    )
    dkim_selector: str = Field(default="kairos", description="DKIM selector.")
    unsubscribe_key: SecretStr | None = Field(
        default=None,
        description="Key that signs one-click unsubscribe links (HMAC); the sender and ingest "
        "need the same. Unset: generated into <state_dir>/unsubscribe-key (the embedded "
        "default); set it when the services do not share a state directory.",
    )
    unsubscribe_url: str | None = Field(
        default=None,
        description="Public base URL of the ingest HTTP API that unsubscribe links point to "
        "(https://mail.example.com: links are <url>/u/<token>). Unset: "
        "http://<http_host>:<http_port>.",
    )
    unsubscribe_mailto: str | None = Field(
        default=None,
        description="An address to add to List-Unsubscribe as a mailto: link (subject "
        "'unsubscribe <token>'); unset: the one-click link only.",
    )

    # -- dev sink ----------------------------------------------------------------------------
    sink_host: str = Field(default="127.0.0.1", description="Dev SMTP sink bind address.")
    sink_port: int = Field(default=1025, description="Dev SMTP sink port.")
    outbox_dir: Path = Field(
        default=Path(".kairos/outbox"), description="Where the dev sink writes .eml files."
    )

    # -- timer -------------------------------------------------------------------------------
    tick_interval: float = Field(
        default=0.1, ge=0, description="Seconds between timer ticks; 0 disables the ticker."
    )
    timer_standby_replicas: int = Field(
        default=1, ge=0, description="Standby copies of each timer table partition (faust)."
    )
    timer_store: str = Field(
        default="rocksdb://",
        description="faust table store of the timer (rocksdb:// or memory://).",
    )
    timer_rocksdb_write_buffer_mb: int = Field(
        default=8,
        ge=1,
        description="RocksDB memtable size per timer database (one per table and partition; "
        "faust's default is 64). Memtables are most of the timer's RSS per pending message.",
    )
    timer_rocksdb_block_cache_mb: int = Field(
        default=16,
        ge=1,
        description="RocksDB block cache per timer database (faust's default is 2048).",
    )

    log_level: str = Field(default="INFO", description="Log level.")
    log_format: str = Field(default="console", description="console or json.")

    def topic(self, topic: TopicSpec | str) -> str:
        """The full name of a registry topic: its handle (``schemas.registry.SCHEDULE``) or
        its logical name (KeyError for a name the registry does not declare)."""
        from schemas.registry import topic_spec

        spec = topic if isinstance(topic, TopicSpec) else topic_spec(topic)
        return f"{self.topic_prefix}{spec.name}"

    def group(self, service: str) -> str:
        """The consumer group id of a service."""
        return f"{self.group_prefix}-{service}"
