"""Tests for segsam.runtime: large blocks are kept by glibc, in every workflow stage."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")

# Prints the bytes glibc holds in mmapped blocks while a 64 MiB tensor is alive,
# and the free bytes it keeps in its heap once the tensor is gone.
PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, sys
    import torch

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2

    def probe():
        tensor = torch.ones(16 << 20)  # 64 MiB
        mapped = libc.mallinfo2().hblkhd
        del tensor
        return mapped, libc.mallinfo2().fordblks

    SETUP
    print(*result)
    """
)


def _run(setup: str) -> tuple[int, int]:
    code = PROBE.replace("SETUP", setup)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_glibc_maps_a_large_tensor_by_default() -> None:
    mapped, kept = _run("result = probe()")
    # the control: without the setting the block is mmapped, and unmapped when freed
    assert mapped >= 64 << 20
    assert kept < 64 << 20


def test_run_stage_keeps_large_blocks_on_the_heap() -> None:
    mapped, kept = _run("from segsam.errors import run_stage\nresult = run_stage(probe)")
    assert mapped < 64 << 20
    assert kept >= 64 << 20  # freed, but kept by the process for the next step's tensors


def test_keep_large_allocations_reports_success() -> None:
    # in a child process: mallopt would change the test session's own allocator for the tests after this one
    code = "from segsam.runtime import keep_large_allocations\nprint(keep_large_allocations())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
