"""``hallstats api``: a read-only HTTP API over finalized and live figures.

FastAPI rather than Faust's web server: the API runs apart from the worker
(reading finalized figures needs no Kafka), and FastAPI derives the OpenAPI
spec, which the schemathesis run checks, from the same typed models the
handlers return. Read-only by construction: every query is a parameterised
SELECT, and the ClickHouse session runs with ``readonly = 2`` so the server
itself refuses any write or DDL coming through this API.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from clickhouse_driver import Client
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from consumers import breakdown, bulletin, completeness, figures, finalized, series
from consumers.breakdown import Scope, Share
from consumers.completeness import Completeness
from consumers.finalized import FinalizedWeek
from hallstats.clickhouse import connect
from hallstats.errors import DataError, NotFinalizedError, OperationalError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek, weeks_in_year
from schemas.catalog import COUNTED_TYPES
from schemas.events import MAX_NAME_CHARS
from schemas.figures import TypeCounts

log = logging.getLogger(__name__)

MIN_YEAR, MAX_YEAR = 2000, 2999  # events before 2000 are rejected at intake


def _week_pattern() -> str:
    """Exactly the existing ISO weeks of MIN_YEAR..MAX_YEAR, so that the spec promises
    no more than the API accepts (W53 only in the years that have one)."""
    long_years = "|".join(str(y) for y in range(MIN_YEAR, MAX_YEAR + 1) if weeks_in_year(y) == 53)
    return rf"^(?:2\d{{3}}-W(?:0[1-9]|[1-4]\d|5[0-2])|(?:{long_years})-W53)$"


WEEK_PATTERN = _week_pattern()
# A name: no control characters and not only white space (checked again in _name).
NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---------------------------------------------------------------- response models


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Counts(_Model):
    """One figure per counted type: 咨询 consult (人次), 受理 accept (件), 颁发 issue (件),
    流转 transfer (件次)."""

    consult: int = Field(ge=0)
    accept: int = Field(ge=0)
    issue: int = Field(ge=0)
    transfer: int = Field(ge=0)

    @classmethod
    def of(cls, counts: TypeCounts) -> Counts:
        return cls(**counts.as_dict())


class SilentTerminal(_Model):
    hall_id: str
    window_id: str
    last_seen: datetime = Field(description="Its last event or heartbeat (UTC)")


class WeekFigures(_Model):
    week: str = Field(examples=["2024-W50"])
    version: int = Field(ge=1)
    finalized_at: datetime
    week_start: date
    week_end: date
    ytd_start: date
    ytd_end: date
    weekly: Counts
    year_to_date: Counts
    complete: bool | None = Field(
        description="false: a terminal seen in the 4 weeks before the week's end has sent "
        "nothing since (listed in silent_terminals); null while the grace period runs. "
        "Live, as in the bulletin JSON: not part of the version."
    )
    silent_terminals: list[SilentTerminal] = Field(
        description="Terminals silent since the week's end, as in the bulletin JSON"
    )
    content_hash: str
    note: str = Field(description="What this version revised, empty for version 1")
    text: str = Field(description="The bulletin paragraph of section 四(一)")


class Revision(_Model):
    version: int = Field(ge=1)
    finalized_at: datetime
    content_hash: str
    note: str
    weekly: Counts
    year_to_date: Counts


class Revisions(_Model):
    week: str
    revisions: list[Revision]


class Entry(_Model):
    name: str
    weekly: Counts
    year_to_date: Counts


class BreakdownView(_Model):
    week: str
    version: int = Field(ge=1)
    scope: Literal["department", "hall"]
    entries: list[Entry] = Field(description="Ordered by name")


class Change(_Model):
    previous: int = Field(ge=0, description="The comparison week's weekly figure")
    diff: int = Field(description="This week minus the comparison week")
    percent: float | None = Field(description="diff / previous x 100, null when previous is 0")


class Changes(_Model):
    compared_with: str = Field(description="The comparison week (latest finalized version)")
    consult: Change
    accept: Change
    issue: Change
    transfer: Change

    @classmethod
    def of(cls, changes: series.Changes | None) -> Changes | None:
        if changes is None:
            return None
        return cls(
            compared_with=str(changes.compared_with),
            **{
                t.value: Change(
                    previous=changes.get(t).previous,
                    diff=changes.get(t).diff,
                    percent=changes.get(t).percent,
                )
                for t in COUNTED_TYPES
            },
        )


class SeriesEntry(_Model):
    week: str
    version: int = Field(ge=1)
    finalized_at: datetime
    weekly: Counts
    year_to_date: Counts
    week_over_week: Changes | None = Field(
        description="环比: against the previous ISO week; null when it is not finalized"
    )
    year_over_year: Changes | None = Field(
        description="同比: against the same ISO week a year earlier; null when not finalized"
    )


class YearSeries(_Model):
    year: int
    weeks: list[SeriesEntry] = Field(description="Finalized weeks only, in order")


class LiveFigures(_Model):
    week: str
    provisional: Literal[True] = Field(
        description="Always true: live counters, not a finalized version; figures may change"
    )
    as_of: datetime
    week_start: date
    week_end: date
    ytd_start: date
    ytd_end: date
    weekly: Counts
    year_to_date: Counts


class Health(_Model):
    status: Literal["ok"]


class ApiError(_Model):
    error: str = Field(description="invalid_input | not_finalized | not_found | unauthorized | ...")
    field: str | None = Field(description="The offending input, when one is to blame")
    value: str | None = Field(description="What was received for that input")
    message: str


# ---------------------------------------------------------------- errors


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


def _answer(problem: ApiProblem) -> JSONResponse:
    return JSONResponse(
        problem.body.model_dump(), status_code=problem.status, headers=problem.headers
    )


def _validation_problem(exc: RequestValidationError) -> ApiProblem:
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ())]
    field = loc[-1] if loc else None
    raw = first.get("input")
    value = None if raw is None or isinstance(raw, dict) else str(raw)
    where = f"{loc[0]} parameter {field!r}" if len(loc) > 1 else "request"
    message = f"{where}: {first.get('msg', 'invalid')}"
    if first.get("type") == "string_pattern_mismatch":  # say why, not the (long) pattern
        message = f"{where}: expected {_EXPECTED.get(field or '', 'the documented form')}"
        if field == "week" and value is not None:
            try:
                IsoWeek.parse(value)
            except DataError as reason:
                message = str(reason)
    return ApiProblem(422, "invalid_input", message, field=field, value=value)


_EXPECTED = {
    "week": f"an existing ISO week YYYY-Www of the years {MIN_YEAR}..{MAX_YEAR}",
    "department": "a name without control characters, not blank",
    "hall": "a name without control characters, not blank",
}


_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ApiError,
        "description": "An input failed validation; `field` and `value` name it",
    },
    503: {"model": ApiError, "description": "ClickHouse is unreachable or failed"},
}
_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ApiError, "description": "Missing or wrong bearer token"}
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ApiError, "description": "Week (or version, or name) not finalized"}
}


# ---------------------------------------------------------------- inputs


def _week(text: str) -> IsoWeek:
    try:
        return IsoWeek.parse(text)
    except DataError as exc:
        raise ApiProblem(422, "invalid_input", str(exc), field="week", value=text) from exc


def _name(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip() or _CONTROL.search(value):
        raise ApiProblem(
            422,
            "invalid_input",
            f"{field}: expected a name without control characters, not blank",
            field=field,
            value=value,
        )
    return value


WeekPath = Annotated[
    str,
    Path(
        pattern=WEEK_PATTERN,
        description=f"ISO week `YYYY-Www` of {MIN_YEAR}..{MAX_YEAR}, e.g. 2024-W50",
        examples=["2024-W50"],
    ),
]
VersionQuery = Annotated[
    int | None,
    Query(ge=1, le=2**32 - 1, description="A given finalized version (default: the latest)"),
]


def _name_query(field: str) -> Any:
    return Query(
        min_length=1,
        pattern=NAME_PATTERN,
        max_length=MAX_NAME_CHARS,
        description=f"Only this {field} (exact name as terminals send it)",
    )


# ---------------------------------------------------------------- ClickHouse


class _Clients:
    """A few reusable read-only connections (a clickhouse-driver Client is not thread-safe)."""

    def __init__(self, settings: Settings, keep: int = 4) -> None:
        self._settings = settings
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._keep = keep

    def _new(self) -> Client:
        client = connect(self._settings)
        client.settings["readonly"] = 2  # the server refuses writes and DDL from this session
        return client

    @contextmanager
    def client(self) -> Iterator[Client]:
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self._new()
        broken = False
        try:
            yield client
        except OperationalError:
            broken = True  # a failed connection is not reused
            raise
        finally:
            if broken or self._idle.qsize() >= self._keep:
                client.disconnect()
            else:
                self._idle.put(client)  # also after a 4xx raised inside the block

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().disconnect()


# ---------------------------------------------------------------- the app


def _figures(snapshot: FinalizedWeek, done: Completeness) -> WeekFigures:
    ytd_first, ytd_last = snapshot.ytd_range
    return WeekFigures(
        week=str(snapshot.week),
        version=snapshot.version,
        finalized_at=snapshot.finalized_at,
        week_start=snapshot.week.start,
        week_end=snapshot.week.end,
        ytd_start=ytd_first,
        ytd_end=ytd_last,
        weekly=Counts.of(snapshot.weekly),
        year_to_date=Counts.of(snapshot.year_to_date),
        complete=done.complete,
        silent_terminals=[
            SilentTerminal(hall_id=t.hall_id, window_id=t.window_id, last_seen=t.last_seen)
            for t in done.silent
        ],
        content_hash=snapshot.content_hash,
        note=snapshot.note,
        text=bulletin.paragraph(snapshot.weekly, snapshot.year_to_date),
    )


def _entries(shares: tuple[Share, ...]) -> list[Entry]:
    return [
        Entry(name=s.name, weekly=Counts.of(s.weekly), year_to_date=Counts.of(s.year_to_date))
        for s in shares
    ]


def _known_query_only(request: Request) -> None:
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
    pool = _Clients(settings)

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
        dependencies=[Depends(_known_query_only)],
    )
    # Every data route sits behind the token (when one is set); /health does not.
    api = APIRouter(
        dependencies=[Depends(_auth(settings.api_token))] if settings.api_token else [],
        responses={**_ERRORS, **(_UNAUTHORIZED if settings.api_token else {})},
    )

    def snapshot_of(client: Client, week: IsoWeek, version: int | None) -> FinalizedWeek:
        return pick(week, finalized.versions(client, settings, week), version)

    def pick(week: IsoWeek, found: list[FinalizedWeek], version: int | None) -> FinalizedWeek:
        if not found:
            raise ApiProblem(
                404,
                "not_finalized",
                f"week {week}: expected a finalized version, found none (the current "
                "week's provisional figures are at /live/current)",
                field="week",
                value=str(week),
            )
        for snapshot in found:
            if snapshot.version == (found[-1].version if version is None else version):
                return snapshot
        raise ApiProblem(
            404,
            "not_found",
            f"week {week}: expected a version among {[s.version for s in found]}, got {version}",
            field="version",
            value=str(version),
        )

    @app.exception_handler(ApiProblem)
    async def on_problem(_: Request, exc: ApiProblem) -> JSONResponse:
        return _answer(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer(_validation_problem(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # Keep Starlette's headers (e.g. `Allow` on a 405, which RFC 9110 requires).
        return _answer(ApiProblem(exc.status_code, error, str(exc.detail), headers=exc.headers))

    @app.exception_handler(NotFinalizedError)
    async def on_not_finalized(_: Request, exc: NotFinalizedError) -> JSONResponse:
        return _answer(ApiProblem(404, "not_finalized", str(exc), field="week"))

    @app.exception_handler(OperationalError)
    async def on_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("api: %s", exc)
        return _answer(ApiProblem(503, "unavailable", str(exc)))

    @app.get("/health", response_model=Health, tags=["meta"], responses={422: _ERRORS[422]})
    def health() -> Health:
        """Liveness of the API process itself (no database access)."""
        return Health(status="ok")

    @api.get("/weeks/{week}", response_model=WeekFigures, responses=_NOT_FOUND, tags=["weeks"])
    def week_figures(week: WeekPath, version: VersionQuery = None) -> WeekFigures:
        """A week's finalized figures: the latest version, or `version`."""
        iso = _week(week)
        with pool.client() as client:
            snapshot = snapshot_of(client, iso, version)
            return _figures(snapshot, completeness.judge(client, settings, iso, now()))

    @api.get(
        "/weeks/{week}/revisions", response_model=Revisions, responses=_NOT_FOUND, tags=["weeks"]
    )
    def revisions(week: WeekPath) -> Revisions:
        """Every finalized version of a week, oldest first, with what each revised."""
        iso = _week(week)
        with pool.client() as client:
            found = finalized.versions(client, settings, iso)
        pick(iso, found, None)  # 404 when there is none
        return Revisions(
            week=str(iso),
            revisions=[
                Revision(
                    version=s.version,
                    finalized_at=s.finalized_at,
                    content_hash=s.content_hash,
                    note=s.note,
                    weekly=Counts.of(s.weekly),
                    year_to_date=Counts.of(s.year_to_date),
                )
                for s in found
            ],
        )

    def _breakdown(week: str, version: int | None, scope: Scope, name: str | None) -> BreakdownView:
        iso = _week(week)
        with pool.client() as client:
            snapshot = snapshot_of(client, iso, version)
            found = breakdown.read(client, settings, iso, snapshot.version, scope=scope, name=name)
        if found is None:
            raise ApiProblem(
                404,
                "not_found",
                f"week {iso} v{snapshot.version}: no {scope.value} breakdown was stored "
                "with this version (finalized before breakdowns existed)",
                field="version",
                value=str(snapshot.version),
            )
        if name is not None and not found.of(scope):
            raise ApiProblem(
                404,
                "not_found",
                f"week {iso} v{snapshot.version}: expected a {scope.value} with figures, "
                f"got {name!r}",
                field=scope.value,
                value=name,
            )
        return BreakdownView(
            week=str(iso),
            version=snapshot.version,
            scope=scope.value,
            entries=_entries(found.of(scope)),
        )

    @api.get(
        "/weeks/{week}/departments",
        response_model=BreakdownView,
        responses=_NOT_FOUND,
        tags=["weeks"],
    )
    def departments(
        week: WeekPath,
        version: VersionQuery = None,
        department: Annotated[str | None, _name_query("department")] = None,
    ) -> BreakdownView:
        """A finalized version's figures per department (summed over halls)."""
        return _breakdown(week, version, Scope.DEPARTMENT, _name("department", department))

    @api.get(
        "/weeks/{week}/halls", response_model=BreakdownView, responses=_NOT_FOUND, tags=["weeks"]
    )
    def halls(
        week: WeekPath,
        version: VersionQuery = None,
        hall: Annotated[str | None, _name_query("hall")] = None,
    ) -> BreakdownView:
        """A finalized version's figures per hall."""
        return _breakdown(week, version, Scope.HALL, _name("hall", hall))

    @api.get("/years/{year}/weeks", response_model=YearSeries, tags=["years"])
    def year_weeks(
        year: Annotated[int, Path(ge=MIN_YEAR, le=MAX_YEAR, description="ISO week-year")],
    ) -> YearSeries:
        """The ISO year's finalized weeks (latest versions) with 环比 and 同比 per type."""
        with pool.client() as client:
            points = series.year(client, settings, year)
        return YearSeries(
            year=year,
            weeks=[
                SeriesEntry(
                    week=str(p.snapshot.week),
                    version=p.snapshot.version,
                    finalized_at=p.snapshot.finalized_at,
                    weekly=Counts.of(p.snapshot.weekly),
                    year_to_date=Counts.of(p.snapshot.year_to_date),
                    week_over_week=Changes.of(p.week_over_week),
                    year_over_year=Changes.of(p.year_over_year),
                )
                for p in points
            ],
        )

    @api.get("/live/current", response_model=LiveFigures, tags=["live"])
    def live_current() -> LiveFigures:
        """The current ISO week's live counts: provisional, not a finalized version."""
        moment = now()
        iso = IsoWeek.of(moment.astimezone(settings.zone).date())
        first, last = iso.ytd_range()
        with pool.client() as client:
            weekly = figures.weekly(client, settings, iso)
            ytd = figures.year_to_date(client, settings, iso)
        return LiveFigures(
            week=str(iso),
            provisional=True,
            as_of=moment,
            week_start=iso.start,
            week_end=iso.end,
            ytd_start=first,
            ytd_end=last,
            weekly=Counts.of(weekly),
            year_to_date=Counts.of(ytd),
        )

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
