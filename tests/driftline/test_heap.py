"""driftline/heap.py: the C heap's free memory goes back to the system.

Run in a fresh interpreter, so the heap under test holds nothing but what the test
allocates: many small C-heap blocks (bytes objects over pymalloc's 512-byte limit), then
every one but each 64th freed, which leaves the heap's pages free but pinned between the
survivors, where plain ``free()`` cannot return them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from driftline.heap import HeapTrimmer

PROBE = textwrap.dedent(
    """
    import json
    from driftline.heap import HeapTrimmer

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    blocks = [bytes(1500) + i.to_bytes(4, "little") for i in range(150_000)]  # about 230 MB
    kept = blocks[::64]
    del blocks
    before = rss_mb()
    trimmer = HeapTrimmer()
    trimmer.trim()
    print(json.dumps({"before": before, "after": rss_mb(), "kept": len(kept)}))
    """
)


@pytest.mark.skipif(not HeapTrimmer().available or not sys.platform.startswith("linux"), reason="needs glibc's malloc_trim and /proc")
def test_a_trim_returns_the_free_pages_pinned_between_live_blocks() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    got = json.loads(out.stdout)
    # before the trim the freed ~225 MB are still resident; after it, only the survivors' pages
    assert got["before"] - got["after"] > 100, got


def test_the_trimmer_thread_trims_until_stopped() -> None:
    trimmer = HeapTrimmer(interval=0.01)
    if not trimmer.available:
        pytest.skip("no malloc_trim here")
    trimmer.start()
    try:
        deadline = 200
        while trimmer.trims < 3 and deadline:
            time.sleep(0.01)
            deadline -= 1
    finally:
        trimmer.stop()
    assert trimmer.trims >= 3
    done = trimmer.trims
    time.sleep(0.05)
    assert trimmer.trims == done  # stopped: no more trims
