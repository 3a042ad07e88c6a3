"""One typed settings object, read from ``HALLSTATS_*`` environment variables."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
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
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = "service-events"
    dlq_topic: str = "service-events-dlq"
    app_id: str = Field(default="hallstats", description="Faust app id and consumer group")
    partitions: int = Field(default=4, ge=1, description="partitions of topics hallstats creates")
    max_message_bytes: int = Field(default=64 * 1024, ge=256)

    # ClickHouse (native protocol)
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 9000
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_database: str = "hallstats"

    # Calendar
    timezone: str = "Asia/Shanghai"

    # Worker
    worker_batch_size: int = Field(default=10_000, ge=1)
    worker_batch_seconds: float = Field(default=0.5, gt=0)
    worker_web_port: int = 6066
    worker_data_dir: Path = Path(".stack/worker")
    worker_ack_timeout_seconds: float = Field(
        default=120.0, gt=0, description="how long a stage waits for Kafka to acknowledge"
    )
    worker_intake_processes: int = Field(
        default=1, ge=0, description="intake processes `hallstats worker` starts beside counting"
    )

    # Metrics (Prometheus; streams/metrics.py). metrics_port 0 disables them.
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_refresh_seconds: float = Field(default=10.0, gt=0)
    terminal_silence_seconds: float = Field(default=3600.0, gt=0)
    metrics_faust_sensors: bool = Field(default=True, description="Faust's own faust_* sensors")

    # Finalization
    finalize_timeout_seconds: float = Field(default=600.0, gt=0)
    finalize_grace_seconds: float = Field(
        default=2 * 86400.0, ge=0, description="after Sunday 24:00 local, on clock and stream"
    )
    finalize_check_seconds: float = Field(default=60.0, gt=0, description="0 < auto check period")
    auto_finalize: bool = True

    # Read API (hallstats api; consumers/api.py), bound to 127.0.0.1 only.
    api_port: int = Field(default=8080, ge=1, le=65535)
    api_token: SecretStr | None = Field(
        default=None, description="bearer token the API requires when set"
    )

    # Local stack (hallstats stack up|down|status)
    stack_dir: Path = Path(".stack")
    cache_dir: Path = Path.home() / ".cache" / "hallstats"
    kafka_version: str = "4.1.1"
    clickhouse_http_port: int = 8123

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
