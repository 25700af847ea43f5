"""bench/soak.py splits RSS by what backs the pages, so a leak (anonymous) is told apart from
model files being paged in (file-backed)."""

from __future__ import annotations

import mmap
import os

from bench.soak import resident_split_mib, rss_mib


def test_the_split_adds_up_to_rss_and_an_anonymous_allocation_shows_in_the_anonymous_part() -> None:
    pid = os.getpid()
    before = resident_split_mib(pid)
    assert set(before) == {"anonymous", "file_backed"}
    assert abs(before["anonymous"] + before["file_backed"] - rss_mib(pid)) < 8
    # A fresh private mapping (a shared one would be shmem): a bytearray may reuse memory that
    # malloc holds resident (a test worker that freed a large block earlier): no page is new.
    with mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as block:  # untouched until written
        block[::4096] = b"x" * len(block[::4096])
        after = resident_split_mib(pid)
    assert after["anonymous"] - before["anonymous"] > 56
    assert abs(after["file_backed"] - before["file_backed"]) < 16


def test_a_process_that_is_gone_gives_no_split() -> None:
    assert resident_split_mib(2**22 + 12345) == {}
