"""The consumer loop's defaults (shared/kafka.py), in a module of their own so that the
settings (shared/settings.py) offer the same values without importing the Kafka client."""

from __future__ import annotations

from typing import Final

# Records a topic's batch holds at most (CONSUMER_BATCH_SIZE); one transaction applies it.
# 2,000 rather than 1,000: a batch's fixed cost (its round trips, the offset commit) is then
# shared by twice the events. Side by side in `BENCH_ONLY=throughput make bench`, three runs
# each, alternating: the scheduler worker 0.505-0.563 x raw at 1,000 and 0.565-0.593 at
# 2,000; the alerts worker 0.567-0.603 and 0.533-0.621. An alert behind a month-end backlog
# waits for one batch of postings: at the 11,000-12,000 postings/s the scheduler worker
# applied alone, about 0.2 s.
DEFAULT_BATCH_SIZE: Final = 2000

# How long the broker may hold an empty fetch. The embedded broker (Tansu) does not answer a
# waiting fetch when records arrive, it answers when the wait is over: with aiokafka's 500 ms
# default a posting waited 215 ms (median) per hop before a consumer saw it, and a posting's
# alert crosses two hops. At 50 ms an idle consumer sends 20 small fetches a second, which
# Apache Kafka (which does answer on arrival) does not need but does not mind.
DEFAULT_FETCH_MAX_WAIT_MS: Final = 50
