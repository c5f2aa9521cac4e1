"""What the scoring stage makes of one micro-batch (:class:`ScoringOutput`): the envelopes for
``scores``, dead letters, counters, and what the shadow and drift outputs need."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream_app.pipeline.customer_stage import DeadLetter
from stream_app.pipeline.forward import Forward
from stream_app.pipeline.routing import Misrouted, Reroute
from stream_app.scoring.model import BatchScores


@dataclass(slots=True)
class LabelCounts:
    """What happened to the labels of a batch."""

    applied: int = 0
    pending_or_unknown: int = 0
    # Taken after a forward of a later (or the same) event time on its partition: a score
    # computed meanwhile lacked it (ScoringStage.newest_forward).
    late: int = 0


@dataclass(slots=True)
class ScoringOutput:
    """Envelopes (key, value) for ``scores``, dead letters, counters."""

    scores: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    labels: LabelCounts = field(default_factory=LabelCounts)
    replayed: int = 0
    arrived_ms: list[float] = field(default_factory=list)  # Kafka timestamps of scored events
    scoring_s: float = 0.0  # predict_proba + explanations + envelopes of the batch
    # What the shadow and drift outputs need, row-aligned with ``scores``:
    events: list[Forward] = field(default_factory=list)
    event_ts: list[float] = field(default_factory=list)  # event times, epoch seconds
    X: np.ndarray | None = None  # feature matrix, FEATURE_NAMES columns
    champion: BatchScores | None = None
    canary_scored: int = 0  # envelopes of the batch the canary decided (not in events, X)
    # Labels on the wrong partition for their terminal (stream_app.pipeline.routing):
    reroutes: list[Reroute] = field(default_factory=list)
    misrouted: list[Misrouted] = field(default_factory=list)
