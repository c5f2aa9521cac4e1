"""The canary's model beside the champion's: its rows of a batch scored in a process of its own.

A canary is usually a heavier model than the champion (the project's gradient boosting explains
each row by occlusion: 16 predictions a row, about 0.2 ms on this machine, a hundred times the
logistic champion's). Scored on the champion's path, 5 % of the rows cost the worker's main thread
about 15 % more CPU; in a thread, the tree ensemble's per-tree Python loop holds the interpreter
lock, so it hardly overlaps. So, like the shadow challenger, the canary runs in a process of its
own (spawned once per canary version, the model loaded hash-verified again, native pools held to
one thread): :meth:`CanaryScorer.submit` writes the batch's canary rows to it over a pipe before
the champion scores the others, and the scoring stage reads the envelopes back
(:meth:`CanaryBatch.result`) when it writes the batch, in order. Unlike the shadow, nothing is
skipped: the canary decides, so the batch waits for it.

If the process fails (it died, it could not load the version), the batch is scored here, in the
caller's thread, with the model the worker loaded, and the process is started again for the next
batch: a canary never loses an envelope and never stops the worker. Without a version directory
(tests, tools) it scores here.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stream_app.scoring.canary import CANARY_ROUTE, one_native_thread
from stream_app.scoring.envelope import EnvelopeWriter, EventLike, ScoredEvent
from stream_app.scoring.model import ScoringModel

log = logging.getLogger("stream_app.models")

Pairs = list[tuple[bytes, bytes]]
ANSWER_TIMEOUT_S = 30.0
"""Longest wait for the canary process's answer to one batch before it is taken for dead."""
RESTART_AFTER_S = 30.0
"""After a failure, the canary is scored in the worker for this long before its process is
started again (a version that cannot load must not cost every batch a process start)."""


def _child_main(conn: Connection, version_dir: str, emit_features: bool) -> None:
    """The canary's process: load the version (hash-verified again, one native thread), then
    answer each batch sent on ``conn`` with its envelopes until the pipe closes."""
    one_native_thread()
    model = ScoringModel.load(Path(version_dir))
    while True:
        try:
            events, X, champion_version = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(score_rows(model, emit_features, events, X, champion_version))


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
        sent: bool,
        events: Sequence[ScoredEvent],
        X: npt.NDArray[np.float64],
        champion_version: str,
    ) -> None:
        self.scorer, self.sent = scorer, sent
        self.events, self.X, self.champion_version = events, X, champion_version

    def result(self) -> Pairs:
        """The envelopes, in the rows' order (scored here if there is no process, or it
        failed)."""
        scorer = self.scorer
        if not self.sent:
            return score_rows(
                scorer.model, scorer.emit_features, self.events, self.X, self.champion_version
            )
        try:
            return scorer.answer()
        except Exception as exc:
            return scorer.failed(exc, self.events, self.X, self.champion_version)


class CanaryScorer:
    """The canary's model, in a process of its own (``version_dir``), or here.

    One batch at a time, over a pipe: :meth:`submit` writes the rows to it from the calling
    thread and :meth:`CanaryBatch.result` reads the answer, so no thread of this process has to
    take the interpreter lock in between (an executor's helper threads would: under a busy main
    thread each hand-off waited for the lock's switch interval, and the canary ran at 0.63x)."""

    def __init__(
        self, model: ScoringModel, version_dir: Path | None, emit_features: bool = False
    ) -> None:
        self.model = model
        self.version_dir = version_dir
        self.emit_features = emit_features
        self.failures = 0
        self._retry_at = 0.0  # after a failure, batches are scored here until then
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    def warm_up(self) -> None:
        """Start the process now (it loads the model), not with the first canary batch."""
        if self.version_dir is not None and self._process is None:
            context = multiprocessing.get_context("spawn")
            parent, child = context.Pipe()
            process = context.Process(
                target=_child_main,
                args=(child, str(self.version_dir), self.emit_features),
                name=f"canary {self.model.version}",
                daemon=True,
            )
            process.start()
            child.close()
            self._process, self._conn = process, parent

    def submit(
        self,
        events: Sequence[EventLike],
        X: npt.NDArray[np.float64],
        champion_version: str,
    ) -> CanaryBatch:
        """Start scoring ``events`` (their canary columns ``X``); the envelopes come from the
        returned batch's :meth:`CanaryBatch.result`."""
        identities = [ScoredEvent.of(e) for e in events]
        sent = False
        if self.version_dir is not None and time.monotonic() >= self._retry_at:
            self.warm_up()
            assert self._conn is not None
            try:
                self._conn.send((identities, X, champion_version))
                sent = True
            except Exception as exc:  # the process is gone: score here, start it again
                self.failed(exc, identities, X, champion_version, score=False)
        return CanaryBatch(self, sent, identities, X, champion_version)

    def answer(self) -> Pairs:
        """The process's answer to the batch sent last."""
        conn, process = self._conn, self._process
        assert conn is not None and process is not None
        waited = 0.0
        while not conn.poll(1.0):
            waited += 1.0
            if not process.is_alive():
                raise EOFError(f"the canary process exited with code {process.exitcode}")
            if waited >= ANSWER_TIMEOUT_S:
                raise TimeoutError(f"no answer from the canary process in {waited:.0f} s")
        answer: Pairs = conn.recv()
        return answer

    def failed(
        self,
        exc: Exception,
        events: Sequence[ScoredEvent],
        X: npt.NDArray[np.float64],
        champion_version: str,
        score: bool = True,
    ) -> Pairs:
        """Score here what the process could not; the process starts again after
        ``RESTART_AFTER_S`` (batches are scored here meanwhile)."""
        self.failures += 1
        self._retry_at = time.monotonic() + RESTART_AFTER_S
        log.error(
            "the canary %s's process failed (%r); its %d event(s) of this batch are scored in "
            "the worker, and so are the next batches' for %.0f s, then the process starts again",
            self.model.version,
            exc,
            len(events),
            RESTART_AFTER_S,
        )
        self.close()
        if not score:
            return []
        return score_rows(self.model, self.emit_features, events, X, champion_version)

    def close(self) -> None:
        """Stop the process (closing its pipe ends it; killed if it does not end at once)."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(0.5)
            if process.is_alive():
                process.kill()
                process.join(1.0)
