"""``hallstats api``: a read-only HTTP API over finalized and live figures.

FastAPI rather than Faust's web server: the API runs apart from the worker
(reading finalized figures needs no Kafka), and FastAPI derives the OpenAPI
spec, which the schemathesis run checks, from the same typed models the
handlers return. Read-only by construction: every query is a parameterised
SELECT, and the ClickHouse session runs with ``readonly = 2`` so the server
itself refuses any write or DDL coming through this API.

One module per job: ``models`` (the JSON answers, per-type fields from the
catalog), ``inputs`` (parameters as the spec declares them), ``errors`` (every
error answer and which exception maps to it), ``pool`` (the read-only ClickHouse
connections), ``routes`` (the endpoints) and ``app`` (putting them together).
"""

from __future__ import annotations

from consumers.api.app import create_app, serve
from consumers.api.errors import ApiProblem
from consumers.api.pool import Clients

__all__ = ["ApiProblem", "Clients", "create_app", "serve"]
