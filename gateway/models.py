"""The gateway's answers, as pydantic models (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class EventResult(BaseModel):
    """What became of one event of the request, at its position."""

    index: int = Field(description="position of the event in the request, from 0")
    status: Literal["accepted", "rejected"] = Field(
        description="accepted: Kafka acknowledged it (it will be counted once, however often "
        "it is re-sent); rejected: it breaks the event contract and was dead-lettered"
    )
    event_id: str | None = Field(
        default=None, description="the event's id (lower case) when it could be read"
    )
    reason: str | None = Field(default=None, description="rejected: the contract's reason")
    field: str | None = Field(default=None, description="rejected: the field to blame, if any")
    expected: str | None = Field(default=None, description="rejected: what the contract wants")
    got: str | None = Field(default=None, description="rejected: what came")
    message: str | None = Field(default=None, description="rejected: all of it in words")


class Results(BaseModel):
    """One result per event, in the order of the request."""

    results: list[EventResult]


class GatewayError(BaseModel):
    """Why the request as a whole was refused; none of its events was taken."""

    error: str = Field(description="machine-readable kind, e.g. unauthorized, rate_limited")
    message: str = Field(description="what was expected, what came, and where")
    field: str | None = Field(default=None, description="the header or field to blame")


def _error(description: str) -> dict[str, Any]:
    return {"model": GatewayError, "description": description}


EVENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": Results, "description": "At least one event accepted (results in order)"},
    400: _error("Body not understood: empty, broken JSON array, not UTF-8"),
    401: _error("Missing, unknown or revoked terminal token"),
    403: _error("An event's hall_id/window_id is not the token's terminal; nothing produced"),
    413: _error("Body over HALLSTATS_GATEWAY_MAX_BODY_BYTES or over MAX_EVENTS events"),
    415: _error("Content-Type not application/json or application/x-ndjson (UTF-8)"),
    422: {"model": Results, "description": "Every event rejected (results in order)"},
    429: _error("Over the terminal's rate; retry after `Retry-After` seconds"),
    503: _error("Kafka (or ClickHouse) did not answer in time; re-send after `Retry-After`"),
}

REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One event object, a JSON array of events, or JSON Lines. Each event "
        "follows the event contract v1 (schemas/event.schema.json).",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object"},
                        {"type": "array", "items": {"type": "object"}},
                    ]
                }
            },
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}
