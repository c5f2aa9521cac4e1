"""The crash-replay path of the two stages, without a broker: what a kill -9 makes them do.

After a kill, stage 1 re-reads ``transactions`` from its last commit. Its customer state already
holds those offsets, so it counts nothing twice, but it forwards every re-read event to
``transactions.by-terminal`` again, at NEW offsets there. Stage 2 then sees each such event twice
under two offsets; its offset check cannot tell, so it must recognise the event itself, or the
terminal windows of every later event on that terminal count it twice. (The kill test found that:
TERMINAL_ID_NB_TX_* one too high for the events a week after each kill, until
``TerminalState.apply`` skipped an event it already holds.)
"""

from __future__ import annotations

import numpy as np
import orjson

from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.state import Retention
from stream_app.io.deadletter import SourcePosition
from stream_app.pipeline.customer_stage import CustomerStage, InputRecord
from stream_app.pipeline.scoring_stage import ScoringStage
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.registry import resolve_version
from tests.faults.harness import make_stream

BATCH = 100
CRASH_AFTER_BATCHES = (8, 18)  # batches of ~1 day: crashes on day 9 and day 19 of 30


def test_replayed_forwards_are_counted_once(models_dir, champion_version):
    stream = make_stream(3000, seed=9, n_customers=50, n_terminals=20)  # ~30 days
    model = ScoringModel.load(resolve_version(models_dir, champion_version))
    retention = Retention.for_lateness(3600.0)
    customer = CustomerStage({}, retention, 3600.0, 64 * 1024)
    terminal_table: dict = {}
    scoring = ScoringStage(terminal_table, model, retention, "labels", 64 * 1024, True)
    inputs = [
        InputRecord(r.key.encode(), r.value, SourcePosition("transactions", 0, offset))
        for offset, r in enumerate(stream.records)
    ]
    by_terminal_offset = 0
    scored: dict[str, list[list[float]]] = {}

    def run(batch: list[InputRecord]) -> None:
        nonlocal by_terminal_offset
        forwards = []
        for fwd in customer.process(batch).forwards:
            forwards.append(
                InputRecord(
                    fwd.key, fwd.value, SourcePosition("by-terminal", 0, by_terminal_offset)
                )
            )
            by_terminal_offset += 1
        for _, value in scoring.process(forwards).scores:
            env = orjson.loads(value)
            scored.setdefault(env["event_id"], []).append(
                [env["features"][n] for n in FEATURE_NAMES]
            )

    batches = [inputs[i : i + BATCH] for i in range(0, len(inputs), BATCH)]
    for index, batch in enumerate(batches):
        run(batch)
        if index in CRASH_AFTER_BATCHES:
            run(batch)  # the restart re-reads the batch whose offsets were not committed

    offline = stream.offline
    replayed = {eid for eid, rows in scored.items() if len(rows) > 1}
    assert len(replayed) == BATCH * len(CRASH_AFTER_BATCHES)
    wrong = [
        eid
        for eid, rows in scored.items()
        if any(not np.array_equal(row, offline[eid]) for row in rows)
    ]
    held = [eid for value in terminal_table.values() for eid in value["i"]]
    twice = len(held) - len(set(held))
    assert (twice, len(wrong)) == (0, 0), (
        f"{twice} events held twice by their terminal; {len(wrong)} events scored with "
        "features unequal to the offline ones"
    )
