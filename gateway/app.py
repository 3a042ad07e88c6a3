"""The gateway put together: the app, its routes, and serving it with uvicorn."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import errors
from gateway.auth import TokenStore
from gateway.metrics import GatewayMetrics
from gateway.models import EVENT_RESPONSES, REQUEST_BODY
from gateway.producer import AckProducer
from gateway.routes import Ingest
from hallstats.errors import OperationalError
from hallstats.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Front-desk intake for window terminals. `POST /v1/events` with
`Authorization: Bearer <terminal token>` and one event, a JSON array of events, or
JSON Lines (`application/x-ndjson`). Each event follows the event contract v1 and is
validated by the same code as the worker. The answer comes after Kafka acknowledged
the accepted events; re-sending the same event_id after any error or timeout is
always safe (it is counted once)."""


MAX_HEADER_BYTES = 16 * 1024


class HeaderLimit:
    """Refuse requests whose headers together exceed ``MAX_HEADER_BYTES`` (431) before
    any route sees them (uvicorn bounds only headers that arrive in pieces)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > MAX_HEADER_BYTES:
                problem = errors.GatewayProblem(
                    431,
                    "headers_too_large",
                    f"request headers: expected at most {MAX_HEADER_BYTES} bytes, got {size}",
                    headers={"Connection": "close"},  # its body, if any, is not read
                )
                await problem.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    metrics = GatewayMetrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tokens = TokenStore(settings)
        producer = AckProducer(settings)
        state["ingest"] = Ingest(settings, tokens, producer, metrics)
        try:
            yield
        finally:
            await run_in_threadpool(producer.close)
            tokens.close()

    app = FastAPI(
        title="hallstats front-desk gateway",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(HeaderLimit)

    @app.post(
        "/v1/events",
        status_code=202,
        responses=EVENT_RESPONSES,
        openapi_extra=REQUEST_BODY,
        summary="Report events of this terminal",
    )
    async def post_events(request: Request) -> JSONResponse:
        ingest: Ingest = state["ingest"]
        return await ingest.handle(request)

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Kafka and ClickHouse answer (else 503)",
        responses={503: {"description": "Kafka or ClickHouse does not answer"}},
    )
    async def readyz() -> JSONResponse:
        ingest: Ingest = state["ingest"]
        kafka = await run_in_threadpool(ingest.producer.ready)
        clickhouse = None
        try:
            await run_in_threadpool(ingest.tokens.lookup, "readiness-probe")
        except OperationalError as exc:
            clickhouse = str(exc)
        body = {
            "kafka": kafka or "ok",
            "clickhouse": clickhouse or "ok",
        }
        ready = kafka is None and clickhouse is None
        body["status"] = "ready" if ready else "unavailable"
        headers = None if ready else {"Retry-After": errors.RETRY_AFTER_UNAVAILABLE}
        return JSONResponse(body, status_code=200 if ready else 503, headers=headers)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def prepare(settings: Settings) -> None:
    """Create the topics and the tokens table when missing; a service that is down
    now is logged, not fatal (``/readyz`` says so until it answers)."""
    from hallstats.kafka import ensure_topics
    from schemas.ddl import ensure_schema

    try:
        ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    except OperationalError as exc:
        log.warning("gateway: %s", exc)
    try:
        ensure_schema(settings)
    except OperationalError as exc:
        log.warning("gateway: %s", exc)


def serve(settings: Settings, *, port: int | None = None) -> None:
    """Run the gateway with uvicorn on ``settings.gateway_host`` (loopback by default),
    over TLS when a certificate and key are configured."""
    import uvicorn

    tls = settings.gateway_tls_cert, settings.gateway_tls_key
    if (tls[0] is None) != (tls[1] is None):
        from hallstats.errors import DataError

        raise DataError(
            "gateway TLS: expected both HALLSTATS_GATEWAY_TLS_CERT and "
            "HALLSTATS_GATEWAY_TLS_KEY, got only one"
        )
    # In the background: a broker or ClickHouse that is down must not keep the gateway
    # from starting (it answers 503 meanwhile, and /readyz says why).
    threading.Thread(target=prepare, args=(settings,), name="gateway-prepare", daemon=True).start()
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=port or settings.gateway_port,
        log_level="info",
        access_log=False,  # a log line per request costs CPU and says nothing /metrics does not
        ssl_certfile=str(tls[0]) if tls[0] else None,
        ssl_keyfile=str(tls[1]) if tls[1] else None,
        h11_max_incomplete_event_size=16 * 1024,
        timeout_keep_alive=30,
    )
