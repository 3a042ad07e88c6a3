"""Every refusal of the gateway in one JSON shape (:class:`~gateway.models.GatewayError`),
and the handlers that make framework errors (404, 405, a broken request) answer in it
too: a malformed request gets a clear 4xx, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.body import BodyProblem
from gateway.models import GatewayError
from hallstats.errors import OperationalError

log = logging.getLogger(__name__)

RETRY_AFTER_UNAVAILABLE = "5"


class GatewayProblem(Exception):
    """A refusal of the whole request: HTTP ``status`` and a :class:`GatewayError` body."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = GatewayError(error=error, message=message, field=field)
        self.headers = dict(headers or {})

    @classmethod
    def from_body(cls, problem: BodyProblem) -> GatewayProblem:
        return cls(problem.status, problem.error, str(problem))

    @classmethod
    def unavailable(cls, exc: OperationalError) -> GatewayProblem:
        return cls(
            503,
            "unavailable",
            f"{exc}; nothing of this request was accepted: re-send it (same event_ids)",
            headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
        )

    @classmethod
    def refused(cls, exc: OperationalError) -> GatewayProblem:
        """Kafka refused for good (e.g. MSG_SIZE_TOO_LARGE): re-sending the same request
        fails the same way, so no Retry-After; the operator must look."""
        return cls(
            500,
            "kafka_refused",
            f"{exc}; nothing of this request was accepted, and re-sending it as it is "
            "will fail the same way: tell the operator",
        )

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body.model_dump(), status_code=self.status, headers=self.headers or None
        )


def unauthorized(message: str) -> GatewayProblem:
    return GatewayProblem(
        401,
        "unauthorized",
        message,
        field="Authorization",
        headers={"WWW-Authenticate": 'Bearer realm="hallstats-gateway"'},
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(GatewayProblem)
    async def on_problem(_: Request, exc: GatewayProblem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return GatewayProblem(
            400, "invalid_request", f"{where}: {first.get('msg', 'invalid')}"
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return GatewayProblem(
            exc.status_code, error, str(exc.detail), headers=exc.headers
        ).response()

    @app.exception_handler(OperationalError)
    async def on_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("gateway: %s", exc)
        return GatewayProblem.unavailable(exc).response()
