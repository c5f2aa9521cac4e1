"""Where the batch engine's stages stand (:class:`EngineStatus`, a base of
:class:`~stream_app.pipeline.engine.BatchEngine`): the positions they have taken, whether a
partition has been read to its end, what is left to read, and the views of it that logs,
``/readyz`` and the metrics show. It only reads the engine's queues and positions."""

from __future__ import annotations

import time
from typing import Any

from stream_app.pipeline.stage_runner import FetchView, StageRunner


class EngineStatus:
    """Read-only queries over the stages' queues, fetch positions and commits."""

    stages: list[StageRunner]
    view: FetchView | None
    fetched: dict[Any, int]  # tp -> fetch position when its last chunk came
    chunk_answers: dict[Any, int]  # tp -> when the fetch answer with its last chunk came (ms)
    committed_positions: dict[Any, int]

    def _caught_up(self, tp: Any) -> bool | None:
        """True: everything up to ``tp``'s end has been handed over; False: more to fetch, or
        more may have come since the end was read; None: not known yet (no fetch has answered
        for it).

        An end offset is only as new as the fetch answer that brought it. A partition whose last
        answer brought records is left out of the consumer's fetches until they are handed over
        (aiokafka, like the Java consumer, does not fetch a partition with records waiting), so
        the answers that came meanwhile for the other partitions may be newer than its end: a
        forward fetched in one of them can come from a transaction published after a label this
        partition's end does not reach yet. So a partition counts as read to its end only once
        an answer newer than the one that brought its last records says so (usually the next
        fetch).
        """
        view = self.view
        if view is None:
            return True
        # The answer's time before its end: the consumer's thread may record a newer answer in
        # between, and an end newer than the time read only makes this answer more cautious.
        answered = view.answered_at(tp)
        fetched = self.fetched.get(tp)
        _, end = view.fetch_state(tp)
        if fetched is None or end is None:
            return None
        if fetched < end:
            return False
        brought = self.chunk_answers.get(tp)
        return brought is None or answered is None or answered > brought

    def positions(self) -> dict[Any, int]:
        """Per partition, the offset after the last record a stage has taken (and handled)."""
        return {
            tp: q.taken_offset
            for runner in self.stages
            for tp, q in runner.queues.items()
            if q.taken_offset is not None
        }

    def behind(self) -> bool:
        """Whether a stage has taken records that no commit covers yet."""
        committed = self.committed_positions
        return any(committed.get(tp) != offset for tp, offset in self.positions().items())

    def waiting(self, runner: StageRunner) -> dict[str, int]:
        """``topic[partition]`` -> records ``runner`` has to read there: buffered, plus what the
        broker is known to hold beyond what was fetched."""
        out: dict[str, int] = {}
        view = self.view
        for tp, q in runner.queues.items():
            more = 0
            if view is not None:
                fetched = self.fetched.get(tp)
                _, end = view.fetch_state(tp)
                if fetched is not None and end is not None and end > fetched:
                    more = end - fetched
            out[f"{tp.topic}[{tp.partition}]"] = q.buffered + more
        return out

    def stage_times(self) -> dict[str, dict[str, float]]:
        """Per stage: seconds handling batches, waiting with nothing to read, and waiting with
        records the alignment held back (since start)."""
        return {
            r.name: {"busy_s": r.busy_s, "idle_s": r.idle_s, "held_s": r.held_s}
            for r in self.stages
        }

    def describe(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every stage partition's queue as the alignment sees it (logs, ``/readyz``)."""
        clock = time.monotonic() if now is None else now
        out = []
        view = self.view
        for runner in self.stages:
            for tp, q in runner.queues.items():
                position, end = view.fetch_state(tp) if view is not None else (None, None)
                out.append(
                    {
                        "stage": runner.name,
                        "topic": tp.topic,
                        "partition": tp.partition,
                        "buffered": q.buffered,
                        "taken_offset": q.taken_offset,
                        "committed": self.committed_positions.get(tp),
                        "fetched": self.fetched.get(tp),
                        "position": position,
                        "end": end,
                        "caught_up": self._caught_up(tp),
                        "last_key": q.last_key,
                        "taken_key": q.taken_key,
                        "empty_for_s": None
                        if q.empty_since is None
                        else round(clock - q.empty_since, 3),
                    }
                )
        return out

    def lag(self) -> dict[Any, int]:
        """Per assigned stage partition: records between the end offset and what was taken."""
        out: dict[Any, int] = {}
        view = self.view
        if view is None:
            return out
        for runner in self.stages:
            for tp, q in runner.queues.items():
                _, end = view.fetch_state(tp)
                if end is None:
                    continue
                start = q.taken_offset if q.taken_offset is not None else self.fetched.get(tp)
                if start is not None:
                    out[tp] = max(end - start, 0)
        return out
