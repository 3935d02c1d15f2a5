"""Process settings shared by every workflow stage, torchrun rank and benchmark.

On CPU, a training or evaluation step allocates and frees tensors of tens of
megabytes each time (SAM's decoder on 64 x 64 embeddings: N x 4096 x 256
token maps, N x 32 x 256 x 256 upscaled features). glibc's ``malloc`` serves
blocks that large with a fresh ``mmap`` and returns them with ``munmap``, so
every step pays the kernel's page faults to zero the same memory again.
:func:`keep_large_allocations` tells glibc to serve such blocks from
its heap and to keep freed memory for the next step instead (what PyTorch's
CPU tuning guide gets from jemalloc or tcmalloc, without a new library). The
price: a process keeps up to 1 GiB of freed memory instead of returning it,
and its peak grows somewhat, as freed blocks do not always fit the next
request (figures in docs/performance.md). The workflow's processes each run
one stage and exit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # blocks below 1 GiB come from the heap; up to 1 GiB of freed heap is kept


def keep_large_allocations() -> bool:
    """Make glibc reuse large freed blocks instead of unmapping them (no-op elsewhere).

    Returns:
        True when the C library is glibc and accepted both settings.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
