"""Where a py-spy profile's samples go: parse collapsed stacks, classify each into one step.

Pure functions, no I/O beyond what the caller hands in (``bench/profile.py`` runs the worker and
py-spy; this module only reads what py-spy wrote). Tested in ``tests/unit/test_profile_steps.py``.

**Input**: py-spy's ``--format raw`` output, one distinct stack per line::

    thread (4242): MainThread;<module> (stream_app/__main__.py:3);...;leaf (faust/streams.py:88) 17

Frames are ``;``-separated, root first, leaf last; the number after the last space is how many
samples had exactly that stack. With ``--threads`` the first frame is ``thread (TID)`` or
``thread (TID): NAME``, TID the OS thread id (the main thread's is the process id). A frame is
``function (file:line)``; native frames (``--native``) are ``function (library)`` with no line.

**Classification**: :data:`STEPS` is an ordered table of ``(step name, predicate over the whole
stack)``; a sample belongs to the **first** step whose predicate holds, and to :data:`OTHER` when
none does. The order is the rule: specific, leaf-side work first (idle, GC, the stages' own
steps, outputs), the frameworks that every stack passes through last (the stages run *inside*
Faust's agent and asyncio's loop, so "any Faust frame" would match almost everything). To move
work between steps, edit or reorder the table; each step's ``doc`` says what it takes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace

THREAD_FRAME = re.compile(r"^thread \((?P<tid>0x[0-9A-Fa-f]+|\d+)\)(?::\s*(?P<name>.*))?$")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: ``function (file:line)``; ``code`` is its source line when the caller knows it
    (:func:`with_source`), else empty."""

    function: str
    file: str = ""
    line: int | None = None
    code: str = ""

    @property
    def is_python(self) -> bool:
        """A Python frame (a ``.py`` file or a generated one like ``<string>``), not native."""
        return self.file.endswith(".py") or self.file.startswith("<")

    def label(self) -> str:
        """``function (file)``, without the line: how leaf functions are counted."""
        return f"{self.function} ({self.file})" if self.file else self.function


@dataclass(frozen=True, slots=True)
class Stack:
    """One line of the raw file: a thread's stack (root first) and its sample count."""

    frames: tuple[Frame, ...]
    count: int
    thread_id: int | None = None
    thread_name: str | None = None


def parse_frame(text: str) -> Frame:
    """``"Class.method (pkg/mod.py:12)"`` → Frame; ``"gc_collect_main (libpython3.11.so)"`` →
    a native frame without a line; text without a ``(...)`` suffix → a bare function name."""
    text = text.strip()
    if text.endswith(")") and " (" in text:
        function, location = text[:-1].rsplit(" (", 1)
        file, sep, line = location.rpartition(":")
        if sep and line.isdigit():
            return Frame(function, file, int(line))
        return Frame(function, location)
    return Frame(text)


def parse_line(line: str) -> Stack | None:
    """One raw line → Stack; None for a blank line. Raises ValueError on a line without a count."""
    line = line.rstrip("\n")
    if not line.strip():
        return None
    stack_text, sep, count_text = line.rpartition(" ")
    if not sep or not count_text.isdigit():
        raise ValueError(f"not a collapsed-stack line (no sample count at its end): {line[:120]!r}")
    parts = stack_text.split(";") if stack_text else []
    thread_id: int | None = None
    thread_name: str | None = None
    if parts:
        match = THREAD_FRAME.match(parts[0])
        if match:
            tid = match.group("tid")
            thread_id = int(tid, 16) if tid.lower().startswith("0x") else int(tid)
            thread_name = match.group("name") or None
            parts = parts[1:]
    frames = tuple(parse_frame(p) for p in parts if p)
    return Stack(frames, int(count_text), thread_id, thread_name)


def parse_raw(lines: Iterable[str]) -> list[Stack]:
    """Every stack of a raw py-spy file (its lines)."""
    return [s for s in (parse_line(line) for line in lines) if s is not None]


def thread_samples(stacks: Iterable[Stack]) -> dict[int | None, tuple[str | None, int]]:
    """Samples per thread id: ``{tid: (name, samples)}``."""
    out: dict[int | None, tuple[str | None, int]] = {}
    for s in stacks:
        name, n = out.get(s.thread_id, (None, 0))
        out[s.thread_id] = (name or s.thread_name, n + s.count)
    return out


def main_thread_id(stacks: Sequence[Stack], pid: int | None = None) -> int | None:
    """The main thread's id: ``pid`` when given (Linux: the main thread's tid is the pid), else
    the thread named ``MainThread``, else the lowest thread id (the first thread created)."""
    if pid is not None:
        return pid
    for s in stacks:
        if s.thread_name == "MainThread":
            return s.thread_id
    ids = [s.thread_id for s in stacks if s.thread_id is not None]
    return min(ids) if ids else None


def has_native_frames(stacks: Iterable[Stack]) -> bool:
    """Whether the profile was recorded with ``--native`` (some frame is not Python's)."""
    return any(not f.is_python for s in stacks for f in s.frames)


def only_thread(stacks: Iterable[Stack], thread_id: int | None) -> list[Stack]:
    """The stacks of one thread."""
    return [s for s in stacks if s.thread_id == thread_id]


def with_source(stacks: Iterable[Stack], source: Callable[[str, int], str]) -> list[Stack]:
    """Stacks whose Python frames carry their source line, ``source(file, line)`` (stripped; ""
    when unknown). Rules that look at code (``orjson.dumps`` on a line) need it."""
    cache: dict[tuple[str, int], str] = {}
    out = []
    for s in stacks:
        frames = []
        for f in s.frames:
            if f.line is not None and f.is_python and not f.code:
                key = (f.file, f.line)
                if key not in cache:
                    cache[key] = source(f.file, f.line).strip()
                f = replace(f, code=cache[key])
            frames.append(f)
        out.append(replace(s, frames=tuple(frames)))
    return out


# --------------------------------------------------------------------------------------------
# Predicates: tests of one frame, and of a whole stack built from them
# --------------------------------------------------------------------------------------------

FrameTest = Callable[[Frame], bool]
StackTest = Callable[[Sequence[Frame]], bool]


def _file_matches(file: str, path: str) -> bool:
    """``path`` names a file (``pkg/mod.py``) or, ending in ``/``, a directory (``faust/``);
    py-spy's short names (``faust/streams.py``) and full ones (``/x/site-packages/faust/…``)
    both match."""
    if path.endswith("/"):
        return file.startswith(path) or f"/{path}" in file
    return file == path or file.endswith(f"/{path}")


def in_file(*paths: str) -> FrameTest:
    """A frame in any of these files or directories."""
    return lambda f: any(_file_matches(f.file, p) for p in paths)


def function(path: str, *names: str) -> FrameTest:
    """A frame of one of these functions (qualified as py-spy shows them, ``Class.method``, or
    the last part alone) in the file ``path``."""
    wanted = set(names)

    def test(f: Frame) -> bool:
        return _file_matches(f.file, path) and (
            f.function in wanted or f.function.rsplit(".", 1)[-1] in wanted
        )

    return test


def code_has(path: str, *texts: str) -> FrameTest:
    """A frame in ``path`` whose source line contains one of ``texts`` (see :func:`with_source`)."""
    return lambda f: _file_matches(f.file, path) and any(t in f.code for t in texts)


def native(*names: str) -> FrameTest:
    """A native frame (``--native``) of one of these C functions (prefixes)."""
    return lambda f: not f.is_python and any(f.function.startswith(n) for n in names)


def either(*tests: FrameTest) -> FrameTest:
    """A frame that passes any of ``tests``."""
    return lambda f: any(t(f) for t in tests)


def anywhere(*tests: FrameTest) -> StackTest:
    """Some frame of the stack passes one of ``tests``."""
    test = either(*tests)
    return lambda frames: any(test(f) for f in frames)


def under(outer: FrameTest, inner: FrameTest) -> StackTest:
    """A frame passing ``inner`` runs inside (leafward of, or is) a frame passing ``outer``."""

    def test(frames: Sequence[Frame]) -> bool:
        for i, f in enumerate(frames):
            if outer(f):
                return any(inner(g) for g in frames[i:])
        return False

    return test


def one_of(*tests: StackTest) -> StackTest:
    """A stack that passes any of ``tests``."""
    return lambda frames: any(t(frames) for t in tests)


def inside_loop(*tests: FrameTest) -> StackTest:
    """Some frame that runs inside the event loop's innermost ``_run_once`` (a callback or a
    task step, not the frames that started the loop) passes one of ``tests``; a stack without
    an event loop is looked at whole. Frameworks' start-up frames (mode's
    ``Worker.execute_from_commandline``) sit at the root of every stack of the loop."""
    test = either(*tests)

    def check(frames: Sequence[Frame]) -> bool:
        start = 0
        for i in range(len(frames) - 1, -1, -1):
            if LOOP_DISPATCH(frames[i]):
                start = i + 1
                break
        return any(test(f) for f in frames[start:])

    return check


def leaf_python(test: FrameTest) -> StackTest:
    """The innermost Python frame passes ``test`` (native frames below it are skipped)."""

    def check(frames: Sequence[Frame]) -> bool:
        for f in reversed(frames):
            if f.is_python:
                return test(f)
        return False

    return check


def innermost(test: FrameTest, among: FrameTest) -> StackTest:
    """Of the frames passing ``among``, the innermost passes ``test``."""

    def check(frames: Sequence[Frame]) -> bool:
        for f in reversed(frames):
            if among(f):
                return test(f)
        return False

    return check


# --------------------------------------------------------------------------------------------
# The rule table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """A step of the worker's work, and the test that puts a sample in it."""

    name: str
    matches: StackTest = field(repr=False)
    doc: str = ""


LOOP_DISPATCH = function("asyncio/base_events.py", "BaseEventLoop._run_once")
IDLE = "idle: event loop waiting in epoll"
GC = "garbage collection"
OTHER = "other"

CUSTOMER = "stream_app/pipeline/customer_stage.py"
SCORING = "stream_app/pipeline/scoring_stage.py"
MODEL = "stream_app/scoring/model.py"
APP = "stream_app/app.py"
TABLE_ACCESS = in_file(
    "stream_app/features/",
    "stream_app/pipeline/state_store.py",
    "stream_app/faust_ext/tables.py",
    "faust/tables/",
    "faust/stores/",
    "mode/utils/",
    "<frozen _collections_abc>",
)
FORWARD = "stream_app/pipeline/forward.py"
ENGINE = in_file(
    "stream_app/pipeline/engine.py",
    "stream_app/pipeline/engine_status.py",
    "stream_app/pipeline/stage_runner.py",
    "stream_app/pipeline/buffers.py",
)
FRAMEWORK = in_file("stream_app/", "faust/", "mode/", "aiokafka/", "kafka/")
FAUST_PER_EVENT = either(
    in_file(
        "faust/streams.py",
        "faust/events.py",
        "faust/transport/conductor.py",
        "faust/agents/",
        "faust/sensors/",
        "faust/channels.py",
        "faust/topics.py",
    ),
    function("stream_app/faust_dispatch.py", "deliver", "Resumed.__await__"),
    function("stream_app/faust_ext/dispatch.py", "deliver", "Resumed.__await__"),
)

STEPS: list[Step] = [
    Step(
        IDLE,
        leaf_python(function("selectors.py", "select")),
        "the innermost Python frame is a selector's select() (the event loop waiting for I/O or "
        "a timer; with py-spy --idle, also samples the thread spent sleeping there)",
    ),
    Step(
        GC,
        anywhere(native("gc_collect", "collect_with_callback", "collect_generations")),
        "a native gc_collect* frame (visible only with py-spy --native), wherever it was triggered",
    ),
    Step(
        "decode + validate",
        anywhere(in_file("stream_app/io/codecs.py", "stream_app/io/input_checks.py")),
        "any frame in stream_app/io/codecs.py (orjson.loads, fastjsonschema, time parsing under "
        "it): transactions in the customer stage, labels in the scoring stage",
    ),
    Step(
        "forward decode (scoring stage orjson.loads)",
        anywhere(code_has(SCORING, "orjson.loads"), function(FORWARD, "decode_forward")),
        "a scoring_stage.py line that calls orjson.loads (the repartitioned record), "
        "pipeline/forward.decode_forward",
    ),
    Step(
        "changelog writes",
        anywhere(
            in_file("stream_app/outputs/changelog.py"),
            function("stream_app/pipeline/state_store.py", "StateStore.flush"),
            function("stream_app/faust_ext/tables.py", "FaustTableWriter.write"),
        ),
        "stream_app/outputs/changelog.py (per batch, before); StateStore.flush and "
        "FaustTableWriter.write (once per checkpoint: state encode, store write, the changelog "
        "record's produce)",
    ),
    Step(
        "dead letters",
        anywhere(
            in_file("stream_app/io/deadletter.py"),
            function(APP, "send_dead_letters"),
            function(CUSTOMER, "key_rejection", "duplicate_rejection", "too_late_rejection"),
        ),
        "stream_app/io/deadletter.py, app.send_dead_letters, the customer stage's *_rejection",
    ),
    Step(
        "forward encode",
        anywhere(function(CUSTOMER, "encode_forward"), function(FORWARD, "encode_forward")),
        "customer_stage.encode_forward / pipeline/forward.encode_forward (the repartition record)",
    ),
    Step(
        "predict_proba",
        anywhere(function(MODEL, "ScoringModel.predict")),
        "ScoringModel.predict and what runs under it (scikit-learn's predict_proba)",
    ),
    Step(
        "explanations, uncertainty, feature hash",
        anywhere(in_file(MODEL)),
        "the rest of stream_app/scoring/model.py (score_batch: decisions, contributions, "
        "delta-method uncertainty, blake2b feature hashes)",
    ),
    Step(
        "envelope build + orjson.dumps",
        anywhere(in_file("stream_app/scoring/envelope.py"), code_has(SCORING, "orjson.dumps")),
        "stream_app/scoring/envelope.py, and the scoring_stage.py line that orjson.dumps the "
        "envelopes",
    ),
    Step(
        "customer stage: state + features",
        under(in_file(CUSTOMER), TABLE_ACCESS),
        "under customer_stage.py: stream_app/features/* (windows, features) and the table read "
        "(faust/tables, faust/stores, mode/utils, collections.abc)",
    ),
    Step(
        "customer stage: rest",
        anywhere(in_file(CUSTOMER)),
        "customer_stage.py's own lines (the loop, key check, Forward records)",
    ),
    Step(
        "terminal stage: state + features + labels",
        one_of(
            under(in_file(SCORING), TABLE_ACCESS),
            anywhere(
                function(SCORING, "_label", "_state", "eviction_horizon", "label_horizon"),
                in_file("stream_app/pipeline/terminal_horizons.py"),
            ),
        ),
        "under scoring_stage.py: stream_app/features/* and the table read, and the label and "
        "horizon methods (ScoringStage._label, _state, pipeline/terminal_horizons.py)",
    ),
    Step(
        "terminal stage: rest",
        anywhere(in_file(SCORING)),
        "scoring_stage.py's own lines (the loop, feature rows, np.asarray, column selection)",
    ),
    Step(
        "drift",
        anywhere(
            in_file(
                "stream_app/monitoring/drift.py",
                "stream_app/evaluation/drift_stats.py",
                "stream_app/monitoring/drift_records.py",
                "stream_app/monitoring/drift_detectors.py",
                "stream_app/monitoring/drift_monitor.py",
                "river/",
            ),
            function(APP, "publish_drift"),
        ),
        "stream_app/monitoring/drift*.py (window, records, detectors, monitor), "
        "evaluation/drift_stats.py (the statistics), "
        "river, app.publish_drift (its "
        "records' produce too)",
    ),
    Step(
        "shadow hand-off",
        anywhere(
            in_file("stream_app/scoring/shadow.py"),
            function(APP, "send_shadow", "shadow_task"),
            in_file("concurrent/futures/", "multiprocessing/"),
        ),
        "stream_app/scoring/shadow.py in the worker (offer, ShadowJob, the task that sends the "
        "challenger's records), app.send_shadow, the process pool's plumbing",
    ),
    Step(
        "output produce",
        anywhere(
            in_file(
                "stream_app/outputs/publisher.py",
                "stream_app/outputs/kafka_transactions.py",
                "confluent_kafka/",
            )
        ),
        "stream_app/outputs/publisher.py and kafka_transactions.py (produce, poll, waiting for "
        "delivery), confluent_kafka",
    ),
    Step(
        "metrics, stats, logs",
        anywhere(
            in_file(
                "stream_app/monitoring/metrics.py",
                "stream_app/monitoring/model_metrics.py",
                "stream_app/monitoring/batch_histogram.py",
                "stream_app/monitoring/health.py",
                "stream_app/logs.py",
                "prometheus_client/",
                "logging/",
                "pythonjsonlogger/",
            ),
            function(APP, "WorkerStats.add", "WorkerStats.summary", "log_stats", "export_shadow"),
        ),
        "Prometheus metrics, the stats line, logging",
    ),
    Step(
        "agent loop + to_record (app.py)",
        innermost(in_file(APP), FRAMEWORK),
        "the innermost stream_app/Faust/mode/aiokafka frame is in app.py: to_record, the agents' "
        "own lines, the model lock (after: the stage handlers' own lines, the checkpoint)",
    ),
    Step(
        "batch engine: queues, alignment",
        anywhere(ENGINE),
        "stream_app/pipeline/engine.py and buffers.py: chunks queued, event-time merge, the "
        "stage loops, the decode call per chunk (decoding itself is 'decode')",
    ),
    Step(
        "Faust per-event machinery",
        anywhere(FAUST_PER_EVENT),
        "faust/streams.py, events.py, transport/conductor.py, agents/, sensors/, channels, "
        "topics, faust_dispatch.deliver (take_events' buffer, per-event acks, delivery into the "
        "streams' queues)",
    ),
    Step(
        "Faust consumer / fetch",
        anywhere(
            in_file(
                "faust/transport/consumer.py",
                "faust/transport/drivers/",
                "stream_app/faust_dispatch.py",
                "stream_app/faust_ext/",
                "aiokafka/",
                "kafka/",
            )
        ),
        "faust/transport/consumer.py and drivers, faust_dispatch's fetch loop, aiokafka (fetch, "
        "commit, heartbeat)",
    ),
    Step(
        "Faust other (services, timers, tables, web)",
        inside_loop(in_file("faust/", "mode/", "aiohttp/", "yarl/", "venusian/")),
        "any other faust/, mode/ or aiohttp frame inside the event loop's callback (service "
        "loops, timers, table manager, web); not mode's Worker frames that started the loop",
    ),
    Step(
        "asyncio event loop",
        anywhere(in_file("asyncio/", "selectors.py")),
        "asyncio's own frames (the loop's run_once, callbacks, tasks) with nothing above",
    ),
]


def classify(frames: Sequence[Frame], steps: Sequence[Step] = STEPS) -> str:
    """The name of the first step whose test holds for ``frames`` (root first), else OTHER."""
    for step in steps:
        if step.matches(frames):
            return step.name
    return OTHER


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRow:
    """One row of the step table."""

    step: str
    samples: int
    share_all: float  # of every sample of the thread (idle included)
    share_busy: float | None  # of the thread's non-idle samples; None for the idle row
    us_per_tx: float | None  # share_busy x CPU seconds / transactions, in microseconds


@dataclass(frozen=True)
class Breakdown:
    """The classified samples of one thread."""

    rows: list[StepRow]
    total: int
    idle: int
    top_leaves: list[tuple[str, int]]

    @property
    def busy(self) -> int:
        return self.total - self.idle


def breakdown(
    stacks: Sequence[Stack],
    cpu_seconds: float | None = None,
    transactions: int | None = None,
    steps: Sequence[Step] = STEPS,
    top: int = 25,
    omit: Collection[str] = (),
) -> Breakdown:
    """Samples per step (in table order, OTHER last, every step listed), shares and µs per
    transaction, and the ``top`` leaf functions (innermost Python frame) by samples.

    µs/transaction of a step = its share of the **non-idle** samples x ``cpu_seconds`` /
    ``transactions``: the thread's CPU time split in proportion to where its busy samples were.
    The idle row has no µs (it is time off the CPU). Steps in ``omit`` (ones the profile cannot
    show, like garbage collection without native frames) get no row; they must have no samples.
    """
    counts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for s in stacks:
        counts[classify(s.frames, steps)] += s.count
        leaf = next((f for f in reversed(s.frames) if f.is_python), None)
        if leaf is None and s.frames:
            leaf = s.frames[-1]
        leaves[leaf.label() if leaf else "(empty stack)"] += s.count
    total = sum(counts.values())
    idle = counts.get(IDLE, 0)
    busy = total - idle
    per_tx = (
        cpu_seconds / transactions * 1e6
        if cpu_seconds is not None and transactions and transactions > 0
        else None
    )
    rows = []
    for name in [*(s.name for s in steps), OTHER]:
        n = counts.get(name, 0)
        if name in omit:
            if n:
                raise ValueError(f"{n} sample(s) in {name!r}, which was to be omitted")
            continue
        share_busy = None if name == IDLE else (n / busy if busy else 0.0)
        rows.append(
            StepRow(
                step=name,
                samples=n,
                share_all=n / total if total else 0.0,
                share_busy=share_busy,
                us_per_tx=share_busy * per_tx
                if share_busy is not None and per_tx is not None
                else None,
            )
        )
    return Breakdown(rows, total, idle, leaves.most_common(top))
