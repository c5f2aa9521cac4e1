"""bench/profile_steps.py: parsing py-spy's collapsed stacks and the step rule table, on small
synthetic profiles whose counts are worked out by hand."""

from __future__ import annotations

import pytest

from bench.profile_steps import (
    GC,
    IDLE,
    OTHER,
    STEPS,
    Frame,
    Step,
    anywhere,
    breakdown,
    classify,
    has_native_frames,
    in_file,
    main_thread_id,
    only_thread,
    parse_frame,
    parse_line,
    parse_raw,
    thread_samples,
    under,
    with_source,
)

PID = 4242
MAIN = f"thread ({PID}): MainThread"
LOOP = (  # mode's worker starts the loop: mode frames sit at the root of every stack
    "<module> (stream_app/__main__.py:4);"
    "Worker.execute_from_commandline (mode/worker.py:264);"
    "BaseEventLoop.run_forever (asyncio/base_events.py:607);"
    "BaseEventLoop._run_once (asyncio/base_events.py:1922);"
    "Handle._run (asyncio/events.py:80)"
)
AGENT = (
    f"{LOOP};Task.__step (asyncio/tasks.py:267);"
    "Agent._execute_actor (faust/agents/agent.py:674);"
    "mode.Service._execute_task (mode/services.py:843)"
)
CUSTOMER = (
    f"{AGENT};create_app.<locals>.customer_agent (stream_app/app.py:300);"
    "CustomerStage.process (stream_app/pipeline/customer_stage.py:158)"
)
SCORING = (
    f"{AGENT};create_app.<locals>.scoring_agent (stream_app/app.py:330);"
    "ScoringStage.process (stream_app/pipeline/scoring_stage.py:100)"
)
SCORING_AGENT = SCORING[: SCORING.rindex(";")]  # the agent's own frame is the leaf
FETCH = (
    f"{LOOP};Task.__step (asyncio/tasks.py:267);"
    "mode.Service._execute_task (mode/services.py:843);"
    "FastDispatchConsumer._drain_messages (stream_app/faust_dispatch.py:220)"
)


def line(stack: str, count: int, thread: str = MAIN) -> str:
    return f"{thread};{stack} {count}"


PROFILE = [
    # idle: the loop waits in epoll (py-spy --idle)
    line(f"{LOOP[: LOOP.rindex(';')]};EpollSelector.select (selectors.py:468)", 400),
    # customer stage
    line(f"{CUSTOMER};_one (x.py:1);decode_transaction (stream_app/io/codecs.py:190)", 50),
    line(
        f"{CUSTOMER};CustomerStage._one (stream_app/pipeline/customer_stage.py:190);"
        "CustomerState.apply (stream_app/features/state.py:120)",
        30,
    ),
    line(
        f"{CUSTOMER};CustomerStage._one (stream_app/pipeline/customer_stage.py:180);"
        "Table.get (faust/tables/table.py:80);FastUserDict.get (mode/utils/collections.py:400)",
        5,
    ),
    line(
        f"{CUSTOMER};CustomerStage._one (stream_app/pipeline/customer_stage.py:222);"
        "encode_forward (stream_app/pipeline/customer_stage.py:117)",
        12,
    ),
    line(f"{CUSTOMER};CustomerStage._one (stream_app/pipeline/customer_stage.py:176)", 3),
    # a table write from inside the stage: changelog, though under the customer stage
    line(
        f"{CUSTOMER};ChangelogWriter.__call__ (stream_app/outputs/changelog.py:70);"
        "OutputPublisher.send (stream_app/outputs/publisher.py:100)",
        20,
    ),
    # scoring stage
    line(
        f"{SCORING};ScoringStage.process (stream_app/pipeline/scoring_stage.py:113)",
        9,
    ),  # the orjson.loads line (with its source)
    line(
        f"{SCORING};ScoringModel.score_batch (stream_app/scoring/model.py:106);"
        "ScoringModel.predict (stream_app/scoring/model.py:102);"
        "Pipeline.predict_proba (sklearn/pipeline.py:700)",
        25,
    ),
    line(
        f"{SCORING};ScoringModel.score_batch (stream_app/scoring/model.py:125);"
        "feature_hashes (stream_app/scoring/model.py:58)",
        15,
    ),
    line(f"{SCORING};build_envelopes (stream_app/scoring/envelope.py:50)", 10),
    line(
        f"{SCORING};ScoringStage.process.<locals>.<listcomp> "
        "(stream_app/pipeline/scoring_stage.py:160)",
        8,
    ),  # the orjson.dumps line
    line(
        f"{SCORING};TerminalState.features (stream_app/features/state.py:305)",
        14,
    ),
    line(
        f"{SCORING};ScoringStage._label (stream_app/pipeline/scoring_stage.py:230);"
        "decode_label (stream_app/io/codecs.py:210)",
        6,
    ),  # decode, though in _label
    line(f"{SCORING};ScoringStage._label (stream_app/pipeline/scoring_stage.py:240)", 4),
    line(
        f"{SCORING_AGENT};DriftMonitor.observe (stream_app/monitoring/drift_monitor.py:60)",
        7,
    ),
    line(
        f"{SCORING_AGENT};ShadowScorer.offer (stream_app/scoring/shadow.py:190)",
        2,
    ),
    line(
        f"{SCORING_AGENT};AtLeastOnceSink.finish "
        "(stream_app/outputs/kafka_transactions.py:120);"
        "OutputPublisher.delivered (stream_app/outputs/publisher.py:140)",
        11,
    ),
    line(f"{SCORING_AGENT};to_record (stream_app/app.py:80)", 6),
    # the agent resumes take_events: Faust, though app.py is on the stack
    line(
        f"{SCORING_AGENT};Stream.take_events (faust/streams.py:380);"
        "Event.ack (faust/events.py:150);Consumer.ack (faust/transport/consumer.py:700)",
        17,
    ),
    # the fetch loop: delivery into a stream is per-event, the fetch itself is the consumer
    line(
        f"{FETCH};deliver (stream_app/faust_dispatch.py:140);"
        "Conductor.on_message (faust/transport/conductor.py:280)",
        13,
    ),
    line(f"{FETCH};AIOKafkaConsumer.getmany (aiokafka/consumer/consumer.py:1200)", 19),
    line(f"{LOOP};Task.__step (asyncio/tasks.py:267)", 5),
    line(f"{LOOP};Service._execute_task (mode/services.py:850)", 3),
    line("<module> (somewhere/else.py:1)", 1),
    # another thread: never counted in the main thread's table
    line("Thread._bootstrap (threading.py:1002)", 99, thread="thread (4250): shadow_0"),
]

SOURCE = {
    (
        "stream_app/pipeline/scoring_stage.py",
        113,
    ): "        fwd = orjson.loads(record.value or b'')\n",
    ("stream_app/pipeline/scoring_stage.py", 160): "(e.customer_id.encode(), orjson.dumps(env))\n",
}


def source(file: str, line_no: int) -> str:
    return SOURCE.get((file, line_no), "")


EXPECTED = {
    IDLE: 400,
    "garbage collection": 0,
    "decode + validate": 56,
    "forward decode (scoring stage orjson.loads)": 9,
    "changelog writes": 20,
    "dead letters": 0,
    "forward encode": 12,
    "predict_proba": 25,
    "explanations, uncertainty, feature hash": 15,
    "envelope build + orjson.dumps": 18,
    "customer stage: state + features": 35,
    "customer stage: rest": 3,
    "terminal stage: state + features + labels": 18,
    "terminal stage: rest": 0,
    "drift": 7,
    "shadow hand-off": 2,
    "output produce": 11,
    "metrics, stats, logs": 0,
    "agent loop + to_record (app.py)": 6,
    "batch engine: queues, alignment": 0,
    "Faust per-event machinery": 30,
    "Faust consumer / fetch": 19,
    "Faust other (services, timers, tables, web)": 3,
    "asyncio event loop": 5,
    OTHER: 1,
}


def main_stacks() -> list:
    stacks = parse_raw(PROFILE)
    return with_source(only_thread(stacks, main_thread_id(stacks, PID)), source)


def test_parse_frame_python_native_and_bare() -> None:
    assert parse_frame("Handle._run (asyncio/events.py:80)") == Frame(
        "Handle._run", "asyncio/events.py", 80
    )
    assert parse_frame("<module> (t.py:17)") == Frame("<module>", "t.py", 17)
    native = parse_frame("gc_collect_main (libpython3.11.so.1.0)")
    assert native == Frame("gc_collect_main", "libpython3.11.so.1.0", None)
    assert not native.is_python
    assert parse_frame("0x7f73a284524a (libc.so.6)").file == "libc.so.6"
    assert parse_frame("process_events") == Frame("process_events")
    # a parenthesis inside the function name is kept; the location is the last (...)
    assert parse_frame("f (wrapped) (pkg/m.py:3)") == Frame("f (wrapped)", "pkg/m.py", 3)


def test_parse_line_threads_and_counts() -> None:
    stack = parse_line("thread (5470): MainThread;main (t.py:13);burn (t.py:4) 30\n")
    assert stack is not None
    assert (stack.thread_id, stack.thread_name, stack.count) == (5470, "MainThread", 30)
    assert [f.function for f in stack.frames] == ["main", "burn"]
    native = parse_line("thread (5533);0x7f (libc.so.6);gc_collect_main (libpython3.11.so) 2")
    assert native is not None
    assert (native.thread_id, native.thread_name, len(native.frames)) == (5533, None, 2)
    hexa = parse_line("thread (0x7F1E2D4B3740): helper;run (x.py:1) 1")
    assert hexa is not None and hexa.thread_id == 0x7F1E2D4B3740
    empty = parse_line("thread (5470): MainThread 4")
    assert empty is not None and (empty.frames, empty.count) == ((), 4)
    no_threads = parse_line("main (t.py:13);burn (t.py:4) 7")
    assert no_threads is not None and no_threads.thread_id is None
    assert len(no_threads.frames) == 2
    assert parse_line("   \n") is None
    with pytest.raises(ValueError):
        parse_line("main (t.py:13);burn (t.py:4)")


def test_threads_and_the_main_one() -> None:
    stacks = parse_raw(PROFILE)
    per_thread = thread_samples(stacks)
    assert per_thread[4250] == ("shadow_0", 99)
    assert per_thread[PID] == ("MainThread", sum(EXPECTED.values()))
    assert main_thread_id(stacks, PID) == PID
    assert main_thread_id(stacks) == PID  # by its name
    unnamed = parse_raw(["thread (7);a (a.py:1) 1", "thread (5);b (b.py:1) 2"])
    assert main_thread_id(unnamed) == 5  # the lowest id


def test_every_sample_lands_in_its_step() -> None:
    result = breakdown(main_stacks(), cpu_seconds=2.0, transactions=1000)
    counts = {row.step: row.samples for row in result.rows}
    assert counts == EXPECTED
    assert [row.step for row in result.rows] == [s.name for s in STEPS] + [OTHER]
    assert result.total == 695
    assert result.idle == 400
    assert result.busy == 295


def test_shares_and_microseconds_per_transaction() -> None:
    # 2.0 CPU s over 1,000 transactions = 2,000 µs each, split over the 295 busy samples.
    result = breakdown(main_stacks(), cpu_seconds=2.0, transactions=1000)
    rows = {row.step: row for row in result.rows}
    idle = rows[IDLE]
    assert idle.share_all == pytest.approx(400 / 695)
    assert idle.share_busy is None and idle.us_per_tx is None
    decode = rows["decode + validate"]
    assert decode.share_all == pytest.approx(56 / 695)
    assert decode.share_busy == pytest.approx(56 / 295)
    assert decode.us_per_tx == pytest.approx(56 / 295 * 2000.0)
    assert sum(r.us_per_tx or 0.0 for r in result.rows) == pytest.approx(2000.0)
    no_cpu = breakdown(main_stacks())
    assert all(r.us_per_tx is None for r in no_cpu.rows)


def test_source_lines_decide_the_orjson_steps() -> None:
    # Without the source, the orjson.loads / orjson.dumps lines are the scoring stage's own.
    stacks = only_thread(parse_raw(PROFILE), PID)
    counts = {row.step: row.samples for row in breakdown(stacks).rows}
    assert counts["forward decode (scoring stage orjson.loads)"] == 0
    assert counts["envelope build + orjson.dumps"] == 10
    assert counts["terminal stage: rest"] == 17


def test_top_leaves_are_innermost_python_frames() -> None:
    result = breakdown(main_stacks(), top=3)
    assert result.top_leaves == [
        ("EpollSelector.select (selectors.py)", 400),
        ("decode_transaction (stream_app/io/codecs.py)", 50),
        ("CustomerState.apply (stream_app/features/state.py)", 30),
    ]
    native = parse_raw(["thread (1);main (m.py:3);gc_collect_main (libpython3.11.so) 5"])
    assert breakdown(native).top_leaves == [("main (m.py)", 5)]


def test_gc_frames_win_wherever_they_are_triggered() -> None:
    stacks = parse_raw(
        [
            line(
                f"{CUSTOMER};decode_transaction (stream_app/io/codecs.py:190);"
                "gc_collect_main (libpython3.11.so.1.0)",
                3,
            ),
            line(f"{CUSTOMER};decode_transaction (stream_app/io/codecs.py:190)", 2),
        ]
    )
    counts = {row.step: row.samples for row in breakdown(stacks).rows}
    assert counts["garbage collection"] == 3
    assert counts["decode + validate"] == 2


def test_the_table_is_ordered_first_match_wins() -> None:
    frames = parse_frame("a (pkg/a.py:1)"), parse_frame("b (pkg/b.py:2)")
    steps = [
        Step("b under a", under(in_file("pkg/a.py"), in_file("pkg/b.py"))),
        Step("any a", anywhere(in_file("pkg/a.py"))),
    ]
    assert classify(frames, steps) == "b under a"
    assert classify(frames[::-1], steps) == "any a"  # b is not under a here
    assert classify(frames, steps[::-1]) == "any a"
    assert classify((parse_frame("c (pkg/c.py:1)"),), steps) == OTHER


def test_full_filenames_match_too() -> None:
    frames = (
        parse_frame(
            "decode_transaction (/x/lib/python3.11/site-packages/stream_app/io/codecs.py:190)"
        ),
    )
    assert classify(frames) == "decode + validate"


def test_with_source_reads_each_line_once() -> None:
    calls: list[tuple[str, int]] = []

    def counting(file: str, line_no: int) -> str:
        calls.append((file, line_no))
        return "  x = 1  \n"

    stacks = parse_raw(["a (m.py:1);b (m.py:2) 1", "a (m.py:1);gc (libpython.so) 1"])
    annotated = with_source(stacks, counting)
    assert sorted(calls) == [("m.py", 1), ("m.py", 2)]
    assert annotated[0].frames[0].code == "x = 1"
    assert annotated[1].frames[1].code == ""  # native frames have no source


def test_a_step_the_profile_cannot_show_is_omitted() -> None:
    stacks = main_stacks()
    assert not has_native_frames(stacks)
    result = breakdown(stacks, omit={GC})
    assert GC not in [row.step for row in result.rows]
    assert len(result.rows) == len(STEPS)  # every step but GC, and OTHER
    native = parse_raw(["thread (1);main (m.py:3);gc_collect_main (libpython3.11.so) 5"])
    assert has_native_frames(native)
    with pytest.raises(ValueError):
        breakdown(native, omit={GC})
