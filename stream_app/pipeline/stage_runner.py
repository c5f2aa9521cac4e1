"""A stage as the batch engine (:mod:`stream_app.pipeline.engine`) runs it: its input topics, its
decoder, its handler and its partition queues; and what the engine asks of the consumer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream_app.pipeline.buffers import Batch, PartitionQueue

Decoder = Callable[[list[Any]], tuple[list[Any], list[float | None]]]
"""A stage's chunk decoder: records -> (decoded items, event time of each or None)."""
Handler = Callable[[Batch], None]
"""A stage's batch handler: processes a micro-batch and queues its outputs (never waits)."""


class FetchView(Protocol):
    """What the engine asks of the consumer about its partitions."""

    def assignment(self) -> Iterable[Any]:
        """The partitions (``.topic``, ``.partition``) assigned now."""

    def fetch_state(self, tp: Any) -> tuple[int | None, int | None]:
        """``tp``'s fetch position (the offset after the last record handed over) and end
        offset (the high watermark, or the last stable offset when reading committed)."""

    def answered_at(self, tp: Any) -> int | None:
        """When the last fetch answer for ``tp`` came (epoch ms; None: none yet, or not known):
        the answer that set its end offset."""

    def committed(self, tp: Any) -> int | None:
        """The group's committed offset of ``tp`` as the consumer knows it (None: none)."""


@dataclass(frozen=True, slots=True)
class StageInput:
    """An input topic of a stage; at equal event times lower ``rank`` goes first. ``held_by``:
    a stage of this worker whose low watermark (less ``held_slack``) this topic's records do not
    pass (the labels wait for the transactions stage 1 may still forward)."""

    topic: str
    rank: int = 1
    held_by: StageRunner | None = None
    held_slack: float = 0.0


@dataclass(eq=False)
class StageRunner:
    """One stage in the engine: its inputs, its decoder, its handler."""

    name: str
    inputs: Sequence[StageInput]
    decode: Decoder
    handle: Handler
    batch_max: int = 1000
    queues: dict[Any, PartitionQueue[Any]] = field(default_factory=dict)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    batches: int = 0
    records: int = 0
    enforced: int = 0  # waits that ran out: a batch went on without an empty partition
    last_progress: float = field(default_factory=time.monotonic)
    idle_s: float = 0.0  # time spent waiting with nothing buffered
    held_s: float = 0.0  # time spent waiting with records buffered that the alignment held
    busy_s: float = 0.0  # time spent handling batches

    def __post_init__(self) -> None:
        self.ranks = {i.topic: (i.rank, n) for n, i in enumerate(self.inputs)}
        self.held = {i.topic: i for i in self.inputs if i.held_by is not None}

    def queue(self, tp: Any) -> PartitionQueue[Any]:
        """``tp``'s queue (made on first use)."""
        q = self.queues.get(tp)
        if q is None:
            rank, order = self.ranks[tp.topic]
            q = self.queues[tp] = PartitionQueue(
                tp.topic, tp.partition, rank=rank, order=order * 4096 + tp.partition
            )
        return q
