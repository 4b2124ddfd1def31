"""The garbage collector's settings for a long-running process, applied once it has started.

A request, an event batch or an import line allocates many objects that reference counting
frees at once; at the default threshold (700 allocations) the young generation was collected
every few events (every other request), and now and then a full collection walked every
module, schema and the app, which took a fifth of the loan import's CPU, stalled captures in
flight (their p99) and took a tenth of a worker's CPU per batch. What is alive at start-up
stays alive: it is frozen, and no collection walks it again.
"""

from __future__ import annotations

import gc

# Allocations (net of frees) between two young collections, and young collections between
# two of each older generation.
THRESHOLDS = (10_000, 10, 10)


def settle() -> None:
    """Freeze what start-up made and collect rarely from now on."""
    gc.set_threshold(*THRESHOLDS)
    gc.freeze()
