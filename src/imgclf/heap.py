"""Short pauses of Python's garbage collector in a long-running process.

Most of a service's heap is what its start-up built and keeps to the end: the framework, the
routes, the models' sessions and the modules they import. Python's full (generation 2)
collections walk all of it whenever enough new objects have survived, every few seconds under
load, and nothing else runs in the process meanwhile: measured at saturation, 70-90 ms each
about every 6 s, which held every answer in flight and made most of the p99's distance from
the median (docs/benchmarks.md, "Service: where its speed comes from").
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect what start-up left behind, then exempt every object still alive from the
    collector's scans (``gc.freeze``): full collections then walk only what the process made
    since, a few milliseconds. Reference counting still frees frozen objects as usual; only a
    reference cycle among them would outlive its use, until the next call, which unfreezes
    and collects everything first (a worker restarted in the same process calls it again).
    Call when start-up is done, in a process of its own, not in a test's."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
