"""Latency of the synchronous what-if score while the stream runs, and what it costs the stream.

Starts its own Kafka broker (free ports, temporary directory, stopped by pid; or uses
``--bootstrap``), trains a logistic champion on the project's generator, starts one worker
(3 partitions, RocksDB tables, as in compose), warms its state with ``--history`` generated
transactions, then runs three phases, each on new transactions of the same customers and
terminals:

0. **HTTP alone**: the what-ifs of phase 2 with no stream (the API path by itself);
1. **stream**: ``--rate`` transactions/s for ``--seconds`` s, no what-if (a probe: ``GET /healthz``
   at 20/s, the event loop's own delay);
2. **stream + HTTP**: the same, plus ``POST /v1/score`` (what-if) at ``--http-rate`` requests/s
   from an open-loop client (a request is due every 1/rate s whatever the answers do; its latency
   runs from when it was due, so a slow answer delays no measurement: no coordinated omission),
   over keep-alive connections, for random customers and terminals of the history;
3. **drain**: ``--backlog`` transactions published at once, scored as fast as the worker can,
   without and then with the HTTP load: the stream's throughput and its cost.

Prints and writes ``bench/results/http_latency.json``: HTTP p50/p90/p99/max (and the API's own
time inside the worker, from its ``Server-Timing`` header), the stream's
end-to-end latency (``latency_ms`` of its envelopes) per phase, the worker's CPU per phase, and
the drain throughput with and without the HTTP load. The publisher runs in a process of its own.

    .venv/bin/python bench/http_latency.py [--rate 1000] [--http-rate 200] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream_app.broker import LocalBroker, free_port, free_ports  # noqa: E402
from stream_app.config import Settings  # noqa: E402
from stream_app.devtools.worker_process import WorkerProcess  # noqa: E402
from stream_app.io.topics import ensure_topics  # noqa: E402
from stream_app.sources.producer import BulkProducer  # noqa: E402
from stream_app.sources.schedule import batch_from_events  # noqa: E402
from stream_app.sources.simulator import simulate  # noqa: E402
from stream_app.training import train  # noqa: E402
from tests.kafka_reader import end_offsets, read_to_end_offsets  # noqa: E402

CUSTOMERS, TERMINALS = 2000, 4000
TICKS = os.sysconf("SC_CLK_TCK")


def train_champion(root: Path) -> str:
    batch = batch_from_events(
        simulate(
            n_customers=300,
            n_terminals=500,
            days=58,
            seed=3,
            start=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )
    return train(
        batch,
        model_type="logreg",
        train_start=datetime(2026, 2, 7, tzinfo=UTC),
        models_dir=root,
        data_tag="bench",
        seed=3,
    ).version


def _publish(settings: Settings, records: list[tuple[bytes, bytes]], rate: float) -> None:
    topic = settings.topic("transactions")
    with BulkProducer(settings, rate=rate) as producer:
        for key, value in records:
            producer.produce(topic, key, value)


def publish_in_child(settings: Settings, records: list[tuple[bytes, bytes]], rate: float):
    """A process that publishes ``records`` at ``rate``/s (0: as fast as it can)."""
    child = multiprocessing.get_context("fork").Process(
        target=_publish, args=(settings, records, rate), daemon=True
    )
    child.start()
    return child


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def scored(bootstrap: str, settings: Settings) -> int:
    return sum(end_offsets(bootstrap, settings.topic("scores")).values())


def wait_scored(bootstrap: str, settings: Settings, n: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while scored(bootstrap, settings) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {scored(bootstrap, settings)} of {n} scored in {timeout} s")
        time.sleep(0.5)


class HttpLoad:
    """Open-loop what-if requests at a fixed rate; latency from each request's due time."""

    def __init__(self, url: str, rate: float, bodies: list[bytes] | None) -> None:
        """``bodies``: what-if transactions; None: ``GET /healthz`` (the event loop's answer
        time alone, a probe)."""
        self.url = f"{url}/v1/score" if bodies is not None else f"{url}/healthz"
        self.rate = rate
        self.bodies = bodies
        self.latencies_ms: list[float] = []
        self.service_ms: list[float] = []  # the API's own time (its Server-Timing header)
        self.statuses: dict[str, int] = {}

    async def _one(self, session: aiohttp.ClientSession, body: bytes | None, due: float) -> None:
        try:
            request = session.get(self.url) if body is None else session.post(self.url, data=body)
            async with request as response:
                payload = await response.read()
                status = str(response.status)
                timing = response.headers.get("Server-Timing", "")
                if timing.startswith("app;dur="):
                    self.service_ms.append(float(timing[8:]))
                if response.status != 200 and body is not None:
                    status += " " + str(orjson.loads(payload).get("reason"))
        except aiohttp.ClientError as exc:
            status = type(exc).__name__
        self.latencies_ms.append((time.perf_counter() - due) * 1000.0)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    async def run(self, seconds: float) -> None:
        connector = aiohttp.TCPConnector(limit=64)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            tasks = []
            start = time.perf_counter()
            n = int(seconds * self.rate)
            for i in range(n):
                due = start + i / self.rate
                pause = due - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                body = self.bodies[i % len(self.bodies)] if self.bodies else None
                tasks.append(asyncio.create_task(self._one(session, body, due)))
            await asyncio.gather(*tasks)


def percentiles(values: list[float], skip: float = 0.1) -> dict[str, float]:
    kept = np.array(values[int(len(values) * skip) :])
    if not len(kept):
        return {}
    return {
        "n": float(len(kept)),
        "p50_ms": float(np.percentile(kept, 50)),
        "p90_ms": float(np.percentile(kept, 90)),
        "p99_ms": float(np.percentile(kept, 99)),
        "max_ms": float(kept.max()),
    }


def stream_latency(bootstrap: str, settings: Settings, ids: set[str]) -> dict[str, float]:
    envelopes = [
        orjson.loads(m.value()) for m in read_to_end_offsets(bootstrap, settings.topic("scores"))
    ]
    mine = sorted((e for e in envelopes if e["event_id"] in ids), key=lambda e: e["scored_at"])
    out = percentiles([e["latency_ms"] for e in mine])
    times = [datetime.fromisoformat(e["scored_at"]).timestamp() for e in mine]
    out["scored"] = float(len(mine))
    if len(times) > 1:
        out["scored_per_s"] = float((len(times) - 1) / max(times[-1] - times[0], 1e-9))
    return out


def requests_for(
    history: list[dict[str, Any]], last: dict[str, Any], n: int, seed: int
) -> list[bytes]:
    """What-if bodies for random customers and terminals of the history, a minute after the
    ``last`` event the bench publishes (so none is too late for its customer)."""
    rng = random.Random(seed)
    when = datetime.fromisoformat(last["event_time"]) + timedelta(minutes=1)
    stamp = when.isoformat().replace("+00:00", "Z")
    customers = sorted({e["customer_id"] for e in history})
    terminals = sorted({e["terminal_id"] for e in history})
    return [
        orjson.dumps(
            {
                "event_id": f"what-if-{i}",
                "event_time": stamp,
                "customer_id": rng.choice(customers),
                "terminal_id": rng.choice(terminals),
                "amount": round(rng.uniform(1, 400), 2),
                "schema_version": 1,
            }
        )
        for i in range(n)
    ]


def run(bootstrap: str, home: Path, args: argparse.Namespace) -> dict[str, Any]:
    champion = train_champion(home / "models")
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_TOPIC_PREFIX": f"bench-{tag}.",
        "STREAM_APP_APP_ID": f"bench-{tag}",
        "STREAM_APP_MODELS_DIR": str(home / "models"),
        "STREAM_APP_CHAMPION": champion,
        "STREAM_APP_STATE_DIR": str(home / tag),
        "STREAM_APP_WEB_PORT": str(port),
        "STREAM_APP_PARTITIONS": "3",
        "STREAM_APP_STORE": "rocksdb",
    }
    settings = Settings(
        kafka_bootstrap_servers=bootstrap, topic_prefix=env["STREAM_APP_TOPIC_PREFIX"], partitions=3
    )
    per_phase = int(args.rate * args.seconds)
    total = args.history + 2 * per_phase + 2 * args.backlog
    events = [
        item.event
        for item in simulate(
            n_customers=CUSTOMERS,
            n_terminals=TERMINALS,
            n_events=total,
            seed=11,
            start=datetime(2026, 3, 1, tzinfo=UTC),
        )
    ]
    records = [(e["customer_id"].encode(), orjson.dumps(e)) for e in events]
    cuts = np.cumsum([args.history, per_phase, per_phase, args.backlog, args.backlog]).tolist()
    history, phase1, phase2, drain1, drain2 = (
        records[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True)
    )
    ids = [
        [orjson.loads(v)["event_id"] for _, v in part] for part in (phase1, phase2, drain1, drain2)
    ]
    bodies = requests_for(events[: args.history], events[-1], 20_000, seed=5)
    url = f"http://127.0.0.1:{port}"
    ensure_topics(settings)
    worker = WorkerProcess(home / tag, env)
    worker.start()
    result: dict[str, Any] = {"args": vars(args)}
    try:
        worker.wait_ready()
        pid = worker.proc.pid  # type: ignore[union-attr]
        started = time.monotonic()
        publish_in_child(settings, history, 0).join()
        wait_scored(bootstrap, settings, len(history))
        print(f"history: {len(history):,} scored in {time.monotonic() - started:.0f} s", flush=True)
        done = len(history)

        def phase(name: str, part: list, rate: float, http: bool) -> None:
            nonlocal done
            cpu = cpu_seconds(pid)
            began = time.monotonic()
            child = publish_in_child(settings, part, rate)
            load = HttpLoad(url, args.http_rate, bodies) if http else HttpLoad(url, 20, None)
            asyncio.run(load.run(args.seconds if rate else args.drain_http_s))
            child.join()
            done += len(part)
            wait_scored(bootstrap, settings, done)
            wall = time.monotonic() - began
            entry = {"wall_s": wall, "worker_cpu_s": cpu_seconds(pid) - cpu}
            entry["worker_cpu_share"] = entry["worker_cpu_s"] / wall
            entry["http" if http else "healthz_probe"] = percentiles(load.latencies_ms)
            if load.service_ms:
                entry["http_service"] = percentiles(load.service_ms)
            entry["http_statuses"] = load.statuses
            result[name] = entry
            print(f"{name}: {json.dumps(entry)}", flush=True)

        phase("http_alone", [], args.rate, http=True)
        phase("stream", phase1, args.rate, http=False)
        phase("stream_http", phase2, args.rate, http=True)
        phase("drain", drain1, 0, http=False)
        phase("drain_http", drain2, 0, http=True)
        for name, part_ids in zip(
            ("stream", "stream_http", "drain", "drain_http"), ids, strict=True
        ):
            result[name]["envelopes"] = stream_latency(bootstrap, settings, set(part_ids))
    finally:
        worker.stop()
        if args.worker_log:
            Path(args.worker_log).write_text(worker.log_text(since_start=False))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="stream: transactions/s")
    parser.add_argument("--http-rate", type=float, default=200.0, help="what-if requests/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of phases 1 and 2")
    parser.add_argument("--history", type=int, default=60_000, help="transactions to warm state")
    parser.add_argument("--backlog", type=int, default=40_000, help="transactions per drain")
    parser.add_argument(
        "--drain-http-s", type=float, default=10.0, help="seconds of HTTP load during the drain"
    )
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--worker-log", help="copy the worker's log to this file at the end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        home = Path(tmp)
        if args.bootstrap:
            result = run(args.bootstrap, home, args)
        else:
            port, controller = free_ports(2)
            broker = LocalBroker(home / "broker", port=port, controller_port=controller)
            bootstrap = broker.start(timeout=120)
            try:
                result = run(bootstrap, home, args)
            finally:
                broker.stop()
    s, h = result["stream"], result["stream_http"]
    d, dh = result["drain"], result["drain_http"]
    a = result["http_alone"]
    print(
        f"\nwhat-if at {args.http_rate:.0f}/s, no stream: p50 {a['http']['p50_ms']:.1f} ms, "
        f"p99 {a['http']['p99_ms']:.1f} ms (the API's own time p99 "
        f"{a['http_service']['p99_ms']:.2f} ms)"
    )
    print(
        f"what-if at {args.http_rate:.0f}/s with the stream at {args.rate:.0f}/s: "
        f"p50 {h['http']['p50_ms']:.1f} ms, p99 {h['http']['p99_ms']:.1f} ms, "
        f"max {h['http']['max_ms']:.1f} ms, statuses {h['http_statuses']}; the API's own time "
        f"(Server-Timing) p50 {h['http_service']['p50_ms']:.2f} ms, "
        f"p99 {h['http_service']['p99_ms']:.2f} ms\n"
        f"GET /healthz at 20/s with the stream alone (the event loop's own delay): p50 "
        f"{s['healthz_probe']['p50_ms']:.1f} ms, p99 {s['healthz_probe']['p99_ms']:.1f} ms\n"
        f"stream latency p50/p99: {s['envelopes']['p50_ms']:.0f}/{s['envelopes']['p99_ms']:.0f} ms "
        f"alone, {h['envelopes']['p50_ms']:.0f}/{h['envelopes']['p99_ms']:.0f} ms with HTTP; "
        f"worker CPU {s['worker_cpu_share']:.0%} -> {h['worker_cpu_share']:.0%}\n"
        f"drain: {d['envelopes'].get('scored_per_s', 0):,.0f}/s alone, "
        f"{dh['envelopes'].get('scored_per_s', 0):,.0f}/s with HTTP"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "http_latency.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
