"""Asking the broker whether it still holds what it acknowledged to a relay.

A relay notices a lost log when the broker next acknowledges a partition below an offset it
acknowledged before, but that needs a publish, and fails when the new log has already grown
past the old offset. So on its health tick the relay also reads back, per partition, the last
record it was acknowledged at: an empty partition, another record at that offset, or a log
that ends before it, mean the log it published to is gone. (The log's end offset alone cannot
tell: the embedded broker reports the first offset of the last batch there.) A record older
than the log's start was removed by retention, which is no loss.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.broker_ledger import BrokerLedger, Loss, fingerprint


class LogProbe:
    """A group-less client reading single records back; one per relay."""

    def __init__(self, bootstrap_servers: str, *, read_timeout_seconds: float = 2.0) -> None:
        self._bootstrap = bootstrap_servers
        self._read_timeout = read_timeout_seconds
        self._client: AIOKafkaConsumer | None = None

    async def verify(self, ledger: BrokerLedger) -> list[Loss]:
        """The losses found on the partitions `ledger` has a fingerprinted mark for."""
        marked = {
            TopicPartition(topic, partition): mark
            for (topic, partition), mark in ledger.marks.items()
            if mark.fingerprint is not None and mark.next_offset > 0
        }
        if not marked:
            return []
        client = await self._started()
        partitions = list(marked)
        client.assign(partitions)
        starts = await client.beginning_offsets(partitions)
        ends = await client.end_offsets(partitions)
        losses: list[Loss] = []
        pending: dict[TopicPartition, int] = {}  # partition -> highest offset read back
        for tp, mark in marked.items():
            last = mark.next_offset - 1
            if ends[tp] == 0:
                losses.append(_lost(ledger, tp, 0))
            elif starts[tp] <= last:
                # From our record, or from the last one the broker admits to if it claims
                # to end before ours (it may under-report: read on to see).
                client.seek(tp, min(last, max(ends[tp] - 1, starts[tp])))
                pending[tp] = -1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._read_timeout
        while pending and loop.time() < deadline:
            batch = await client.getmany(*pending, timeout_ms=250)
            for tp, seen in list(pending.items()):
                records = batch.get(tp, [])
                mark = marked[tp]
                last = mark.next_offset - 1
                ours = next((r for r in records if r.offset >= last), None)
                if ours is not None:
                    del pending[tp]
                    same = ours.offset == last and (
                        fingerprint(ours.key, ours.value) == mark.fingerprint
                    )
                    if not same:
                        losses.append(_lost(ledger, tp, ends[tp]))
                elif records:
                    pending[tp] = records[-1].offset
                elif seen >= 0:
                    # The log ended before our record: it is gone.
                    del pending[tp]
                    losses.append(_lost(ledger, tp, seen + 1))
        return losses

    async def close(self) -> None:
        if self._client is not None:
            await self._client.stop()
            self._client = None

    async def _started(self) -> AIOKafkaConsumer:
        if self._client is None:
            client = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                # Past the end of a shorter, new log: read from its start, which differs.
                auto_offset_reset="earliest",
            )
            await client.start()
            self._client = client
        return self._client


def _lost(ledger: BrokerLedger, tp: TopicPartition, found_offset: int) -> Loss:
    loss = ledger.lost(tp.topic, tp.partition, found_offset)
    assert loss is not None  # the partition was marked
    return loss
