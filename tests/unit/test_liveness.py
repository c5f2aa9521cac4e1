"""Liveness: which part of the worker is stalled, for how long, and when the worker must exit."""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.monitoring.liveness import Liveness


@dataclass
class Stage:
    name: str
    last_progress: float


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def liveness(
    clock: Clock,
    stages: list[Stage],
    waiting: dict[str, dict[str, int]],
    outputs: tuple[int, float] = (0, 0.0),
    checkpoints: tuple[bool, float] = (False, 0.0),
    challenger: tuple[int, float, str | None] | None = None,
) -> Liveness:
    return Liveness(
        stages=lambda: stages,
        waiting=lambda stage: waiting.get(stage.name, {}),
        outputs=lambda: outputs,
        checkpoints=lambda: checkpoints,
        challenger=(lambda: challenger) if challenger is not None else None,
        stall_s=30.0,
        exit_s=120.0,
        commit_interval_s=2.8,
        clock=clock,
    )


def test_a_stage_with_nothing_to_read_is_not_stalled_however_long_it_waits() -> None:
    clock = Clock(1000.0)
    live = liveness(clock, [Stage("customer", 0.0)], {"customer": {"tx[0]": 0}})
    assert live.stalls() == []
    assert live.readiness() == {"ok": True, "detail": "making progress"}


def test_a_stage_with_input_and_no_batch_for_the_timeout_is_stalled() -> None:
    clock = Clock(100.0)
    stages = [Stage("customer", 70.5), Stage("scoring", 99.0)]
    waiting = {"customer": {"tx[1]": 1200, "tx[0]": 34, "tx[2]": 0}, "scoring": {"by[0]": 5}}
    live = liveness(clock, stages, waiting)
    assert live.stalls() == []  # 29.5 s: not yet
    clock.now = 101.0
    (stall,) = live.stalls()
    assert stall.what == "customer stage" and stall.for_s == 30.5 and stall.critical
    assert stall.detail == (
        "no batch taken for 30 s with 1,234 record(s) to read: tx[0] 34, tx[1] 1,200"
    )
    ready = live.readiness()
    assert ready["ok"] is False and ready["detail"].startswith("customer stage: no batch")
    assert live.must_exit(live.stalls()) is None  # 30.5 s < 120 s
    clock.now = 190.5
    fatal = live.must_exit(live.stalls())
    assert fatal is not None and fatal.what == "customer stage" and fatal.for_s == 120.0


def test_outputs_stall_only_with_records_pending() -> None:
    clock = Clock(500.0)
    assert liveness(clock, [], {}, outputs=(0, 100.0)).stalls() == []
    (stall,) = liveness(clock, [], {}, outputs=(17, 460.0)).stalls()
    assert (stall.what, stall.for_s) == ("outputs", 40.0)
    assert stall.detail.startswith(
        "17 record(s) queued in the producer, no delivery report for 40 s"
    )
    assert liveness(clock, [], {}, outputs=(17, 470.5)).stalls() == []


def test_checkpoints_get_the_commit_interval_on_top_of_the_timeout() -> None:
    clock = Clock(1000.0)
    assert liveness(clock, [], {}, checkpoints=(True, 967.5)).stalls() == []  # 32.5 < 32.8
    (stall,) = liveness(clock, [], {}, checkpoints=(True, 967.0)).stalls()
    assert (stall.what, stall.for_s) == ("checkpoints", 33.0)
    assert liveness(clock, [], {}, checkpoints=(False, 0.0)).stalls() == []


def test_a_stalled_or_dead_challenger_is_reported_but_never_fatal() -> None:
    clock = Clock(1000.0)
    (slow,) = liveness(clock, [], {}, challenger=(3, 900.0, None)).stalls()
    assert (slow.what, slow.critical, slow.detail) == (
        "challenger",
        False,
        "3 batch(es) waiting, none scored for 100 s",
    )
    (dead,) = liveness(clock, [], {}, challenger=(0, 0.0, "process exited with -9")).stalls()
    assert (dead.what, dead.critical, dead.detail) == (
        "challenger",
        False,
        "process exited with -9",
    )
    live = liveness(clock, [], {}, challenger=(3, 0.0, None))
    assert live.readiness()["ok"] is True
    assert live.must_exit(live.stalls()) is None
    assert liveness(clock, [], {}, challenger=(0, 0.0, None)).stalls() == []  # nothing waiting
