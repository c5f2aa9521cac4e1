"""Is the worker making progress? Stalls said out loud: ``/readyz``, a metric, a log line, an exit.

A worker can look healthy (its process runs, its event loop answers ``/healthz``, it logged
"Ready") while it scores nothing: a stage that waits for a partition the broker never serves, a
producer whose records are never acknowledged, a librdkafka call that never returns. For a fraud
scorer that is the worst failure: payments go unscored and nobody is told. :class:`Liveness`
looks at the places where work can stop:

- **each stage**: it has input to read (records fetched and waiting, or a partition known to have
  more than it took) and has taken no batch for ``stall_s``;
- **the outputs**: records wait in librdkafka and no delivery report has come for ``stall_s``;
- **the checkpoints**: the stages have taken records since the last commit and no commit has
  succeeded for ``stall_s`` plus the commit interval;
- **the challenger**: jobs wait for it and it has finished none for ``stall_s``, or its process
  died (reported; the champion goes on, the challenger is restarted with a backoff).

A stall of the scoring path (the first three) makes ``/readyz`` answer 503 with the reason, sets
``stream_app_stalled{what=...}`` to 1 and logs which stage and which partitions; when it lasts
``exit_s``, the worker exits with :data:`EXIT_STALLED` (75, ``EX_TEMPFAIL``) so that its
supervisor restarts it (the restart re-reads from the last commit). A stalled challenger is a
``/readyz`` detail and a metric only: the champion does not depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

EXIT_STALLED = 75
"""The worker's exit code when its scoring path has made no progress for ``exit_s``
(``EX_TEMPFAIL``: try again; 70, ``EX_SOFTWARE``, is an output that failed or a bug)."""


@dataclass(frozen=True, slots=True)
class Stall:
    """Something that should move and has not, for ``for_s`` seconds."""

    what: str  # "customer stage", "scoring stage", "outputs", "checkpoints", "challenger"
    for_s: float
    detail: str
    critical: bool = True  # the scoring path (False: the challenger)


class StageView(Protocol):
    """What liveness reads of a stage (``stream_app.pipeline.engine.StageRunner``)."""

    name: str
    last_progress: float


class Liveness:
    """The worker's progress checks (see the module docstring)."""

    def __init__(
        self,
        *,
        stages: Callable[[], Iterable[Any]],
        waiting: Callable[[Any], dict[str, int]],
        outputs: Callable[[], tuple[int, float]],
        checkpoints: Callable[[], tuple[bool, float]],
        challenger: Callable[[], tuple[int, float, str | None]] | None = None,
        stall_s: float = 30.0,
        exit_s: float = 120.0,
        commit_interval_s: float = 2.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``stages()``: the stage runners; ``waiting(stage)``: partition -> records it has to
        read (buffered or known on the broker); ``outputs()``: (records pending in the producer,
        time of the last delivery report); ``checkpoints()``: (records taken since the last
        commit?, time of the last successful commit); ``challenger()``: (jobs waiting, time the
        last one finished, why it is down or None)."""
        self.stages = stages
        self.waiting = waiting
        self.outputs = outputs
        self.checkpoints = checkpoints
        self.challenger = challenger
        self.stall_s = stall_s
        self.exit_s = exit_s
        self.commit_interval_s = commit_interval_s
        self.clock = clock

    def stalls(self) -> list[Stall]:
        """Everything stalled now."""
        now = self.clock()
        out: list[Stall] = []
        for stage in self.stages():
            idle = now - stage.last_progress
            if idle < self.stall_s:
                continue
            waiting = {p: n for p, n in self.waiting(stage).items() if n > 0}
            if waiting:
                out.append(
                    Stall(
                        f"{stage.name} stage",
                        idle,
                        f"no batch taken for {idle:.0f} s with {sum(waiting.values()):,} "
                        "record(s) to read: "
                        + ", ".join(f"{p} {n:,}" for p, n in sorted(waiting.items())),
                    )
                )
        pending, last_delivery = self.outputs()
        idle = now - last_delivery
        if pending and idle >= self.stall_s:
            out.append(
                Stall(
                    "outputs",
                    idle,
                    f"{pending:,} record(s) queued in the producer, no delivery report for "
                    f"{idle:.0f} s (is the broker reachable?)",
                )
            )
        behind, since = self.checkpoints()
        idle = now - since
        if behind and idle >= self.stall_s + self.commit_interval_s:
            out.append(
                Stall(
                    "checkpoints",
                    idle,
                    f"records taken {idle:.0f} s ago and still no commit covers them (the "
                    "checkpoint waits on deliveries or a transaction)",
                )
            )
        if self.challenger is not None:
            jobs, last_done, down = self.challenger()
            idle = now - last_done
            if down is not None:
                out.append(Stall("challenger", idle, down, critical=False))
            elif jobs and idle >= self.stall_s:
                out.append(
                    Stall(
                        "challenger",
                        idle,
                        f"{jobs} batch(es) waiting, none scored for {idle:.0f} s",
                        critical=False,
                    )
                )
        return out

    def readiness(self) -> dict[str, Any]:
        """The ``/readyz`` check: ok unless the scoring path is stalled; the details either
        way."""
        stalls = self.stalls()
        critical = [s for s in stalls if s.critical]
        return {
            "ok": not critical,
            "detail": "; ".join(f"{s.what}: {s.detail}" for s in stalls) or "making progress",
        }

    def must_exit(self, stalls: Iterable[Stall]) -> Stall | None:
        """The first critical stall that has lasted ``exit_s``."""
        for stall in stalls:
            if stall.critical and stall.for_s >= self.exit_s:
                return stall
        return None
