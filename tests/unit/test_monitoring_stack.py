"""The compose monitoring stack agrees with itself and with the code's metrics.

No Docker engine, Prometheus or Grafana is needed: ``docker-compose.yml`` and the files under
``monitoring/`` are parsed and checked against each other --

* Prometheus scrapes exactly the worker and the scorecard, on the ports their compose environment
  gives them (``STREAM_APP_WEB_PORT``, ``STREAM_APP_SCORECARD_WEB_PORT``), which they publish and
  bind on every interface;
* the ``prometheus`` and ``grafana`` services mount files that exist in the repository, read-only,
  where the configs expect them, and keep their data in declared volumes;
* Grafana's provisioned datasource uid is the one every dashboard panel and query names, and its
  dashboard provider reads the directory the dashboard JSON is mounted on;
* every panel has a unique id and a grid position, and no two panels overlap;
* every metric name in any PromQL expression of the dashboard is a sample name the code really
  exposes (``WorkerMetrics`` on the worker, ``ScorecardMetrics`` on the scorecard), the labels it
  matches, groups by and shows in legends are labels of those metrics, and the label values it
  matches are values the code produces.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from stream_app.config import REPO_ROOT, Settings
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.monitoring.scorecard_metrics import ScorecardMetrics
from tests.unit.test_compose import env_of, interpolate

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
MONITORING = REPO_ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
ALERT_RULES = MONITORING / "prometheus" / "alerts.yml"
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = MONITORING / "grafana" / "provisioning" / "dashboards" / "stream-app.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "stream-app.json"

#: Scrape job -> (compose service, the Settings field that sets the port it serves /metrics on).
SCRAPE_JOBS = {
    "stream-app-worker": ("worker", "web_port"),
    "stream-app-scorecard": ("scorecard", "scorecard_web_port"),
}
#: Metric families the dashboard may leave out (name as collected, without _total/_info).
NOT_ON_DASHBOARD = {"stream_app_drift_records"}
GRID_COLUMNS = 24
#: Labels Prometheus adds to every scraped series (the target's).
TARGET_LABELS = {"instance", "job"}

# A metric name in PromQL: not preceded by an identifier character (so not a label value's tail).
METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])stream_app_[A-Za-z0-9_:]+")
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])(stream_app_[A-Za-z0-9_:]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    assert path.is_file(), f"{path.relative_to(REPO_ROOT)} is missing"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_CONFIG)


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    sources = load_yaml(DATASOURCES)["datasources"]
    assert len(sources) == 1, "one provisioned datasource: the compose Prometheus"
    return sources[0]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    assert DASHBOARD.is_file(), f"{DASHBOARD.relative_to(REPO_ROOT)} is missing"
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard["panels"]) if p.get("type") != "row"]


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of the dashboard."""
    return [(p["title"], t) for p in query_panels(dashboard) for t in p.get("targets", [])]


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read-only) for a service's short-syntax volumes."""
    out: dict[str, tuple[str, bool]] = {}
    for volume in service.get("volumes", []):
        parts = str(volume).split(":")
        source, target = parts[0], parts[1]
        out[target] = (source, len(parts) > 2 and "ro" in parts[2].split(","))
    return out


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port, from a service's short-syntax ``ports``."""
    out: dict[int, int] = {}
    for spec in service.get("ports", []):
        host, _, container = str(spec).rpartition(":")
        out[int(container)] = int(host.rpartition(":")[2])
    return out


def service_settings(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a service's container builds from its compose environment."""
    for name in list(os.environ):
        if name.startswith(("STREAM_APP_", "KAFKA_")):
            monkeypatch.delenv(name)
    for name, value in env_of(service).items():
        monkeypatch.setenv(name, interpolate(value))
    return Settings()


# --------------------------------------------------------------------------------------------
# What the code exposes
# --------------------------------------------------------------------------------------------


def sample_names(family_name: str, family_type: str) -> set[str]:
    """Sample names a family of this type can expose (``_created`` left out: never queried)."""
    if family_type == "counter":
        return {f"{family_name}_total"}
    if family_type == "histogram":
        return {f"{family_name}_bucket", f"{family_name}_sum", f"{family_name}_count"}
    if family_type == "info":
        return {f"{family_name}_info"}
    if family_type in ("gauge", "untyped"):
        return {family_name}
    raise AssertionError(f"{family_name}: no rule for type {family_type}")


def populated_worker() -> WorkerMetrics:
    """A worker registry with a child of every labelled metric, via the public update methods."""
    m = WorkerMetrics()
    m.set_model("v-champion", "ab" * 32)
    m.set_challenger("v-challenger", "cd" * 32)
    m.set_canary("v-challenger", 0.05)
    m.set_assignment({"champion": "v-champion"}, {"champion": True})
    m.model_refused("champion", "sha256_mismatch")
    for stage in ("customer", "scoring"):
        m.batch(stage, 3, replayed=1)
    m.scored_batch("v-champion", 3, scoring_seconds=0.01, latencies_s=[0.1, 0.2])
    m.label_outcomes(applied=1, unmatched=1)
    m.shadow_outcomes(agreed=1, disagreed=1, skipped=1)
    m.drift(
        [
            {"statistic": "psi", "subject": "amount", "value": 0.3, "alert": True},
            {"statistic": "psi", "subject": "score", "value": 0.1, "alert": False},
            {"statistic": "adwin", "subject": "score", "value": 1, "alert": True},
            {"statistic": "page_hinkley", "subject": "score", "value": 0, "alert": False},
        ]
    )
    m.refresh_table_keys({"customers": [1, 2]})
    m.set_lag({("transactions", 0): 5})
    m.set_stalled({"customer": False})
    m.skipped("transactions", 0, 3)
    m.misrouted("transactions", 2)
    return m


def populated_scorecard() -> ScorecardMetrics:
    """A scorecard registry with a child of every labelled metric and every metric name."""
    m = ScorecardMetrics()
    m.joined_pairs("v-champion", 2)
    m.records(
        [
            {
                "model_version": "v-champion",
                "granularity": granularity,
                "period": "2025-01-01",
                "metrics": {
                    "auc_roc": 0.9,
                    "average_precision": 0.5,
                    "precision_at_k": 0.4,
                    "brier": 0.1,
                },
                "label_coverage": 0.8,
                "labels": 10,
            }
            for granularity in ("event_day", "processing_hour")
        ]
    )
    return m


class Exposed:
    """Sample names, label names and label values of the metrics in some registries."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.families: dict[str, str] = {}  # family name -> type
        self.names: dict[str, str] = {}  # possible sample name -> family name
        self.labels: dict[str, set[str]] = {}  # family name -> label names (le excluded)
        self.values: dict[tuple[str, str], set[str]] = {}  # (family, label) -> values seen
        for registry in registries:
            for family in registry.collect():
                assert family.name not in self.families, f"{family.name} exposed twice"
                self.families[family.name] = family.type
                possible = sample_names(family.name, family.type)
                for name in possible:
                    self.names[name] = family.name
                labels = self.labels.setdefault(family.name, set())
                for sample in family.samples:
                    assert sample.name in possible | {f"{family.name}_created"}, (
                        f"sample {sample.name} of {family.name} ({family.type}) is not derived "
                        f"by sample_names(): fix the rule"
                    )
                    for label, value in sample.labels.items():
                        if label != "le":
                            labels.add(label)
                            self.values.setdefault((family.name, label), set()).add(value)

    def unknown_names(self, expr: str) -> list[str]:
        return [name for name in METRIC_NAME.findall(expr) if name not in self.names]


@pytest.fixture(scope="module")
def exposed() -> Exposed:
    return Exposed(populated_worker().registry, populated_scorecard().registry)


# --------------------------------------------------------------------------------------------
# Prometheus: what it scrapes
# --------------------------------------------------------------------------------------------


def scrape_targets(config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for job in config["scrape_configs"]
    }


def test_prometheus_scrapes_the_worker_and_the_scorecard_every_5s(
    prometheus_config: dict[str, Any],
) -> None:
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    assert set(jobs) == set(SCRAPE_JOBS)
    for job in jobs.values():
        interval = job.get("scrape_interval", prometheus_config["global"]["scrape_interval"])
        assert interval == "5s", f"{job['job_name']}: scrape_interval {interval}"
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert job.get("scheme", "http") == "http"


@pytest.mark.parametrize("job", sorted(SCRAPE_JOBS))
def test_scrape_target_is_the_service_on_its_configured_port(
    job: str,
    prometheus_config: dict[str, Any],
    services: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service_name, port_field = SCRAPE_JOBS[job]
    targets = scrape_targets(prometheus_config)[job]
    assert service_name in services, f"{job} scrapes {service_name}, not a compose service"
    service = services[service_name]
    settings = service_settings(service, monkeypatch)
    port = getattr(settings, port_field)
    assert targets == [f"{service_name}:{port}"], (
        f"{job}: targets {targets}, but {service_name} serves /metrics on {port} "
        f"({port_field} from its compose environment)"
    )
    assert port_field.upper() in {n.removeprefix("STREAM_APP_") for n in env_of(service)}, (
        f"{service_name}: set STREAM_APP_{port_field.upper()} explicitly in docker-compose.yml"
    )
    assert settings.web_bind == "0.0.0.0", f"{service_name} must bind 0.0.0.0 to be scraped"
    assert published(service).get(port) == port, f"{service_name}: port {port} not published"


def test_worker_target_port_is_the_compose_web_port(
    prometheus_config: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    web_port = interpolate(env_of(services["worker"])["STREAM_APP_WEB_PORT"])
    assert scrape_targets(prometheus_config)["stream-app-worker"] == [f"worker:{web_port}"]


# --------------------------------------------------------------------------------------------
# Compose: the prometheus and grafana services
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "repository"),
    [("prometheus", "prom/prometheus"), ("grafana", "grafana/grafana")],
)
def test_images_are_pinned(
    services: dict[str, dict[str, Any]], service: str, repository: str
) -> None:
    image = services[service]["image"]
    name, _, tag = image.rpartition(":")
    assert name == repository, image
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{image}: pin a release tag, not {tag!r}"


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_config_mounts_exist_and_are_read_only(
    services: dict[str, dict[str, Any]], service: str
) -> None:
    binds = {t: m for t, m in mounts(services[service]).items() if m[0].startswith(".")}
    assert binds, f"{service} mounts no file of the repository"
    for target, (source, read_only) in binds.items():
        path = (REPO_ROOT / source).resolve()
        assert path.exists(), f"{service}: {source} (mounted on {target}) does not exist"
        assert path.is_relative_to(MONITORING), f"{service}: {source} is outside monitoring/"
        assert read_only, f"{service}: mount {source} read-only (:ro)"


def test_prometheus_reads_the_mounted_config(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    flags = dict(arg.split("=", 1) for arg in prometheus["command"] if "=" in arg)
    config = flags["--config.file"]
    assert mounts(prometheus)[config] == ("./monitoring/prometheus/prometheus.yml", True)
    assert mounts(prometheus)[flags["--storage.tsdb.path"]][0] == "prometheus-data"


def test_grafana_mounts_the_provisioning_files(services: dict[str, dict[str, Any]]) -> None:
    grafana = mounts(services["grafana"])
    provisioning = "/etc/grafana/provisioning"
    for path in (DATASOURCES, DASHBOARD_PROVIDERS):
        kind = path.parent.name  # datasources, dashboards
        source = f"./{path.relative_to(REPO_ROOT)}"
        assert grafana.get(f"{provisioning}/{kind}/{path.name}") == (source, True), (
            f"grafana must mount {source} on {provisioning}/{kind}/{path.name}"
        )
    assert grafana["/var/lib/grafana"][0] == "grafana-data"


def test_monitoring_volumes_are_declared(compose: dict[str, Any]) -> None:
    assert {"prometheus-data", "grafana-data"} <= set(compose["volumes"])


def test_grafana_access(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    env = env_of(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-admin}"
    assert published(grafana).get(3000) == 3000
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    directory, _, filename = home.rpartition("/")
    source, _ = mounts(grafana)[directory]
    assert (REPO_ROOT / source / filename).resolve() == DASHBOARD


# --------------------------------------------------------------------------------------------
# Grafana provisioning
# --------------------------------------------------------------------------------------------


def test_datasource_is_the_compose_prometheus(
    datasource: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == "stream-app-prometheus"
    match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)/?", datasource["url"])
    assert match, datasource["url"]
    assert match.group(1) == "prometheus", f"{match.group(1)} is not the prometheus service"
    flags = dict(arg.split("=", 1) for arg in services["prometheus"]["command"] if "=" in arg)
    listen = flags.get("--web.listen-address", "0.0.0.0:9090")
    assert int(match.group(2)) == int(listen.rpartition(":")[2]), f"Prometheus listens on {listen}"


def test_dashboard_provider_reads_the_mounted_dashboard_directory(
    services: dict[str, dict[str, Any]],
) -> None:
    providers = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert [p["type"] for p in providers] == ["file"]
    path = providers[0]["options"]["path"].rstrip("/")
    source, read_only = mounts(services["grafana"])[path]
    assert (REPO_ROOT / source).resolve() == DASHBOARD.parent, (
        f"the provider reads {path}, where grafana mounts {source}, not the dashboard directory"
    )
    assert read_only


# --------------------------------------------------------------------------------------------
# The dashboard
# --------------------------------------------------------------------------------------------


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "stream-app"
    assert dashboard["title"] == "stream-app"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 39


def test_every_panel_and_query_uses_the_provisioned_datasource(
    dashboard: dict[str, Any], datasource: dict[str, Any]
) -> None:
    panels = query_panels(dashboard)
    assert panels
    for panel in panels:
        assert panel.get("datasource", {}).get("uid") == datasource["uid"], panel["title"]
        assert panel.get("targets"), f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target.get("datasource", {}).get("uid") == datasource["uid"], panel["title"]
            assert target.get("expr", "").strip(), f"{panel['title']}: empty expr"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), f"{panel['title']}: duplicate refId"


def test_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    panels = list(all_panels(dashboard["panels"]))
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids), "every panel needs an integer id"
    assert len(set(ids)) == len(ids), f"duplicate panel ids: {ids}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel.get("gridPos")
        assert grid and all(isinstance(grid.get(k), int) for k in "xywh"), panel.get("title")
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= GRID_COLUMNS
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']} overlaps {other}"


def test_panels_have_units(dashboard: dict[str, Any]) -> None:
    for panel in query_panels(dashboard):
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"


def test_dashboard_metric_names_are_exposed_by_the_code(
    dashboard: dict[str, Any], exposed: Exposed
) -> None:
    used: set[str] = set()
    unknown: dict[str, list[str]] = {}
    for title, target in expressions(dashboard):
        names = METRIC_NAME.findall(target["expr"])
        assert names, f"{title}: {target['expr']} names no stream_app metric"
        used.update(names)
        if missing := exposed.unknown_names(target["expr"]):
            unknown[f"{title}: {target['expr']}"] = missing
    assert not unknown, f"metric names the code does not expose: {unknown}"
    shown = {exposed.names[name] for name in used}
    left_out = set(exposed.families) - shown - NOT_ON_DASHBOARD
    assert not left_out, f"metrics on no dashboard panel: {sorted(left_out)}"


def test_dashboard_labels_are_labels_of_its_metrics(
    dashboard: dict[str, Any], exposed: Exposed
) -> None:
    problems: list[str] = []
    for title, target in expressions(dashboard):
        expr = target["expr"]
        families = {exposed.names[n] for n in METRIC_NAME.findall(expr) if n in exposed.names}
        labels = set().union(*(exposed.labels[f] for f in families)) | TARGET_LABELS
        if any(exposed.families[f] == "histogram" for f in families):
            labels.add("le")
        for name, matchers in SELECTOR.findall(expr):
            family = exposed.names.get(name)
            for label, op, value in MATCHER.findall(matchers):
                if family is None or label not in exposed.labels[family]:
                    problems.append(f"{title}: {name} has no label {label!r}")
                    continue
                if op in ("!=", "!~"):  # excludes a value: it need not be one the code sets
                    continue
                wanted = value.split("|") if op == "=~" else [value]
                seen = exposed.values[(family, label)]
                if unseen := [v for v in wanted if v not in seen]:
                    problems.append(f"{title}: {name}{{{label}}} is never {unseen} ({seen})")
        grouped: set[str] = set()
        for group in GROUPING.findall(expr):
            grouped.update(g.strip() for g in group.split(",") if g.strip())
        problems += [f"{title}: groups by unknown {g!r}" for g in grouped - labels]
        legend = set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
        problems += [f"{title}: legend shows unknown {g!r}" for g in legend - labels]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------
# The checks above catch what they should
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "unknown"),
    [
        ("rate(stream_app_events_consumed[1m])", ["stream_app_events_consumed"]),
        ("stream_app_scoring_seconds_total", ["stream_app_scoring_seconds_total"]),
        ("stream_app_model", ["stream_app_model"]),
        ("stream_app_consumer_lag_total", ["stream_app_consumer_lag_total"]),
        ("sum(rate(stream_app_batch_size_sum[1m]))", []),
        ('stream_app_scorecard_metric{metric="auc_roc"}', []),
        ("stream_app_challenger_info", []),
        ("rate(stream_app_scorecard_joined_total[5m])", []),
    ],
)
def test_metric_name_check_tells_sample_names_apart(
    exposed: Exposed, expr: str, unknown: list[str]
) -> None:
    assert exposed.unknown_names(expr) == unknown


def test_every_families_sample_names_are_known(exposed: Exposed) -> None:
    assert exposed.families["stream_app_end_to_end_latency_seconds"] == "histogram"
    assert exposed.families["stream_app_model"] == "info"
    assert exposed.names["stream_app_dead_letters_total"] == "stream_app_dead_letters"
    assert exposed.labels["stream_app_consumer_lag"] == {"topic", "partition"}
    assert exposed.values[("stream_app_shadow", "outcome")] == {"agree", "disagree", "skipped"}


# --------------------------------------------------------------------------------------------
# Prometheus: alert rules
# --------------------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_prometheus_loads_the_mounted_alert_rules(
    prometheus_config: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    (path,) = prometheus_config["rule_files"]
    assert mounts(services["prometheus"])[path] == ("./monitoring/prometheus/alerts.yml", True)


def test_alert_rules_use_metrics_the_code_exposes_and_say_what_to_do(exposed: Exposed) -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {
        "StreamAppStalled",
        "StreamAppInputDeleted",
        "StreamAppWorkerDown",
        "StreamAppNoScores",
        "StreamAppFeatureDrift",
        "StreamAppScoreDistributionShift",
        "StreamAppAveragePrecisionLow",
        "StreamAppLagGrowing",
        "StreamAppDeadLetters",
        "StreamAppChallengerStalled",
    } <= names
    used: set[str] = set()
    for rule in rules:
        expr = rule["expr"]
        assert not exposed.unknown_names(expr), (rule["alert"], exposed.unknown_names(expr))
        used.update(exposed.names[n] for n in METRIC_NAME.findall(expr))
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        for name, matchers in SELECTOR.findall(expr):
            for label, _, _ in MATCHER.findall(matchers):
                assert label in exposed.labels[exposed.names[name]], (rule["alert"], label)
    # The liveness, lost-input, model-health and quality signals each have an alert.
    assert {
        "stream_app_stalled",
        "stream_app_input_skipped",
        "stream_app_last_score_timestamp_seconds",
        "stream_app_drift_alerting",
        "stream_app_drift_alerts",
        "stream_app_scorecard_metric",
    } <= used
