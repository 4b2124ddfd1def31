"""What this API process has learnt from the scheduler about which agents may capture on
which loans, so that a capture need not ask again.

An agent records visits on a loan once it has been given a task on it, whatever became of
the task (services/visits/service.py, `authorize_capture`). That fact only ever turns
true: a task given stays given, done or cancelled. So a yes from the scheduler is kept
(a no never is: a task dispatched a minute ago must count), and an agent's later captures
on the loan (the second call, the field visit after it, an offline queue drained) skip
the scheduler round trip. It is per process, bounded, least recently used dropped first;
a dropped pair is simply asked about again.
"""

from __future__ import annotations

from shared.lru import BoundedLru

# (agent, loan) pairs; an entry is a few hundred bytes, so this is tens of MiB at most.
MAX_GRANTS = 200_000


class TaskGrants:
    def __init__(self, max_entries: int = MAX_GRANTS) -> None:
        self._known: BoundedLru[tuple[str, str], bool] = BoundedLru(max_entries)

    def __contains__(self, pair: tuple[str, str]) -> bool:
        return self._known.get(pair) is not None

    def add(self, pair: tuple[str, str]) -> None:
        self._known.put(pair, True)
