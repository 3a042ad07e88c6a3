"""The read API (consumers/api/) against the real ClickHouse server.

A year of counters (2024-W01..W52, pinned to the 2024-W50 bulletin figures)
is written straight into a per-module database and every week finalized the
way ``hallstats finalize`` does, without Kafka. The OpenAPI contract is then
checked by schemathesis against the same app.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.config import SchemathesisConfig

from consumers import finalize
from consumers.api import create_app
from hallstats.clickhouse import connect, execute
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.ddl import ensure_schema
from schemas.figures import TypeCounts
from tests.support import seed

pytestmark = pytest.mark.integration

W50 = seed.BULLETIN_WEEK
LAST_YEAR_W50 = TypeCounts(consult=1500, accept=600, issue=3900, transfer=5000)
TOKEN = "s3cret-token"
NOW = datetime(2024, 12, 11, 2, 30, tzinfo=UTC)  # Wednesday of 2024-W50
MODULE_DB = f"hs_api_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def seeded(stack: Settings) -> Iterator[Settings]:
    """A database with 2024 finalized weekly (v1), 2024-W50 also v2, and 2023-W50."""
    settings = stack.model_copy(update={"clickhouse_database": MODULE_DB})
    client = connect(settings)
    try:
        ensure_schema(settings, client)
        seed.seed_year(client, settings)
        seed.store_snapshot(
            client, settings, IsoWeek(2023, 50), LAST_YEAR_W50, TypeCounts(70000, 30000, 1, 2)
        )
        yield settings
    finally:
        execute(
            client, f"DROP DATABASE IF EXISTS {settings.clickhouse_database}", settings=settings
        )
        client.disconnect()


@pytest.fixture(scope="module")
def api(seeded: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(seeded, clock=lambda: NOW)) as client:
        yield client


def get(api: TestClient, path: str, **params: Any) -> Any:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_week_reproduces_the_bulletin_figures(api: TestClient) -> None:
    body = get(api, "/weeks/2024-W50")
    assert body["week"] == "2024-W50" and body["version"] == 1
    assert body["weekly"] == seed.BULLETIN_WEEKLY.as_dict()
    assert body["year_to_date"] == seed.BULLETIN_YTD.as_dict()
    assert (body["week_start"], body["week_end"]) == ("2024-12-09", "2024-12-15")
    assert (body["ytd_start"], body["ytd_end"]) == ("2024-01-01", "2024-12-15")
    # At NOW (inside W50) the grace period runs: completeness is not judged yet.
    assert body["complete"] is None and body["silent_terminals"] == []
    assert body["text"] == (
        "本周，共计咨询1627人次、受理578件、颁发3897件、流转5464件次。"
        "今年以来，累计咨询78946人次、受理32381件、颁发156964件、流转346703件次。"
    )
    assert datetime.fromisoformat(body["finalized_at"]) == datetime(2024, 12, 16, 2, tzinfo=UTC)
    assert get(api, "/weeks/2024-W50", version=1) == body


def test_breakdowns_add_up_to_the_totals(api: TestClient) -> None:
    for path, names in (
        ("/weeks/2024-W50/departments", {"民政厅", "经济和信息化厅", "药监局"}),
        ("/weeks/2024-W50/halls", {"hall-provincial", "hall-departmental", "hall-investment"}),
    ):
        body = get(api, path)
        assert body["version"] == 1
        assert names <= {e["name"] for e in body["entries"]}
        for scope, expected in (
            ("weekly", seed.BULLETIN_WEEKLY),
            ("year_to_date", seed.BULLETIN_YTD),
        ):
            total = TypeCounts()
            for entry in body["entries"]:
                total = total + TypeCounts.from_mapping(entry[scope])
            assert total == expected, (path, scope)
    one = get(api, "/weeks/2024-W50/departments", department="民政厅")
    assert [e["name"] for e in one["entries"]] == ["民政厅"]
    hall = get(api, "/weeks/2024-W50/halls", hall="hall-investment")
    assert [e["name"] for e in hall["entries"]] == ["hall-investment"]


def test_year_series_with_week_over_week_and_year_over_year(api: TestClient) -> None:
    body = get(api, "/years/2024/weeks")
    weeks = [w["week"] for w in body["weeks"]]
    assert weeks == [str(IsoWeek(2024, n)) for n in range(1, 53)]
    first, w49, w50 = body["weeks"][0], body["weeks"][48], body["weeks"][49]
    assert first["week_over_week"] is None  # 2023-W52 is not finalized
    assert first["year_over_year"] is None
    wow = w50["week_over_week"]
    assert wow["compared_with"] == "2024-W49"
    for t, now in seed.BULLETIN_WEEKLY.as_dict().items():
        before = w49["weekly"][t]
        assert wow[t]["previous"] == before and wow[t]["diff"] == now - before
        assert wow[t]["percent"] == pytest.approx(round((now - before) * 100 / before, 2))
    yoy = w50["year_over_year"]
    assert yoy["compared_with"] == "2023-W50"
    assert yoy["consult"] == {"previous": 1500, "diff": 127, "percent": pytest.approx(8.47)}
    assert w49["year_over_year"] is None
    assert get(api, "/years/2023/weeks")["weeks"][0]["week"] == "2023-W50"
    assert get(api, "/years/2031/weeks") == {"year": 2031, "weeks": []}


def test_live_current_week_is_marked_provisional(api: TestClient) -> None:
    body = get(api, "/live/current")
    assert body["provisional"] is True
    assert body["week"] == "2024-W50"
    assert datetime.fromisoformat(body["as_of"]) == NOW
    assert body["weekly"] == seed.BULLETIN_WEEKLY.as_dict()
    assert body["year_to_date"] == seed.BULLETIN_YTD.as_dict()


@pytest.mark.parametrize(
    ("path", "params", "status", "field", "value"),
    [
        ("/weeks/2024-W60", {}, 422, "week", "2024-W60"),
        ("/weeks/2024-50", {}, 422, "week", "2024-50"),
        ("/weeks/2024-W50", {"version": "abc"}, 422, "version", "abc"),
        ("/weeks/2024-W50", {"version": 0}, 422, "version", "0"),
        ("/weeks/2024-W50", {"version": 9}, 404, "version", "9"),
        ("/weeks/2025-W02", {}, 404, "week", "2025-W02"),
        ("/weeks/2025-W02/revisions", {}, 404, "week", "2025-W02"),
        ("/weeks/2025-W02/halls", {}, 404, "week", "2025-W02"),
        ("/years/1999/weeks", {}, 422, "year", "1999"),
        ("/years/3000/weeks", {}, 422, "year", "3000"),
        ("/years/20x4/weeks", {}, 422, "year", "20x4"),
        ("/weeks/2024-W50/departments", {"department": "x" * 65}, 422, "department", "x" * 65),
        ("/weeks/2024-W50/departments", {"department": "民政\n厅"}, 422, "department", "民政\n厅"),
        ("/weeks/2024-W50/departments", {"department": "  "}, 422, "department", "  "),
        ("/weeks/2024-W50/departments", {"department": "外交部"}, 404, "department", "外交部"),
        ("/weeks/2024-W50/halls", {"hall": "hall-nowhere"}, 404, "hall", "hall-nowhere"),
        ("/weeks/2024-W50", {"verison": "2"}, 422, "verison", "2"),
        ("/live/current", {"week": "2024-W50"}, 422, "week", "2024-W50"),
    ],
)
def test_bad_inputs_get_clear_errors(
    api: TestClient, path: str, params: dict[str, Any], status: int, field: str, value: str
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["field"], body["value"]) == (field, value)
    assert body["error"] in {"invalid_input", "not_finalized", "not_found"}
    assert body["message"]


def test_finalize_freezes_a_breakdown_with_every_version(
    stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """finalize() (minus the Kafka wait) writes each version's breakdown with it, and the
    API serves the latest version while older ones stay readable with their own split."""
    week = IsoWeek(2024, 51)
    small = TypeCounts(consult=3, accept=2, issue=1, transfer=1)
    spec = seed.SeedSpec(
        first=week, last=week, pin=week, weekly=small, year_to_date=small, shards=1
    )
    settings = stack.model_copy(update={"clickhouse_database": f"hs_fin_{uuid.uuid4().hex[:8]}"})
    client = connect(settings)
    late_day = week.start + timedelta(days=1)
    late_counters = [
        (0, kind, period, start, "hall-provincial", "公安厅", "accept", 5, 1, NOW)
        for kind, period, start in (
            ("day", late_day.isoformat(), late_day),
            ("week", str(week), week.start),
        )
    ]
    late_spec = seed.SeedSpec(
        first=week,
        last=week,
        pin=week,
        weekly=TypeCounts(accept=5),
        year_to_date=TypeCounts(accept=5),
        halls=(("hall-provincial", ("公安厅",)),),
    )
    monkeypatch.setattr(finalize, "wait_until_caught_up", lambda *a, **k: None)
    try:
        ensure_schema(settings, client)
        seed.seed_counters(client, settings, spec)
        seed.seed_archive(client, settings, spec)
        first = finalize.finalize(settings, week, now=datetime(2025, 1, 6, tzinfo=UTC))
        assert first.created and first.snapshot.version == 1
        # Late events arrive: counters and archive both grow by 5 accepts of 公安厅.
        execute(
            client,
            f"INSERT INTO {settings.clickhouse_database}.counters (shard, period_kind, period, "
            "period_start, hall_id, department, event_type, value, version, updated_at) VALUES",
            late_counters,
            settings=settings,
        )
        seed.seed_archive(client, settings, late_spec)
        second = finalize.finalize(settings, week, now=datetime(2025, 1, 7, tzinfo=UTC))
        assert second.created and second.snapshot.version == 2

        with TestClient(create_app(settings)) as api:
            latest, v1 = get(api, "/weeks/2024-W51"), get(api, "/weeks/2024-W51", version=1)
            assert latest["version"] == 2 and "revises v1" in latest["note"]
            assert latest["weekly"]["accept"] == v1["weekly"]["accept"] + 5 == 7
            assert [r["version"] for r in get(api, "/weeks/2024-W51/revisions")["revisions"]] == [
                1,
                2,
            ]
            split = get(api, "/weeks/2024-W51/departments")
            assert split["version"] == 2
            police = {"consult": 0, "accept": 5, "issue": 0, "transfer": 0}
            assert {"name": "公安厅", "weekly": police, "year_to_date": police} in split["entries"]
            old = get(api, "/weeks/2024-W51/departments", version=1)
            assert "公安厅" not in {e["name"] for e in old["entries"]}
            assert sum(e["weekly"]["accept"] for e in old["entries"]) == 2
            missing = api.get(
                "/weeks/2024-W51/departments", params={"department": "公安厅", "version": 1}
            )
            assert missing.status_code == 404 and missing.json()["field"] == "department"
            halls = get(api, "/weeks/2024-W51/halls")
            assert sum(e["year_to_date"]["accept"] for e in halls["entries"]) == 7
    finally:
        execute(
            client, f"DROP DATABASE IF EXISTS {settings.clickhouse_database}", settings=settings
        )
        client.disconnect()


# ---------------------------------------------------------------- completeness


@pytest.fixture(scope="module")
def terminals(stack: Settings) -> Iterator[Settings]:
    """2024-W49 and W50 finalized; window A silent since 13 Dec, B heard after W50's end,
    C last heard before W50's 4-week look-back."""
    settings = stack.model_copy(update={"clickhouse_database": f"hs_quiet_{uuid.uuid4().hex[:8]}"})
    client = connect(settings)
    try:
        ensure_schema(settings, client)
        for week in (IsoWeek(2024, 49), W50):
            seed.store_snapshot(
                client, settings, week, TypeCounts(1, 1, 1, 1), TypeCounts(2, 2, 2, 2)
            )
        execute(
            client,
            f"INSERT INTO {settings.clickhouse_database}.terminals "
            "(hall_id, window_id, last_seen) VALUES",
            [
                ("hall-a", "W01", datetime(2024, 12, 13, 9, tzinfo=UTC)),
                ("hall-b", "W02", datetime(2024, 12, 17, 1, tzinfo=UTC)),
                ("hall-c", "W03", datetime(2024, 10, 1, 1, tzinfo=UTC)),
            ],
            settings=settings,
        )
        yield settings
    finally:
        execute(
            client, f"DROP DATABASE IF EXISTS {settings.clickhouse_database}", settings=settings
        )
        client.disconnect()


def _completeness(body: dict[str, Any]) -> tuple[bool | None, list[tuple[str, str, datetime]]]:
    """``complete`` and the silent terminals, with times parsed."""
    return body["complete"], [
        (t["hall_id"], t["window_id"], datetime.fromisoformat(t["last_seen"]))
        for t in body["silent_terminals"]
    ]


def test_completeness_equals_the_bulletin_json(terminals: Settings) -> None:
    from consumers.render import render

    silent_a = [("hall-a", "W01", datetime(2024, 12, 13, 9, tzinfo=UTC))]
    judging = terminals.model_copy(update={"finalize_grace_seconds": 86400.0})
    waiting = terminals.model_copy(update={"finalize_grace_seconds": 100 * 365 * 86400.0})
    for config, week, expected in (
        (judging, W50, (False, silent_a)),
        (judging, IsoWeek(2024, 49), (True, [])),  # A was heard after W49's end
        (waiting, W50, (None, silent_a)),  # grace running: not judged, silence still listed
    ):
        with TestClient(create_app(config)) as api:
            body = get(api, f"/weeks/{week}")
        from_api = _completeness(body)
        bulletin = json.loads(render(config, week, None, "json").data)
        assert from_api == _completeness(bulletin) == expected, (
            week,
            config.finalize_grace_seconds,
        )
        # Same code, same words: the raw fields are identical, not only the instants.
        for field in ("complete", "silent_terminals"):
            assert body[field] == bulletin[field], (week, field)


def test_bearer_token_when_configured(seeded: Settings) -> None:
    guarded = seeded.model_copy(update={"api_token": SecretStr(TOKEN)})
    with TestClient(create_app(guarded)) as client:
        assert client.get("/health").status_code == 200  # liveness stays open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            denied = client.get("/weeks/2024-W50", headers=headers)
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"] == "Bearer"
            assert denied.json()["error"] == "unauthorized"
            assert TOKEN not in denied.text
        ok = client.get("/weeks/2024-W50", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        spec = client.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_the_api_session_cannot_write(seeded: Settings) -> None:
    """Read-only by construction: the server itself refuses writes from the API's clients."""
    from consumers.api import Clients

    pool = Clients(seeded)
    with pytest.raises(OperationalError, match="readonly"), pool.client() as client:
        execute(client, f"CREATE DATABASE {seeded.clickhouse_database}_x", settings=seeded)
    pool.close()


def test_connections_are_reused_after_a_client_error(seeded: Settings) -> None:
    from consumers.api import ApiProblem, Clients

    pool = Clients(seeded)
    with pytest.raises(ApiProblem), pool.client() as first:
        raise ApiProblem(404, "not_found", "no such week")
    with pool.client() as again:
        assert again is first
        assert execute(again, "SELECT 1", settings=seeded) == [(1,)]
    pool.close()


def test_clickhouse_down_is_a_503(seeded: Settings) -> None:
    from tests.support.services import free_port

    nowhere = seeded.model_copy(update={"clickhouse_port": free_port()})
    with TestClient(create_app(nowhere)) as client:
        response = client.get("/weeks/2024-W50")
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"


def test_openapi_spec_documents_every_endpoint(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in (
        "/weeks/{week}",
        "/weeks/{week}/revisions",
        "/weeks/{week}/departments",
        "/weeks/{week}/halls",
        "/years/{year}/weeks",
        "/live/current",
    ):
        responses = paths[path]["get"]["responses"]
        assert "$ref" in str(responses["200"]["content"]), path
        assert responses["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ApiError"
        }
    assert "404" in paths["/weeks/{week}"]["get"]["responses"]


# ---------------------------------------------------------------- schemathesis


# Loaded at import (schemathesis' lazy fixture loader breaks on pytest 9): creating
# the app touches no database, and `seeded` fills MODULE_DB before the test runs.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(
        Settings(clickhouse_database=MODULE_DB, api_token=SecretStr(TOKEN)), clock=lambda: NOW
    ),
    # Through the spec's security scheme, so schemathesis also checks unauthenticated calls.
    config=SchemathesisConfig.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}}}),
)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_openapi_contract(case: Any, seeded: Settings) -> None:
    """Every documented status, body and header holds for generated requests."""
    case.call_and_validate()
