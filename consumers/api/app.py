"""The read API put together: the app, its token check, its connections, and serving it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from consumers.api import errors, routes
from consumers.api.errors import ERRORS, UNAUTHORIZED, ApiProblem, known_query_only
from consumers.api.pool import Clients
from hallstats.settings import Settings

_BEARER = HTTPBearer(auto_error=False, description="The value of HALLSTATS_API_TOKEN")
# Module level: FastAPI resolves these (string) annotations in the module's globals.
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]


def _auth(token: SecretStr) -> Callable[..., None]:
    expected = token.get_secret_value().encode()

    def check(credentials: _Credentials) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not (credentials and secrets.compare_digest(given, expected)):
            raise ApiProblem(
                401,
                "unauthorized",
                "expected header 'Authorization: Bearer <HALLSTATS_API_TOKEN>'",
                field="Authorization",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def create_app(settings: Settings, *, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The API over ``settings.clickhouse_database``; ``clock`` fixes "now" in tests."""
    now = clock or (lambda: datetime.now(UTC))
    pool = Clients(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pool.close()

    app = FastAPI(
        title="hallstats read API",
        version="1",
        description="Finalized weekly and year-to-date service-hall figures (read-only). "
        "Weeks are ISO weeks named `YYYY-Www` in the hall's time zone "
        f"({settings.timezone}). Bearer auth applies when HALLSTATS_API_TOKEN is set.",
        lifespan=lifespan,
        dependencies=[Depends(known_query_only)],
    )
    errors.install(app)
    routes.add_health(app)
    # Every data route sits behind the token (when one is set); /health does not.
    api = APIRouter(
        dependencies=[Depends(_auth(settings.api_token))] if settings.api_token else [],
        responses={**ERRORS, **(UNAUTHORIZED if settings.api_token else {})},
    )
    routes.add_data_routes(api, settings, pool, now)
    app.include_router(api)
    return app


def serve(settings: Settings, *, port: int | None = None) -> None:
    """Run the API with uvicorn on loopback only (put a proxy in front to expose it)."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=port or settings.api_port,
        log_level="info",
        access_log=False,
    )
