"""The stages as long-lived processes: topics, intake processes, process hygiene.

``--stage all`` (the default) runs counting (the Faust app) in this process
and ``HALLSTATS_WORKER_INTAKE_PROCESSES`` intake processes beside it: two cores
work at once, and one command still runs everything. ``--stage intake`` and
``--stage count`` run one stage alone, to scale each by adding processes (up
to the partition count of its input topic).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from hallstats.errors import OperationalError
from hallstats.kafka import DLQ_TOPIC_CONFIG, client_config, ensure_topics
from hallstats.settings import Settings
from streams.stage_stats import StageTallies

log = logging.getLogger(__name__)

STAGES = ("all", "intake", "count")


def internal_topics(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Topics the worker needs, with partitions and config, named as Faust names them."""
    return {
        settings.topic: (settings.partitions, {}),
        settings.dlq_topic: (1, dict(DLQ_TOPIC_CONFIG)),
        settings.by_id_topic: (settings.partitions, {}),
        f"{settings.app_id}-__assignor-__leader": (1, {}),
    }


def prepare_topics(settings: Settings, timeout: float = 60.0) -> None:
    """Create the worker's topics and wait until the broker's metadata shows them.

    Faust creates internal topics itself, but a topic created a moment before
    the group's first assignment can be missing from the leader's metadata and
    is then silently left unassigned (the count stage would never run).
    """
    wanted = internal_topics(settings)
    ensure_topics(
        settings,
        [(name, partitions) for name, (partitions, _config) in wanted.items()],
        {name: config for name, (_partitions, config) in wanted.items()},
    )
    admin = AdminClient(client_config(settings))
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = admin.list_topics(timeout=10).topics
        except KafkaException as exc:
            raise OperationalError(
                f"Kafka at {settings.kafka_bootstrap} did not answer ({exc})"
            ) from exc
        routed = existing.get(settings.by_id_topic)
        if routed is not None and len(routed.partitions) != settings.partitions:
            # Events are routed by hash(event_id) % partitions and owned per partition:
            # another count would send a re-send where its first copy is unknown.
            raise OperationalError(
                f"HALLSTATS_PARTITIONS is {settings.partitions} but {settings.by_id_topic!r} "
                f"has {len(routed.partitions)} partitions; the routing of event_ids is fixed "
                f"once events are counted: set HALLSTATS_PARTITIONS={len(routed.partitions)}"
            )
        visible = [
            n
            for n, (partitions, _c) in wanted.items()
            if n in existing and len(existing[n].partitions) >= partitions
        ]
        if len(visible) == len(wanted):
            return
        if time.monotonic() > deadline:
            raise OperationalError(
                f"Kafka at {settings.kafka_bootstrap}: topics "
                f"{sorted(set(wanted) - set(visible))} not visible after {timeout:.0f} s"
            )
        time.sleep(0.2)


def child_process_setup(name: str) -> None:
    """Linux: name the process (``ps``, ``top``) and have the kernel SIGKILL it when
    its parent dies, even by SIGKILL, so a killed worker leaves no stage behind."""
    spawner = multiprocessing.parent_process()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if spawner is not None and os.getppid() != spawner.pid:  # it died before that line
        os._exit(0)


def stage_child_setup(name: str) -> None:
    """A stage's spawned process: named, tied to its parent, GC and logging as the
    worker's (a spawned interpreter starts with the defaults), pid in every line."""
    child_process_setup(name)
    fewer_gc_passes()
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] [%(process)s] [%(levelname)s] %(message)s"
    )


def run_intake(settings: Settings, tallies: StageTallies, *, child: bool) -> None:
    """Run one intake process until SIGTERM/SIGINT; the current batch finishes first."""
    from streams.intake import Intake

    if child:
        stage_child_setup("hs-intake")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Intake(settings, tallies).run(stop)


#: An intake loop that has not turned for this long is stuck (a librdkafka call that
#: never returns, seen once after a broker restart): its process is killed and
#: replaced. Every wait inside the loop is bounded well below it.
STALL_SECONDS = 60.0


class IntakeProcesses:
    """Intake children of ``hallstats worker``, restarted if one dies or stalls."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        stall_seconds: float = STALL_SECONDS,
        target: Callable[..., None] | None = None,
    ) -> None:
        self._settings = settings
        self._target = target or run_intake  # (settings, tallies, child=True)
        self._context = multiprocessing.get_context("spawn")
        self._stall_seconds = stall_seconds
        self.tallies = [StageTallies("intake", shared=True) for _ in range(count)]
        self._procs: list[BaseProcess | None] = [None] * count
        self._spawned = [0.0] * count

    def start(self) -> None:
        for index in range(len(self._procs)):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        proc = self._context.Process(
            target=self._target,
            args=(self._settings, self.tallies[index]),
            kwargs={"child": True},
            name=f"hallstats-intake-{index}",
            daemon=True,
        )
        proc.start()
        self._procs[index] = proc
        self._spawned[index] = time.monotonic()
        log.info("intake process %s started (pid %s)", index, proc.pid)

    def pids(self) -> list[int | None]:
        return [proc.pid if proc is not None else None for proc in self._procs]

    def watch(self) -> None:
        for index, proc in enumerate(self._procs):
            if proc is None:
                continue
            if not proc.is_alive():
                log.error("intake process %s exited with %s; restarting it", index, proc.exitcode)
                self._spawn(index)
                continue
            alive_at = max(self.tallies[index].last_beat(), self._spawned[index])
            if time.monotonic() - alive_at > self._stall_seconds:
                log.error(
                    "intake process %s (pid %s) made no turn of its loop for %.0f s; "
                    "killing and restarting it (its batch is replayed, counting dedups it)",
                    index,
                    proc.pid,
                    self._stall_seconds,
                )
                proc.kill()
                proc.join(10)
                self._spawn(index)

    def stop(self) -> None:
        for proc in self._procs:
            if proc is not None and proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            if proc is not None:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()


def fewer_gc_passes() -> None:
    """Both stages allocate several objects per event, which triggers the cyclic
    garbage collector every few hundred events and sweeps the whole heap in its
    older generations: measured, that more than doubled the CPU per event. Our
    objects rarely form cycles (reference counting frees them), so collect less often.
    """
    gc.collect()
    gc.freeze()  # what exists at start (modules, Faust) is never scanned again
    gc.set_threshold(100_000, 50, 100)
