"""Keep the cyclic garbage collector off the worker's long-lived objects.

The worker holds tens of thousands of long-lived container objects (the models, each entity's
decoded state with its list of event ids, Faust's and aiokafka's own), and allocates many
short-lived ones per record. Every collection of the oldest generation walks all of them; on
the full pipeline those collections took 136-178 ms each, and made building envelopes 2.4 times
dearer (measured: README, Performance). ``gc.freeze()`` moves every object alive now into a
permanent generation that collections skip.

:class:`HeapKeeper` freezes at start-up and after every checkpoint (what survived a checkpoint
is long-lived), and every ``full_every_s`` unfreezes, collects everything once and freezes again,
so cyclic garbage that was frozen (objects freed by reference counting never need the
collector) cannot pile up.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("stream_app.heap")


class HeapKeeper:
    """When to freeze the heap and when to collect it whole."""

    def __init__(
        self, full_every_s: float = 600.0, clock: Callable[[], float] | None = None
    ) -> None:
        self.full_every_s = full_every_s
        self._clock = clock or time.monotonic
        self.last_full = self._clock()
        self.full_collections = 0

    def start(self) -> None:
        """At start-up, once the models are loaded: collect, then freeze."""
        gc.collect()
        gc.freeze()
        self.last_full = self._clock()

    def after_checkpoint(self) -> None:
        """Freeze what is alive; every ``full_every_s``, a full collection first."""
        now = self._clock()
        if now - self.last_full >= self.full_every_s:
            started = time.perf_counter()
            gc.unfreeze()
            freed = gc.collect()
            self.last_full = now
            self.full_collections += 1
            log.debug(
                "full collection: %d unreachable objects freed in %.0f ms",
                freed,
                (time.perf_counter() - started) * 1000,
            )
        gc.freeze()
