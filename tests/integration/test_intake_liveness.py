"""The intake stage keeps moving: commits never block it, a stuck child is replaced.

A broker restart once left an intake child blocked for good in a synchronous
offset commit (no log, no progress). Commits are now asynchronous and confirmed
by callback, and ``hallstats worker`` kills and replaces a child whose loop has
not turned for ``STALL_SECONDS``.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from hallstats.kafka import consumer_config
from hallstats.settings import Settings
from streams.intake import Intake
from streams.stage_stats import StageTallies
from streams.worker import IntakeProcesses, prepare_topics
from tests.support import stalls
from tests.support.events import encode, event, produce
from tests.support.faults import wait_for

pytestmark = pytest.mark.integration


def test_a_child_whose_loop_stops_turning_is_replaced(isolated: Settings) -> None:
    children = IntakeProcesses(isolated, 1, stall_seconds=4.0, target=stalls.hang)
    children.start()
    try:
        first = children.pids()[0]
        time.sleep(2.0)
        children.watch()
        assert children.pids()[0] == first, "replaced before the stall limit"
        time.sleep(2.5)
        children.watch()
        second = children.pids()[0]
        assert second != first
    finally:
        children.stop()


def test_a_child_that_keeps_turning_is_left_alone(isolated: Settings) -> None:
    children = IntakeProcesses(isolated, 1, stall_seconds=8.0, target=stalls.turn)
    children.start()
    try:
        first = children.pids()[0]
        for _ in range(60):  # 12 s: past the stall limit, counted from the spawn
            time.sleep(0.2)
            children.watch()
        assert children.pids()[0] == first
        assert children.tallies[0].last_beat() > time.monotonic() - 2.0
    finally:
        children.stop()


def committed(settings: Settings) -> dict[int, int]:
    consumer = Consumer(consumer_config(settings, settings.intake_group))
    try:
        parts = [TopicPartition(settings.topic, p) for p in range(settings.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=30)}
    finally:
        consumer.close()


def high_watermarks(settings: Settings) -> dict[int, int]:
    consumer = Consumer(consumer_config(settings, settings.intake_group + "-probe"))
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(settings.topic, p), timeout=30)[1]
            for p in range(settings.partitions)
        }
    finally:
        consumer.close()


def test_asynchronous_commits_reach_the_end_of_every_partition(isolated: Settings) -> None:
    prepare_topics(isolated)
    produce(isolated, [(None, encode(event()), i % isolated.partitions) for i in range(3_000)])
    tallies = StageTallies("intake")
    intake = Intake(isolated, tallies)
    stop = threading.Event()
    runner = threading.Thread(target=intake.run, args=(stop,))
    runner.start()
    try:
        wait_for(lambda: tallies.value("messages") >= 3_000, 60, "intake to read 3,000 messages")
    finally:
        stop.set()  # close() waits for the last commits to be confirmed
        runner.join(30)
    ends = high_watermarks(isolated)
    assert sum(ends.values()) == 3_000
    assert committed(isolated) == ends
