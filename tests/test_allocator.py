"""The CLI's malloc setting (large buffers stay in the heap)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from vaecodec.allocator import keep_buffers

glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc, reason="mallopt settings exist only in glibc")
def test_glibc_accepts_the_settings_and_they_can_be_applied_again():
    assert keep_buffers() is True
    assert keep_buffers() is True


@pytest.mark.skipif(not glibc, reason="mallopt settings exist only in glibc")
def test_freed_large_buffers_are_reused_without_new_page_faults():
    """With the setting, allocating and freeing a 64 MiB buffer again faults in no new pages."""
    code = """
import resource, sys
from vaecodec.allocator import keep_buffers
if sys.argv[1] == "on":
    keep_buffers()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):  # warm up
    b = bytearray(64 << 20); del b
f0 = faults()
for _ in range(5):
    b = bytearray(64 << 20); del b
print(faults() - f0)
"""
    on, off = (int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                  check=True).stdout) for mode in ("on", "off"))
    pages = (64 << 20) // 4096
    assert off > 4 * pages  # glibc's default: a fresh mmap, faulted in page by page, each time
    assert on < pages // 10
