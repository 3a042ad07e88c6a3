"""One typed settings object, read from ``HALLSTATS_*`` environment variables."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable, with defaults that match ``hallstats stack up``.

    Frozen so one object can be shared by agents, sinks and the CLI without
    anyone changing it underneath the others.
    """

    model_config = SettingsConfigDict(env_prefix="HALLSTATS_", frozen=True, extra="ignore")

    # Kafka
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers (host:port, comma-separated)"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="how every Kafka client connects (production: SASL_SSL)"
    )
    kafka_ssl_ca_file: Path | None = Field(
        default=None, description="PEM file of the CA that signed the brokers' certificates"
    )
    kafka_ssl_cert_file: Path | None = Field(
        default=None, description="PEM client certificate, when brokers require one (mutual TLS)"
    )
    kafka_ssl_key_file: Path | None = Field(
        default=None, description="PEM private key of that client certificate"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols)"
    )
    kafka_sasl_username: str = Field(default="", description="SASL user (SASL_* protocols)")
    kafka_sasl_password: SecretStr = Field(
        default=SecretStr(""), description="SASL password (never logged)"
    )
    topic: str = Field(default="service-events", description="input topic the terminals write to")
    dlq_topic: str = Field(
        default="service-events-dlq", description="dead-letter topic: rejected messages, kept"
    )
    app_id: str = Field(
        default="hallstats",
        description="Faust app id = the counting stage's group; `<app_id>-intake` is the intake "
        "group; prefixes internal topics",
    )
    partitions: int = Field(
        default=4, ge=1, description="partitions of the topics hallstats creates"
    )
    max_message_bytes: int = Field(
        default=64 * 1024, ge=256, description="larger messages are rejected (`oversize_message`)"
    )

    # ClickHouse: native protocol for queries, HTTP for the worker's bulk inserts
    clickhouse_host: str = Field(default="127.0.0.1", description="ClickHouse server host")
    clickhouse_port: int = Field(default=9000, description="ClickHouse native-protocol port")
    clickhouse_http_port: int = Field(
        default=8123, description="ClickHouse HTTP port (the worker's bulk inserts)"
    )
    clickhouse_user: str = Field(
        default="default",
        description="ClickHouse user of the worker, finalize, backup and restore (writes)",
    )
    clickhouse_password: SecretStr = Field(
        default=SecretStr(""), description="ClickHouse password (never logged)"
    )
    clickhouse_reader_user: str = Field(
        default="",
        description="read-only ClickHouse user of the API, bulletin, revisions, reconcile and "
        "status (empty: the writer's user, in read-only sessions)",
    )
    clickhouse_reader_password: SecretStr = Field(
        default=SecretStr(""), description="that user's password (never logged)"
    )
    clickhouse_database: str = Field(
        default="hallstats", description="database hallstats creates and uses"
    )
    clickhouse_cluster: str = Field(
        default="",
        description="the servers' cluster name (`remote_servers`): tables are then "
        "Replicated*MergeTree, created ON CLUSTER (see From one box to a cluster)",
    )
    clickhouse_replicas: str = Field(
        default="",
        description="more replicas as host:native_port:http_port, comma-separated: the "
        "worker and the readers fail over to them when the first server is down (backup "
        "and restore use the first)",
    )
    clickhouse_statement_log: Path | None = Field(
        default=None,
        description="append the text of every statement sent to ClickHouse to "
        "`<folder>/<pid>.jsonl` (TabSeparated bulk inserts without their rows; it holds "
        "data, keep it private); the ClickHouse 26 check replays them",
    )

    # Calendar
    timezone: str = Field(
        default="Asia/Shanghai", description="local time zone of days, weeks and years"
    )

    # Worker
    worker_batch_size: int = Field(
        default=10_000, ge=1, description="intake batch: at most this many raw messages"
    )
    worker_batch_seconds: float = Field(
        default=0.5, gt=0, description="intake batch: waiting at most this long (seconds)"
    )
    worker_web_port: int = Field(default=6066, description="Faust's web port (127.0.0.1)")
    worker_data_dir: Path = Field(
        default=Path(".stack/worker"),
        description="counting state (RocksDB, a `count-state/slot-N` folder per process)",
    )
    worker_ack_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="how long a stage waits for Kafka to acknowledge its outputs before the "
        "batch fails (it is then replayed)",
    )
    worker_intake_processes: int = Field(
        default=2,
        ge=0,
        description="intake processes `hallstats worker` starts beside counting (`0`: none)",
    )
    worker_count_processes: int = Field(
        default=2,
        ge=1,
        le=64,
        description="processes counting this worker's partitions (partition p -> process "
        "p % n); `1`: counting in the worker process itself",
    )

    # Metrics (Prometheus). metrics_port 0 disables them.
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="worker `/metrics` on 127.0.0.1 (`0`: off)"
    )
    metrics_refresh_seconds: float = Field(
        default=10.0, gt=0, description="how often ClickHouse/Kafka-derived gauges are recomputed"
    )
    terminal_silence_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="a window seen in the last 4 weeks but silent longer than this is silent",
    )
    metrics_faust_sensors: bool = Field(
        default=True, description="also export Faust's own `faust_*` sensors (they cost the most)"
    )

    # Finalization
    finalize_timeout_seconds: float = Field(
        default=600.0, gt=0, description="how long finalize waits for the worker to catch up"
    )
    finalize_grace_seconds: float = Field(
        default=2 * 86400.0,
        ge=0,
        description="automatic finalization: grace after Sunday 24:00 local, on clock and stream",
    )
    finalize_check_seconds: float = Field(
        default=60.0, gt=0, description="how often the leader checks for weeks due"
    )
    auto_finalize: bool = Field(default=True, description="finalize due weeks automatically")

    # Read API (hallstats api), bound to 127.0.0.1 only.
    api_port: int = Field(default=8080, ge=1, le=65535, description="read API port")
    api_token: SecretStr | None = Field(
        default=None, description="bearer token the API requires when set (never logged)"
    )

    # Front-desk HTTP gateway (hallstats gateway)
    gateway_host: str = Field(
        default="127.0.0.1",
        description="address the gateway binds (loopback by default; put TLS on before widening)",
    )
    gateway_port: int = Field(default=8090, ge=1, le=65535, description="gateway HTTP(S) port")
    gateway_max_events: int = Field(
        default=1000, ge=1, description="gateway: most events in one request (more: 413)"
    )
    gateway_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="gateway: largest request body in bytes (413)"
    )
    gateway_rate_per_second: float = Field(
        default=50.0, gt=0, description="gateway: events per second each terminal may send (429)"
    )
    gateway_burst: int = Field(
        default=500, ge=1, description="gateway: events a terminal may send at once above its rate"
    )
    gateway_ack_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="gateway: how long a request waits for Kafka's acknowledgement before 503",
    )
    gateway_tls_cert: Path | None = Field(
        default=None,
        description="gateway TLS certificate (PEM); TLS is on when cert and key are set",
    )
    gateway_tls_key: Path | None = Field(default=None, description="gateway TLS private key (PEM)")

    # Local stack (hallstats stack up|down|status)
    stack_dir: Path = Field(default=Path(".stack"), description="local stack data folder")
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "hallstats", description="where Kafka's jars are kept"
    )
    kafka_version: str = Field(default="4.1.1", description="the pinned Kafka version")
    stack_zookeeper_port: int = Field(
        default=2181,
        description="the stack's ZooKeeper (127.0.0.1), started with replicated ClickHouse",
    )
    stack_kafka_brokers: int = Field(
        default=1,
        ge=1,
        le=9,
        description="Kafka nodes the stack runs (3: a KRaft cluster, node i on the i-th "
        "bootstrap port or the first + 2(i-1))",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except Exception as exc:
            raise ValueError(
                f"HALLSTATS_TIMEZONE: expected an IANA zone like 'Asia/Shanghai', got {value!r}"
            ) from exc
        return value

    @field_validator("clickhouse_replicas")
    @classmethod
    def _replica_list(cls, value: str) -> str:
        for entry in filter(None, (e.strip() for e in value.split(","))):
            host, _, ports = entry.partition(":")
            native, _, http = ports.partition(":")
            if not (host and native.isdigit() and http.isdigit()):
                raise ValueError(
                    f"expected host:native_port:http_port entries, got {entry!r} "
                    "(e.g. 127.0.0.1:9100:8223)"
                )
        return value

    @property
    def clickhouse_servers(self) -> list[tuple[str, int, int]]:
        """(host, native port, http port) of every replica, the configured server first."""
        servers = [(self.clickhouse_host, self.clickhouse_port, self.clickhouse_http_port)]
        for entry in filter(None, (e.strip() for e in self.clickhouse_replicas.split(","))):
            host, native, http = entry.split(":")
            servers.append((host, int(native), int(http)))
        return servers

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def by_id_topic(self) -> str:
        """Internal topic that re-keys valid events by event_id (dedup needs co-location)."""
        return f"{self.app_id}-{self.topic}-by-event-id"

    @property
    def intake_group(self) -> str:
        """Consumer group of the intake stage (its own: Faust's group speaks Faust's
        assignor protocol); its committed offsets are intake's progress on the raw topic."""
        return f"{self.app_id}-intake"

    def isolated(self, prefix: str, workdir: Path, **changes: Any) -> Settings:
        """A copy with its own topics, consumer group, database and data folder, so a
        test or benchmark run never sees another run's data."""
        uid = f"{prefix}{uuid.uuid4().hex[:10]}"
        update: dict[str, Any] = {
            "topic": f"{uid}-events",
            "dlq_topic": f"{uid}-events-dlq",
            "app_id": uid,
            "clickhouse_database": uid,
            "worker_data_dir": workdir / uid,
        }
        return self.model_copy(update={**update, **changes})

    def as_env(self) -> dict[str, str]:
        """``HALLSTATS_*`` variables reproducing these settings in a child process.

        Secrets are included in clear: pass the result to a process, never log it.
        """
        env = {}
        for name, value in self.model_dump().items():
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            if plain is not None:
                env[f"HALLSTATS_{name.upper()}"] = str(plain)
        return env


def settings_table() -> str:
    """The README's settings table, made from the model so the two cannot disagree."""
    home = str(Path.home())
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):
            shown = default.get_secret_value() or "empty"
        elif default is None:
            shown = "none"
        else:
            shown = str(default).replace(home, "~")
            shown = shown.lower() if isinstance(default, bool) else shown
        rows.append(f"| `HALLSTATS_{name.upper()}` | `{shown}` | {field.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # `python -m hallstats.settings` prints the README's table
    print(settings_table(), end="")
