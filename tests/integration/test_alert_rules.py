"""Every alert rule reads series a running worker and scorecard really expose, and the Grafana
dashboard shows each alerted signal.

A worker runs on the test broker with small drift windows (every 200 events) and scores 600
transactions whose labels follow; ``stream-app scorecard`` runs as its own process (it serves its
own ``/metrics``, as in the compose stack) and joins them. Both ``/metrics`` are scraped, and every
metric name in every rule's ``expr`` of ``monitoring/prometheus/alerts.yml`` must be a sample name
of a family one of them declares (``up`` is Prometheus' own, for a job ``prometheus.yml``
scrapes); every label a rule matches or groups by must be a label of those samples, and every
value it matches (``=``, or one alternative of ``=~``) a value they carry. Then each rule must
have a dashboard panel that names the alert in its description and queries every metric the rule
reads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream_app.config import REPO_ROOT
from stream_app.devtools.worker_process import WorkerProcess
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.integration.conftest import free_port
from tests.kafka_reader import processed_by, read_topic

pytestmark = pytest.mark.integration

ALERT_RULES = REPO_ROOT / "monitoring" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = REPO_ROOT / "monitoring" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO_ROOT / "monitoring" / "grafana" / "dashboards" / "stream-app.json"
N = 600
WINDOW = 200
#: Series Prometheus makes itself (not scraped from a target).
PROMETHEUS_OWN = {"up"}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
#: Counters with a label per occurrence (topic): declared from the start, a sample only once the
#: event they count happens (a record deleted before it was read, one on the wrong partition).
#: Their labels are checked against the code by tests/unit/test_monitoring_stack.py.
EVENT_COUNTERS = {"stream_app_input_skipped", "stream_app_misrouted_records"}

KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, label lists, strings,
    ranges and numbers left out)."""
    text = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    text = STRING.sub('""', text)
    text = GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    return {name for name in IDENTIFIER.findall(text) if name.lower() not in KEYWORDS}


def test_metric_names_parser() -> None:
    assert metric_names(
        "time() - max by (instance) (stream_app_last_score_timestamp_seconds) > 180"
    ) == {"stream_app_last_score_timestamp_seconds"}
    assert metric_names(
        'up{job="w"} == 0 or absent(stream_app_events_consumed_total) and on (a) b_metric > 1e9'
    ) == {"up", "stream_app_events_consumed_total", "b_metric"}
    assert metric_names('sum by (x) (increase(m_total{s=~"a|b"}[30m])) > 0') == {"m_total"}


# --- scraping -------------------------------------------------------------------------------


class Scrape:
    """Families, their sample names, label names and values from a /metrics text."""

    def __init__(self) -> None:
        self.family_of: dict[str, str] = {}  # sample name a family can expose -> family
        self.samples: dict[str, list[dict[str, str]]] = {}  # family -> labels of each sample

    def add(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
                "info": ["_info"],
            }.get(family.type, [""])
            for suffix in suffixes:
                self.family_of[family.name + suffix] = family.name
            self.samples.setdefault(family.name, []).extend(
                {k: v for k, v in s.labels.items() if k != "le"}
                for s in family.samples
                if not s.name.endswith("_created")
            )

    def labels(self, family: str) -> set[str]:
        return {name for sample in self.samples[family] for name in sample}

    def values(self, family: str, label: str) -> set[str]:
        return {sample[label] for sample in self.samples[family] if label in sample}


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def wait_for(url: str, wanted: list[re.Pattern[str]], timeout_s: float, what: str) -> str:
    """The /metrics text once every pattern matches in it."""
    deadline = time.monotonic() + timeout_s
    text: str | None = None
    while time.monotonic() < deadline:
        text = get(url)
        if text is not None and all(p.search(text) for p in wanted):
            return text
        time.sleep(0.5)
    missing = [p.pattern for p in wanted if text is None or not p.search(text)]
    raise AssertionError(f"{what} at {url} never showed {missing}:\n{text}")


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for panel in panels:
            out.append(panel)
            out += walk(panel.get("panels", []))
        return out

    return [
        p
        for p in walk(json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"])
        if p.get("type") != "row"
    ]


@pytest.fixture
def scraped(app_env, app_settings, kafka_bootstrap, tmp_path) -> Scrape:
    """The worker's and the scorecard's /metrics after 600 transactions and their labels."""
    env = {
        **app_env,
        "STREAM_APP_DRIFT_WINDOW_EVENTS": str(WINDOW),
        "STREAM_APP_DRIFT_MIN_EVENTS": "1",
        "STREAM_APP_DRIFT_WINDOW_SECONDS": "1e9",
    }
    items = list(
        simulate(
            n_customers=150,
            n_terminals=200,
            n_events=N,
            seed=41,
            start=datetime(2026, 3, 1, tzinfo=UTC),
        )
    )
    # Both classes among the labels, so that the scorecard's AUC and AP are defined.
    labelled = [(item.event, int(i % 20 == 7)) for i, item in enumerate(items)]
    worker = WorkerProcess(tmp_path / "worker", env)
    worker.start()
    card: subprocess.Popen[bytes] | None = None
    card_port = free_port()
    try:
        worker.wait_ready()
        with BulkProducer(app_settings) as producer:
            for record in schedule(labelled):
                producer.produce(app_settings.topic(record.topic), record.key, record.value)
        read_topic(kafka_bootstrap, app_settings.topic("scores"), N, **processed_by(app_settings))
        worker_text = wait_for(
            f"http://127.0.0.1:{env['STREAM_APP_WEB_PORT']}/metrics",
            [
                re.compile(r'stream_app_drift_alerting\{statistic="psi",subject="score"\}'),
                re.compile(r'stream_app_drift_alerts_total\{statistic="(adwin|page_hinkley)"'),
                re.compile(r"^stream_app_last_score_timestamp_seconds \d", re.M),
            ],
            60,
            "the worker",
        )
        with (tmp_path / "scorecard.log").open("wb") as log:
            card = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stream_app",
                    "scorecard",
                    "--from-beginning",
                    "--interval",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    **env,
                    "STREAM_APP_SCORECARD_WEB_PORT": str(card_port),
                    "STREAM_APP_WEB_BIND": "127.0.0.1",
                },
                start_new_session=True,
            )
        card_text = wait_for(
            f"http://127.0.0.1:{card_port}/metrics",
            [
                re.compile(r'granularity="event_day",metric="average_precision"'),
                re.compile(r'granularity="event_day",metric="labels"'),
            ],
            90,
            "the scorecard",
        )
    finally:
        if card is not None:
            card.send_signal(signal.SIGTERM)
            try:
                card.wait(20)
            except subprocess.TimeoutExpired:
                card.kill()
                card.wait(10)
        worker.stop()
    scrape = Scrape()
    scrape.add(worker_text)
    scrape.add(card_text)
    return scrape


def test_every_alert_reads_exposed_series_and_has_a_dashboard_panel(scraped: Scrape) -> None:
    jobs = {
        job["job_name"]
        for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["scrape_configs"]
    }
    panels = dashboard_panels()
    rules = alert_rules()
    assert len(rules) >= 12
    problems: list[str] = []
    for rule in rules:
        name, expr = rule["alert"], rule["expr"]
        names = metric_names(expr)
        assert names, f"{name}: no metric in {expr!r}"
        families: set[str] = set()
        for metric in sorted(names):
            if metric in PROMETHEUS_OWN:
                continue
            family = scraped.family_of.get(metric)
            if family is None:
                problems.append(
                    f"{name}: {metric} is exposed by neither the worker nor the scorecard"
                )
                continue
            families.add(family)
            if not scraped.samples[family] and family not in EVENT_COUNTERS:
                problems.append(f"{name}: {metric} is declared but has no sample")
        labels = set().union(*(scraped.labels(f) for f in families)) | TARGET_LABELS
        for metric, matchers in SELECTOR.findall(expr):
            for label, op, value in MATCHER.findall(matchers):
                if metric in PROMETHEUS_OWN:
                    if label == "job" and op == "=" and value not in jobs:
                        problems.append(f"{name}: job {value!r} is not scraped ({sorted(jobs)})")
                    continue
                family = scraped.family_of.get(metric)
                if family is None or not scraped.samples[family]:
                    continue
                if label not in scraped.labels(family):
                    problems.append(f"{name}: {metric} has no label {label!r}")
                    continue
                seen = scraped.values(family, label)
                if op == "=" and value not in seen:
                    problems.append(f"{name}: {metric}{{{label}}} is never {value!r} ({seen})")
                if op == "=~" and not set(value.split("|")) & seen:
                    problems.append(
                        f"{name}: {metric}{{{label}=~{value!r}}} matches none of {seen}"
                    )
        unsampled = {f for f in families if not scraped.samples[f]}  # EVENT_COUNTERS only
        for keyword, group in GROUPING.findall(expr):
            if keyword in ("by", "on") and not unsampled:
                for label in (g.strip() for g in group.split(",") if g.strip()):
                    if label not in labels:
                        problems.append(f"{name}: {keyword} ({label}): not a label of {families}")
        # The dashboard: a panel names the alert and queries every metric the rule reads.
        shown = [p for p in panels if name in p.get("description", "")]
        if not shown:
            problems.append(f"{name}: no dashboard panel names it in its description")
            continue
        queried = {
            scraped.family_of.get(m, m)
            for p in shown
            for t in p.get("targets", [])
            for m in metric_names(t["expr"])
        }
        if missing := families - queried:
            problems.append(f"{name}: its panels {[p['title'] for p in shown]} omit {missing}")
    assert not problems, "\n".join(problems)


def test_alert_names_are_unique_and_documented() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    readme = Path(REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert [n for n in names if n not in readme] == []
