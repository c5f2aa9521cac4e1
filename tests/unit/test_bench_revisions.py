"""bench/revisions.py: the per-thread CPU reading it reports."""

from __future__ import annotations

import os
import threading
import time

from bench.revisions import thread_cpu_s


def test_thread_cpu_separates_the_main_thread_from_a_busy_one() -> None:
    spun, release = threading.Event(), threading.Event()

    def spin() -> None:
        deadline = time.thread_time() + 0.2
        while time.thread_time() < deadline:
            pass
        spun.set()
        release.wait()

    before = thread_cpu_s(os.getpid())["main"]
    busy = threading.Thread(target=spin)
    busy.start()
    spun.wait()
    during = thread_cpu_s(os.getpid())
    release.set()
    busy.join()
    # Python 3.11 does not name OS threads: the busy one is listed under the process's name.
    others = sum(v for k, v in during.items() if k != "main")
    assert others >= 0.19  # clock ticks are 10 ms
    assert during["main"] - before < 0.1  # the main thread only waited
