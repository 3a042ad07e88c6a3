"""``hallstats emit``: publish a JSON Lines file of events as a front-desk system would.

Uses confluent-kafka with the idempotent producer (acks=all), so a broker
hiccup never duplicates or reorders within a partition. Lines that fail
client-side validation are not sent but written, with their reason, to a
``.rejected.jsonl`` file next to the input: nothing silently disappears.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import KafkaError, Producer

from hallstats.errors import OperationalError
from hallstats.kafka import ensure_topics, producer_config
from hallstats.settings import Settings
from schemas.events import parse_event
from schemas.keys import terminal_key
from schemas.rejections import EventRejected


@dataclass(frozen=True)
class EmitReport:
    sent: int
    rejected: int
    reasons: dict[str, int] = field(default_factory=dict)
    rejects_file: Path | None = None


def emit_lines(
    lines: Iterable[bytes],
    settings: Settings,
    *,
    validate: bool = True,
    rejects: Path | None = None,
    on_line: Callable[[int], None] | None = None,
) -> EmitReport:
    """Send each line as one message; keyed by terminal (hall/window) when it parses."""
    ensure_topics(settings, [(settings.topic, settings.partitions)])
    prod = Producer(producer_config(settings, batch_size=1_000_000))
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    sent = rejected = 0
    reasons: Counter[str] = Counter()
    rejects_out = None
    now = datetime.now(UTC)
    try:
        for number, raw in enumerate(lines, 1):
            line = raw.rstrip(b"\r\n")
            if on_line is not None:
                on_line(len(raw))
            if not line.strip():
                continue
            key: bytes | None = None
            if validate:
                try:
                    event = parse_event(line, max_bytes=settings.max_message_bytes, now=now)
                except EventRejected as rejection:
                    rejected += 1
                    reasons[rejection.reason.value] += 1
                    if rejects is not None:
                        if rejects_out is None:
                            rejects_out = rejects.open("w", encoding="utf-8")
                        record = {"line": number, **rejection.as_dict()}
                        record["original"] = line.decode("utf-8", errors="replace")
                        rejects_out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    continue
                key = terminal_key(event.hall_id, event.window_id)
            while True:
                try:
                    prod.produce(settings.topic, value=line, key=key, on_delivery=delivered)
                    break
                except BufferError:
                    prod.poll(0.1)
            sent += 1
            prod.poll(0)
        remaining = prod.flush(120)
    finally:
        if rejects_out is not None:
            rejects_out.close()
    if remaining:
        raise OperationalError(
            f"emit: {remaining} messages still undelivered to {settings.kafka_bootstrap} "
            "after 120 s; is Kafka running?"
        )
    if failures:
        raise OperationalError(
            f"emit: {len(failures)} of {sent} messages failed delivery; first: {failures[0]}"
        )
    return EmitReport(
        sent=sent,
        rejected=rejected,
        reasons=dict(reasons),
        rejects_file=rejects if rejects_out is not None else None,
    )


def emit_file(
    path: Path,
    settings: Settings,
    *,
    validate: bool = True,
    on_bytes: Callable[[int], None] | None = None,
) -> EmitReport:
    rejects = path.with_name(path.name + ".rejected.jsonl")
    with path.open("rb") as handle:
        return emit_lines(handle, settings, validate=validate, rejects=rejects, on_line=on_bytes)
