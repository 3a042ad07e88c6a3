"""The Faust app: the counting agent over bundles of the by-event-id topic.

Validation happens before, in the intake stage (:mod:`streams.intake`), which
sends bundles of hundreds of events per Kafka message, so Faust's per-message
machinery is paid per bundle, not per event. The agent hands each batch to
:class:`streams.counting.Counting`, or to the counting processes of
:class:`streams.count_pool.CountPool` (``HALLSTATS_WORKER_COUNT_PROCESSES`` > 1),
and acknowledges it only after its effects are durable (``noack_take`` + explicit
``ack``: ``take`` would ack a failed batch). Exactness never depends on what Faust
commits or delivers: counting keeps its own position per partition and fills any gap
from Kafka directly.

No Faust tables: the state lives in RocksDB (:mod:`streams.state`), checked
against ClickHouse on assignment, so a restart does not replay changelogs.
Only public Faust API is used here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import faust

from hallstats.errors import HallstatsError, OperationalError
from hallstats.kafka import faust_credentials
from hallstats.settings import Settings
from streams import bundles
from streams.count_pool import CountPool
from streams.counting import Counting
from streams.gaps import Fetched
from streams.lateness import FinalizedWeeks
from streams.metrics import WorkerMetrics
from streams.stage_stats import StageTallies

log = logging.getLogger(__name__)


def _fatal_on_error(
    agent: Callable[[faust.StreamT[Any]], Awaitable[None]],
) -> Callable[[faust.StreamT[Any]], Awaitable[None]]:
    """Exit the process when an agent fails instead of letting Faust restart it.

    A restarted agent loses its unacknowledged batch from the stream, so its
    partitions would stall. Exiting keeps the invariant simple: a restart
    resumes from the last durable position, and idempotent state absorbs the replay.
    """

    @functools.wraps(agent)
    async def guarded(stream: faust.StreamT[Any]) -> None:
        try:
            await agent(stream)
        except asyncio.CancelledError:
            raise
        except Exception:
            _exit_worker(f"agent {agent.__name__} failed")

    return guarded


def _exit_worker(what: str) -> NoReturn:
    """Exit at once with status 70 (a supervisor restarts the worker), logging why."""
    log.critical(
        "%s; exiting (restart resumes from the last durable position)", what, exc_info=True
    )
    logging.shutdown()
    os._exit(70)


def _fetched(event: Any) -> Fetched:
    message = event.message
    sent = int((message.timestamp or 0) * 1000)
    return Fetched(
        message.partition,
        message.offset,
        None,
        message.value,
        bundles.raw_timestamp_ms(message.headers, sent),
    )


def build_app(
    settings: Settings,
    extra_stages: list[StageTallies] | None = None,
    on_leader: tuple[float, Callable[[], None]] | None = None,
) -> tuple[faust.App, Counting | CountPool]:
    """The app and its counting stage; ``extra_stages`` (intake) join its /metrics;
    ``on_leader`` = (seconds, action) runs on a timer while this worker leads the group
    (automatic finalization, given by the composition root: readers are not ours)."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),  # TLS/SASL as every other client
        datadir=str(settings.worker_data_dir.resolve() / settings.app_id),
        topic_partitions=settings.partitions,
        # Faust creates no topic itself: prepare_topics made them all, with the
        # cluster's replication; this only matters if one was deleted meanwhile.
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        # A killed member's partitions move after 10 s, not Faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        web_enabled=True,
        web_port=settings.worker_web_port,
        web_bind="127.0.0.1",
        stream_buffer_maxsize=256,
        broker_commit_every=64,
        broker_commit_interval=1.0,
    )
    processes = settings.worker_count_processes
    count_tallies = [StageTallies("count", shared=processes > 1) for _ in range(processes)]
    finalized = FinalizedWeeks(settings)  # late-event records
    finalized.install(app)
    metrics = WorkerMetrics(
        settings, stages=[*(extra_stages or []), *count_tallies], finalized=finalized
    )
    metrics.install(app)
    if on_leader is not None:
        every, action = on_leader

        @app.timer(every, on_leader=True)  # type: ignore[untyped-decorator]
        async def leader_tick() -> None:
            action()

    counting: Counting | CountPool
    if processes > 1:
        counting = CountPool(settings, count_tallies, metrics=metrics, finalized=finalized)
        counting.start()  # the processes start while Faust joins the group
    else:
        counting = Counting(
            settings, observer=metrics, tallies=count_tallies[0], finalized=finalized
        )
    by_id = app.topic(
        settings.by_id_topic,
        partitions=settings.partitions,
        internal=True,
        key_serializer="raw",
        value_serializer="raw",
    )

    def ours(tps: Any) -> list[int]:
        return [tp.partition for tp in tps if tp.topic == settings.by_id_topic]

    @app.on_partitions_revoked.connect
    async def _revoked(*args: Any, **_kwargs: Any) -> None:
        counting.revoke(ours(args[1]))  # (sender, revoked partitions)

    @app.on_partitions_assigned.connect
    async def _assigned(*args: Any, **_kwargs: Any) -> None:
        counting.assign(ours(args[1]))  # (sender, new assignment)

    @app.timer(2.0)  # type: ignore[untyped-decorator]
    async def catch_up() -> None:
        try:
            await asyncio.to_thread(counting.catch_up)
        except HallstatsError as exc:  # a service away: the next tick tries again
            log.warning("count: catching up idle partitions failed: %s", exc)
        except Exception:  # never let the safety net take the worker down
            log.exception("count: catching up idle partitions failed")

    if isinstance(counting, CountPool):
        pool = counting

        @app.timer(1.0)  # type: ignore[untyped-decorator]
        async def watch_counting_processes() -> None:
            try:
                pool.check()
            except OperationalError as exc:
                _exit_worker(str(exc))

    @app.agent(by_id)
    @_fatal_on_error
    async def count(stream: Any) -> None:
        async for batch in stream.noack().noack_take(64, within=settings.worker_batch_seconds):
            await asyncio.to_thread(counting.process, [_fetched(e) for e in batch])
            for event in batch:
                await stream.ack(event)

    @app.on_before_shutdown.connect
    async def _close(*_args: Any, **_kwargs: Any) -> None:
        await asyncio.to_thread(counting.close)

    return app, counting
