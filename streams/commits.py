"""Offsets of asynchronous commits: what to ask for, what was confirmed, what to retry.

The intake commits asynchronously, because a synchronous commit waits for the
group coordinator with no time limit (after a broker restart it once blocked a
stage for good). Answers come later through a callback, possibly out of date: an
older commit can fail after a newer one was confirmed. The rule kept here: an
offset is asked for again only while it is above what the coordinator confirmed,
and a failure is retried only if no newer commit of that partition was sent since
(the coordinator applies commits in the order sent: retrying an older offset after
a newer one would rewind the group). A failed commit is retried even if no new
message ever arrives (finalize waits on committed positions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Partition = tuple[str, int]


class CommitTracker:
    """Pure bookkeeping; the consumer calls are the intake's."""

    def __init__(self) -> None:
        self._retry: dict[Partition, int] = {}  # failed, to ask for again
        self._confirmed: dict[Partition, int] = {}  # highest offset the coordinator confirmed
        self._asked: dict[Partition, int] = {}  # latest offset asked for

    def to_commit(
        self, offsets: Mapping[Partition, int], within: Iterable[Partition], *, forget_others: bool
    ) -> dict[Partition, int]:
        """What to commit now: ``offsets`` and earlier failures, for ``within`` only.

        ``forget_others`` drops failures of partitions outside ``within`` (they went
        to another member, whose commits they now are).
        """
        mine = set(within)
        pending = {
            tp: o
            for tp, o in {**self._retry, **offsets}.items()
            if tp in mine and o > self._confirmed.get(tp, -1)
        }
        if forget_others:
            self._retry = {tp: o for tp, o in self._retry.items() if tp in mine}
        for tp in pending:
            self._retry.pop(tp, None)
        self._asked.update(pending)
        return pending

    def confirmed(self, tp: Partition, offset: int) -> None:
        self._confirmed[tp] = max(self._confirmed.get(tp, -1), offset)
        if self._retry.get(tp, -1) <= offset:
            self._retry.pop(tp, None)

    def failed(self, offsets: Mapping[Partition, int]) -> None:
        """Ask again later, unless a newer commit of the partition was sent since:
        its own answer decides, and retrying this one after it would rewind."""
        for tp, offset in offsets.items():
            newest = max(self._confirmed.get(tp, -1), self._retry.get(tp, -1))
            if offset > newest and offset >= self._asked.get(tp, -1):
                self._retry[tp] = offset

    def has_retries(self) -> bool:
        return bool(self._retry)

    def unconfirmed(self, within: Iterable[Partition]) -> bool:
        """Is an offset asked for in ``within`` not confirmed yet?"""
        return any(self._asked.get(tp, -1) > self._confirmed.get(tp, -1) for tp in set(within))

    def committed(self) -> dict[Partition, int]:
        return dict(self._confirmed)
