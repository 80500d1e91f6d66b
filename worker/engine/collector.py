"""The garbage collector's settings for a worker process.

A worker keeps hundreds of analyses in flight, so hundreds of thousands of live objects
(conversations, messages, streams, connections), and allocates fast while it parses streams and
builds requests. With CPython's default thresholds (700, 10, 10) the collector runs a young
collection every 700 net allocations and, every 100 of those, a full one over everything alive:
measured in a worker at 250 analyses in flight, about 3 ms of CPU per analysis, some 15% of what
the process spends. Almost nothing the collector finds is garbage: the work is reference
counted away, and the few reference cycles (exception tracebacks, futures) are young when they
die, so rarer young collections still find them.

So: objects alive once the worker is up (modules, the catalog, the clients) move to the
permanent generation, where no collection looks at them again (`gc.freeze`), and collections run
less often. Memory held by cycles waits longer for its collection; at these thresholds that is a
few megabytes.
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 20, 20)
"""Young collections every 10,000 net allocations (CPython: 700); a middle one every 20 young
(10); a full one every 20 middle (10), when the long-lived objects grew by a quarter."""


def tune_for_worker() -> None:
    """Freeze what is alive now and collect less often (see the module docstring). Call once the
    process has built its long-lived objects."""
    gc.collect()  # what start-up left as garbage is not frozen with the rest
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
