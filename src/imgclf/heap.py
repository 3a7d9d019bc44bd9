"""A long-running process's heap: short pauses of Python's garbage collector, and the memory of
large pictures given back to the system.

Most of a service's heap is what its start-up built and keeps to the end: the framework, the
routes, the models' sessions and the modules they import. Python's full (generation 2)
collections walk all of it whenever enough new objects have survived, every few seconds under
load, and nothing else runs in the process meanwhile: measured at saturation, 70-90 ms each
about every 6 s, which held every answer in flight and made most of the p99's distance from
the median (docs/benchmarks.md, "Service: where its speed comes from").
"""

from __future__ import annotations

import ctypes
import gc
import logging
import sys

logger = logging.getLogger(__name__)

# glibc's mallopt parameter, and the size from which a block is mapped on its own (and unmapped
# when freed): above a batch of eight 224x224 inputs as float32 (4.8 MB goes either way; the
# model's own buffers are ONNX Runtime's), below a decoded photo that draft mode cannot shrink.
M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 4 * 2**20


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


def return_large_blocks() -> None:
    """Have glibc map every block from ``LARGE_BLOCK_BYTES`` up on its own, so that freeing it
    gives it back to the system. By default glibc raises that threshold to the size of each
    large block freed (up to 32 MB), and from then on keeps such blocks in the heaps of the
    threads that decoded them: an ``imgclf serve`` that had decoded 16 large PNGs and WebPs at
    once stayed at 605 MB of RSS after them (234 MB before), and at 345 MB with this. A
    process of its own calls it; elsewhere than glibc it does nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)  # the process's own C library, without looking for it
        done = libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)
    except (OSError, AttributeError):  # musl, or no mallopt: its allocator's own ways
        return
    if not done:
        logger.debug("mallopt(M_MMAP_THRESHOLD) refused; large blocks stay in the heap")
