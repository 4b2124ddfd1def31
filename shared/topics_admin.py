"""The topics as designed: every event topic and its dead-letter twin, three partitions each.

A broker that lost its state (the embedded one keeps topics in memory) auto-creates a topic
on the first produce with its own default partition count (four on Tansu). Workers therefore
call `ensure_topics` when they start and again on every health tick, so topics come back as
designed as soon as the broker does; `make run` and the tests create them the same way.
A topic someone else already created with another partition count cannot be shrunk: that is
logged, and the consumers read every partition it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from contextlib import suppress

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.events import ALL_TOPICS

log = logging.getLogger(__name__)

TOPIC_PARTITIONS = 3


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str] = ALL_TOPICS,
    *,
    partitions: int = TOPIC_PARTITIONS,
    request_timeout_ms: int = 5000,
) -> dict[str, int]:
    """Create whichever of `topics` is missing; returns each topic's partition count.

    Raises the client's error when the broker cannot be reached, so the caller decides
    whether to wait or carry on.
    """
    wanted = list(dict.fromkeys(topics))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            # Another worker may create the same topic at the same moment; either wins.
            with suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
            log.info("created topics %s with %d partitions", ", ".join(missing), partitions)
        return await _partition_counts(admin, wanted)
    finally:
        await admin.close()


async def wait_and_ensure_topics(
    bootstrap: str,
    topics: Iterable[str] = ALL_TOPICS,
    *,
    partitions: int = TOPIC_PARTITIONS,
    attempts: int = 30,
    pause_seconds: float = 0.3,
) -> dict[str, int]:
    """`ensure_topics`, waiting for a broker that is still starting."""
    wanted = list(topics)
    for attempt in range(1, attempts + 1):
        try:
            return await ensure_topics(bootstrap, wanted, partitions=partitions)
        except Exception:
            if attempt == attempts:
                raise
            await asyncio.sleep(pause_seconds)
    raise AssertionError("unreachable")


class TopicKeeper:
    """Keeps a worker's topics as designed: `ensure` on start and on every health tick.

    It logs a topic's partition count only when it changes, so a topic stuck with four
    partitions is reported once, not every few seconds.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Iterable[str] = ALL_TOPICS,
        *,
        partitions: int = TOPIC_PARTITIONS,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = list(dict.fromkeys(topics))
        self._partitions = partitions
        self._known: dict[str, int] = {}

    async def ensure(self) -> dict[str, int]:
        counts = await ensure_topics(self._bootstrap, self._topics, partitions=self._partitions)
        for topic, count in counts.items():
            if self._known.get(topic) == count:
                continue
            if count != self._partitions:
                log.warning(
                    "topic %s has %d partitions, designed %d (auto-created by another client "
                    "after a broker restart?); the consumers read all of them",
                    topic,
                    count,
                    self._partitions,
                )
            self._known[topic] = count
        return counts


async def _partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(topics)
    counts: dict[str, int] = {}
    for topic in described:
        name = topic.get("topic")
        if isinstance(name, str) and name in topics:
            counts[name] = len(topic.get("partitions") or [])
    return counts
