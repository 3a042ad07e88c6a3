"""Every error answer of the read API, and which exception maps to which one.

One JSON shape for all of them (:class:`~consumers.api.models.ApiError`): what went
wrong, the input to blame and what was received for it. Bad inputs are 422, weeks
or versions not finalized 404, a missing or wrong token 401, ClickHouse down 503.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from consumers.api.inputs import EXPECTED, is_name
from consumers.api.models import ApiError
from consumers.finalized import UnknownVersionError
from hallstats.errors import DataError, NotFinalizedError, OperationalError
from schemas.calendar import IsoWeek

log = logging.getLogger(__name__)


class ApiProblem(Exception):
    """An error answer with the shape of :class:`ApiError`."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        field: str | None = None,
        value: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ApiError(error=error, field=field, value=value, message=message)
        self.headers = headers


def answer(problem: ApiProblem) -> JSONResponse:
    return JSONResponse(
        problem.body.model_dump(), status_code=problem.status, headers=problem.headers
    )


# What the OpenAPI spec documents (every data route has ERRORS).
ERRORS: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ApiError,
        "description": "An input failed validation; `field` and `value` name it",
    },
    503: {"model": ApiError, "description": "ClickHouse is unreachable or failed"},
}
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ApiError, "description": "Missing or wrong bearer token"}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ApiError, "description": "Week (or version, or name) not finalized"}
}


# ---------------------------------------------------------------- inputs (422)


def validation_problem(exc: RequestValidationError) -> ApiProblem:
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ())]
    field = loc[-1] if loc else None
    raw = first.get("input")
    value = None if raw is None or isinstance(raw, dict) else str(raw)
    where = f"{loc[0]} parameter {field!r}" if len(loc) > 1 else "request"
    message = f"{where}: {first.get('msg', 'invalid')}"
    if first.get("type") == "string_pattern_mismatch":  # say why, not the (long) pattern
        message = f"{where}: expected {EXPECTED.get(field or '', 'the documented form')}"
        if field == "week" and value is not None:
            try:
                IsoWeek.parse(value)
            except DataError as reason:
                message = str(reason)
    return ApiProblem(422, "invalid_input", message, field=field, value=value)


def parse_week(text: str) -> IsoWeek:
    try:
        return IsoWeek.parse(text)
    except DataError as exc:
        raise ApiProblem(422, "invalid_input", str(exc), field="week", value=text) from exc


def check_name(field: str, value: str | None) -> str | None:
    if value is None or is_name(value):
        return value
    raise ApiProblem(
        422,
        "invalid_input",
        f"{field}: expected a name without control characters, not blank",
        field=field,
        value=value,
    )


def known_query_only(request: Request) -> None:
    """Reject query parameters a route does not take: a typo like ``?verison=2``
    would otherwise silently answer with the latest version."""
    route = request.scope.get("route")
    known = (
        {p.alias for p in route.dependant.query_params} if isinstance(route, APIRoute) else set()
    )
    for key, value in request.query_params.multi_items():
        if key not in known:
            accepted = ", ".join(sorted(known)) or "none"
            raise ApiProblem(
                422,
                "invalid_input",
                f"query parameter {key!r}: not accepted here (accepted: {accepted})",
                field=key,
                value=value,
            )


# ---------------------------------------------------------------- not finalized (404)


@contextmanager
def finalized_or_404(week: IsoWeek) -> Iterator[None]:
    """Answer 404 when :mod:`consumers.finalized` finds no version of ``week``
    (``not_finalized``) or not the one asked for (``not_found``)."""
    try:
        yield
    except UnknownVersionError as exc:
        raise ApiProblem(
            404,
            "not_found",
            f"week {week}: expected a version among {list(exc.available)}, got {exc.version}",
            field="version",
            value=str(exc.version),
        ) from exc
    except NotFinalizedError as exc:
        raise ApiProblem(
            404,
            "not_finalized",
            f"week {week}: expected a finalized version, found none (the current "
            "week's provisional figures are at /live/current)",
            field="week",
            value=str(week),
        ) from exc


# ---------------------------------------------------------------- the handlers


def install(app: FastAPI) -> None:
    """Make ``app`` answer every error, its own and the framework's, as an ApiError."""

    @app.exception_handler(ApiProblem)
    async def on_problem(_: Request, exc: ApiProblem) -> JSONResponse:
        return answer(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(validation_problem(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # Keep Starlette's headers (e.g. `Allow` on a 405, which RFC 9110 requires).
        return answer(ApiProblem(exc.status_code, error, str(exc.detail), headers=exc.headers))

    @app.exception_handler(NotFinalizedError)
    async def on_not_finalized(_: Request, exc: NotFinalizedError) -> JSONResponse:
        return answer(ApiProblem(404, "not_finalized", str(exc), field="week"))

    @app.exception_handler(OperationalError)
    async def on_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("api: %s", exc)
        return answer(ApiProblem(503, "unavailable", str(exc)))
