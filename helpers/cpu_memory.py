"""Keep freed memory in the process during CPU training and prediction, so it is not mapped again each time.

Why this is written here: PyTorch's CPU tensors come from the C library's ``malloc``, and it has no
caching allocator for them. glibc's default rules send a large block straight to ``mmap`` and unmap it
when it is freed. It also trims the top of the heap back to the OS. So every training iteration maps
gigabytes afresh, and the kernel zero-fills each new 4 KiB page on its first touch. Measured on
the homework config (R50-FPN, 800 px, batch 2, 2-core CPU): 1.3-3.3 million minor page faults
and 2-12 s of system time per iteration, for both engines, next to about 20 s of user time (bench/PROFILE.md).
PyTorch's CPU tuning guide suggests a caching ``malloc`` (jemalloc, tcmalloc) loaded with
``LD_PRELOAD``. That needs a system package and a restart of the process. glibc's own ``mallopt``
gets the same effect from inside a running process, a notebook kernel included.

The price: the process keeps its peak memory mapped after a training step or a prediction, instead of
shrinking between iterations. So it is done only for runs on a CPU (on a GPU, the big tensors live in
CUDA's own caching allocator) and only where the C library is glibc. Elsewhere it changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap, where freed ones are reused
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes (an int): never hand the heap's top back

_applied = False


def keep_freed_memory(device: str) -> bool:
    """For a run on ``device``: on a CPU with glibc, set malloc to keep freed memory for reuse (once per
    process). Returns whether the setting is in force."""
    global _applied
    if _applied:
        return True
    if not str(device).startswith("cpu") or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError) as e:  # no loadable C library, or one without mallopt
        log.debug("mallopt unavailable: %s", e)
        return False
    _applied = ok
    return ok
