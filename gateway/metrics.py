"""Prometheus metrics of the gateway, served on its own ``/metrics``.

One registry per app (tests run several). Labels are bounded: HTTP status, event
result, rejection reason; never a token, terminal, hall or event_id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from schemas.rejections import RejectReason

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RESULTS = ("accepted", "rejected")


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "hallstats_gateway_requests",
            "POST /v1/events requests answered, by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.events = Counter(
            "hallstats_gateway_events",
            "events in answered requests: accepted (acknowledged by Kafka) or rejected "
            "(dead-lettered)",
            ["result"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "hallstats_gateway_rejected",
            "events rejected by the contract, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "hallstats_gateway_request_seconds",
            "POST /v1/events from the request's arrival to its answer",
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "hallstats_gateway_kafka_ack_seconds",
            "from producing a request's messages to Kafka acknowledging all of them",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        for result in RESULTS:
            self.events.labels(result)
        for reason in RejectReason:
            self.rejected.labels(reason.value)

    def answered(self, status: int, seconds: float) -> None:
        self.requests.labels(str(status)).inc()
        self.request_seconds.observe(seconds)
