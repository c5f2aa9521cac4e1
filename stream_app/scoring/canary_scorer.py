"""The canary's model beside the champion's: its rows of a batch scored in a process of its own.

A canary is usually a heavier model than the champion (the project's gradient boosting explains
each row by occlusion: 16 predictions a row, about 0.2 ms on this machine, a hundred times the
logistic champion's). Scored on the champion's path, 5 % of the rows cost the worker's main thread
about 15 % more CPU; in a thread, the tree ensemble's per-tree Python loop holds the interpreter
lock, so it hardly overlaps. So, like the shadow challenger, the canary runs in a process of its
own (spawned once per canary version, the model loaded hash-verified again, native pools held to
one thread): :meth:`CanaryScorer.submit` hands it the batch's canary rows before the champion
scores the others, and the scoring stage takes the envelopes back (:meth:`CanaryBatch.result`)
when it writes the batch, in order. Unlike the shadow, nothing is skipped: the canary decides, so
the batch waits for it.

If the process fails (it died, it could not load the version), the batch is scored here, in the
caller's thread, with the model the worker loaded, and the process is started again for the next
batch: a canary never loses an envelope and never stops the worker. Without a version directory
(tests, tools) it scores in a thread of this process.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stream_app.scoring.canary import CANARY_ROUTE, one_native_thread
from stream_app.scoring.envelope import EnvelopeWriter, EventLike, ScoredEvent
from stream_app.scoring.model import ScoringModel

log = logging.getLogger("stream_app.models")

Pairs = list[tuple[bytes, bytes]]

_child: tuple[ScoringModel, bool] | None = None


def _child_init(version_dir: str, emit_features: bool) -> None:
    """Load the canary in its process, hash-verified again, with one native thread."""
    global _child
    one_native_thread()
    _child = (ScoringModel.load(Path(version_dir)), emit_features)


def _child_ready() -> str:
    assert _child is not None, "the canary process was not initialised"
    return _child[0].version


def _child_score(
    events: Sequence[ScoredEvent], X: npt.NDArray[np.float64], champion_version: str
) -> Pairs:
    assert _child is not None, "the canary process was not initialised"
    model, emit_features = _child
    return score_rows(model, emit_features, events, X, champion_version)


def score_rows(
    model: ScoringModel,
    emit_features: bool,
    events: Sequence[EventLike],
    X: npt.NDArray[np.float64],
    champion_version: str,
) -> Pairs:
    """``(customer id, envelope)`` of each of the canary's rows (``X``: its columns)."""
    writer = EnvelopeWriter(model, emit_features, CANARY_ROUTE, champion_version, model.version)
    return writer.encode(events, X, model.score_batch(X))


class CanaryBatch:
    """The canary's envelopes of one batch, on their way."""

    def __init__(
        self,
        scorer: CanaryScorer,
        future: Future[Pairs],
        events: Sequence[ScoredEvent],
        X: npt.NDArray[np.float64],
        champion_version: str,
    ) -> None:
        self.scorer, self.future = scorer, future
        self.events, self.X, self.champion_version = events, X, champion_version

    def result(self) -> Pairs:
        """The envelopes, in the rows' order (scored here if the process failed)."""
        try:
            return self.future.result()
        except Exception as exc:
            return self.scorer.failed(exc, self.events, self.X, self.champion_version)


class CanaryScorer:
    """The canary's model, in a process of its own (``version_dir``) or a thread."""

    def __init__(
        self, model: ScoringModel, version_dir: Path | None, emit_features: bool = False
    ) -> None:
        self.model = model
        self.version_dir = version_dir
        self.emit_features = emit_features
        self._executor: Executor | None = None
        self.failures = 0

    def _start(self) -> Executor:
        if self.version_dir is None:
            return ThreadPoolExecutor(1, thread_name_prefix="canary", initializer=one_native_thread)
        return ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_child_init,
            initargs=(str(self.version_dir), self.emit_features),
        )

    def warm_up(self) -> None:
        """Start the process now (it loads the model), not with the first canary batch."""
        if self.version_dir is not None and self._executor is None:
            self._executor = self._start()
            self._executor.submit(_child_ready)

    def submit(
        self,
        events: Sequence[EventLike],
        X: npt.NDArray[np.float64],
        champion_version: str,
    ) -> CanaryBatch:
        """Start scoring ``events`` (their canary columns ``X``); the envelopes come from the
        returned batch's :meth:`CanaryBatch.result`."""
        identities = [ScoredEvent.of(e) for e in events]
        if self._executor is None:
            self._executor = self._start()
        if self.version_dir is None:
            future = self._executor.submit(
                score_rows, self.model, self.emit_features, identities, X, champion_version
            )
        else:
            try:
                future = self._executor.submit(_child_score, identities, X, champion_version)
            except Exception as exc:  # a broken pool refuses new work
                future = Future()
                future.set_exception(exc)
        return CanaryBatch(self, future, identities, X, champion_version)

    def failed(
        self,
        exc: Exception,
        events: Sequence[ScoredEvent],
        X: npt.NDArray[np.float64],
        champion_version: str,
    ) -> Pairs:
        """Score here what the process could not, and start it again for the next batch."""
        self.failures += 1
        log.error(
            "the canary %s's process failed (%r); its %d event(s) of this batch are scored in "
            "the worker, and the process starts again",
            self.model.version,
            exc,
            len(events),
        )
        self.close()
        return score_rows(self.model, self.emit_features, events, X, champion_version)

    def close(self) -> None:
        """Stop the process or thread (work not started is dropped: the stage has none)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
