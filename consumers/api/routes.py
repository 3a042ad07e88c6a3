"""The read API's endpoints: a finalized week, its revisions and breakdowns, a year's
series and the live current week.

Every figure comes from the module that owns its rule: finalized versions from
:mod:`consumers.finalized`, completeness from :mod:`consumers.completeness`, breakdowns
from :mod:`consumers.breakdown`, 环比/同比 from :mod:`consumers.series`, live counts
from :mod:`consumers.figures`. Handlers only read and shape the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI

from consumers import breakdown, completeness, figures, finalized, series
from consumers.api.errors import (
    ERRORS,
    NOT_FOUND,
    ApiProblem,
    check_name,
    finalized_or_404,
    parse_week,
)
from consumers.api.inputs import VersionQuery, WeekPath, YearPath, name_query
from consumers.api.models import (
    BreakdownView,
    Counts,
    Entry,
    Health,
    LiveFigures,
    Revision,
    Revisions,
    SeriesEntry,
    WeekFigures,
    YearSeries,
)
from consumers.api.pool import Clients
from consumers.breakdown import Scope
from hallstats.settings import Settings
from schemas.calendar import IsoWeek

# FastAPI reads the handlers' (string) annotations in this module's globals: the
# parameter types above are imported at module level for that.


def add_health(app: FastAPI) -> None:
    """``/health``, outside the token: liveness needs no credentials."""

    @app.get("/health", response_model=Health, tags=["meta"], responses={422: ERRORS[422]})
    def health() -> Health:
        """Liveness of the API process itself (no database access)."""
        return Health(status="ok")


def add_data_routes(
    api: APIRouter, settings: Settings, pool: Clients, now: Callable[[], datetime]
) -> None:
    """The figure endpoints, over ``settings.clickhouse_database`` through ``pool``."""

    @api.get("/weeks/{week}", response_model=WeekFigures, responses=NOT_FOUND, tags=["weeks"])
    def week_figures(week: WeekPath, version: VersionQuery = None) -> WeekFigures:
        """A week's finalized figures: the latest version, or `version`."""
        iso = parse_week(week)
        with pool.client() as client:
            with finalized_or_404(iso):
                snapshot = finalized.read(client, settings, iso, version)
            return WeekFigures.of(snapshot, completeness.judge(client, settings, iso, now()))

    @api.get(
        "/weeks/{week}/revisions", response_model=Revisions, responses=NOT_FOUND, tags=["weeks"]
    )
    def revisions(week: WeekPath) -> Revisions:
        """Every finalized version of a week, oldest first, with what each revised."""
        iso = parse_week(week)
        with pool.client() as client:
            found = finalized.versions(client, settings, iso)
        with finalized_or_404(iso):
            finalized.pick(iso, found)  # 404 when there is none
        return Revisions(week=str(iso), revisions=[Revision.of(s) for s in found])

    def _breakdown(week: str, version: int | None, scope: Scope, name: str | None) -> BreakdownView:
        iso = parse_week(week)
        with pool.client() as client:
            with finalized_or_404(iso):
                snapshot = finalized.read(client, settings, iso, version)
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
            entries=[Entry.of(s) for s in found.of(scope)],
        )

    @api.get(
        "/weeks/{week}/departments",
        response_model=BreakdownView,
        responses=NOT_FOUND,
        tags=["weeks"],
    )
    def departments(
        week: WeekPath,
        version: VersionQuery = None,
        department: Annotated[str | None, name_query("department")] = None,
    ) -> BreakdownView:
        """A finalized version's figures per department (summed over halls)."""
        return _breakdown(week, version, Scope.DEPARTMENT, check_name("department", department))

    @api.get(
        "/weeks/{week}/halls", response_model=BreakdownView, responses=NOT_FOUND, tags=["weeks"]
    )
    def halls(
        week: WeekPath,
        version: VersionQuery = None,
        hall: Annotated[str | None, name_query("hall")] = None,
    ) -> BreakdownView:
        """A finalized version's figures per hall."""
        return _breakdown(week, version, Scope.HALL, check_name("hall", hall))

    @api.get("/years/{year}/weeks", response_model=YearSeries, tags=["years"])
    def year_weeks(year: YearPath) -> YearSeries:
        """The ISO year's finalized weeks (latest versions) with 环比 and 同比 per type."""
        with pool.client() as client:
            points = series.year(client, settings, year)
        return YearSeries(year=year, weeks=[SeriesEntry.of(p) for p in points])

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
