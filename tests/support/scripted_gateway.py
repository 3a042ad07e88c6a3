"""A tiny real HTTP server on loopback that answers ``POST /v1/events`` from a script.

Each request takes the next step of the script (then ``accept`` forever): answer
with the gateway's result format, a bare status, or drop the connection before or
after "producing". It records what it saw, so tests can check the client's
promises: nothing dropped that was not answered, nothing re-sent once its
acceptance was delivered.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Step:
    """kind: accept (reject the ids in ``reject``), status (bare ``code`` with
    ``headers``), drop (close without answering), accept_then_drop (count as produced,
    then close), sleep (answer accept after ``seconds``)."""

    kind: str
    code: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    reject: frozenset[int] = frozenset()  # positions in the request to reject
    seconds: float = 0.0


ACCEPT = Step("accept")
DROP = Step("drop")
ACCEPT_THEN_DROP = Step("accept_then_drop")


def status(code: int, retry_after: str | None = None) -> Step:
    return Step("status", code=code, headers={"Retry-After": retry_after} if retry_after else {})


@dataclass
class Seen:
    requests: list[list[str]] = field(default_factory=list)  # event_ids per request
    produced: list[str] = field(default_factory=list)  # accepted by the "gateway"
    delivered: set[str] = field(default_factory=set)  # acceptances the client received
    resent_after_delivery: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


class ScriptedGateway(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: list[Step]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = list(script)
        self.seen = Seen()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_step(self) -> Step:
        with self.lock:
            return self.script.pop(0) if self.script else ACCEPT


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real gateway
    server: ScriptedGateway

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        events = json.loads(body)
        ids = [e["event_id"] for e in events]
        gw = self.server
        step = gw.next_step()
        with gw.lock:
            gw.seen.requests.append(ids)
            gw.seen.auth.append(self.headers.get("Authorization", ""))
            gw.seen.times.append(time.monotonic())
            gw.seen.resent_after_delivery += [i for i in ids if i in gw.seen.delivered]
        if step.kind == "drop":
            self.close_connection = True
            return
        if step.kind == "status":
            self._answer(step.code, {"error": f"scripted {step.code}"}, step.headers)
            return
        if step.kind == "sleep":
            time.sleep(step.seconds)
        results: list[dict[str, Any]] = []
        accepted: list[str] = []
        for index, event_id in enumerate(ids):
            if index in step.reject:
                results.append(
                    {
                        "index": index,
                        "status": "rejected",
                        "reason": "invalid_value",
                        "field": "department",
                        "message": "invalid_value: scripted",
                    }
                )
            else:
                results.append({"event_id": event_id, "status": "accepted"})
                accepted.append(event_id)
        with gw.lock:
            gw.seen.produced += accepted
        if step.kind == "accept_then_drop":
            self.close_connection = True
            return
        self._answer(202 if accepted else 422, {"results": results})
        if step.kind == "accept":  # after a sleep the client may have given up already
            with gw.lock:
                gw.seen.delivered.update(accepted)

    def _answer(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


@contextmanager
def scripted_gateway(script: list[Step]) -> Iterator[ScriptedGateway]:
    server = ScriptedGateway(script)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
