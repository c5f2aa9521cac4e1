"""One typed settings object, read from the environment.

Kafka connection settings use the conventional ``KAFKA_*`` names; everything
else is ``STREAM_APP_<FIELD>``. ``stream-app config`` prints the effective
values with secrets masked.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_cache() -> Path:
    return Path.home() / ".cache" / "stream_app"


def user_data_dir() -> Path:
    """Where stream_app keeps per-user data: ``$XDG_DATA_HOME/stream-app`` (when set to an
    absolute path), else ``~/.local/share/stream-app``."""
    xdg = xdg_data_home()
    return (xdg if xdg is not None else Path.home() / ".local" / "share") / "stream-app"


def xdg_data_home() -> Path | None:
    """``$XDG_DATA_HOME`` when set to an absolute path (the XDG spec ignores relative ones)."""
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    return Path(xdg) if xdg and Path(xdg).is_absolute() else None


def default_models_dir() -> Path:
    """The model registry when ``STREAM_APP_MODELS_DIR`` is unset: ``./models`` if the current
    directory has one (a checkout of the repository, a deployment directory), else the per-user
    ``<user_data_dir>/models``. Never inside the installed package (site-packages), which is
    neither the user's nor, usually, writable."""
    here = Path.cwd() / "models"
    if here.is_dir():
        return here
    return user_data_dir() / "models"


class SliceSpec(BaseModel):
    """A scorecard slice a user declares: a field and its bands.

    ``field`` is a key of the transaction record (as published on ``transactions``) or
    ``features.NAME`` of the champion's envelope (with ``STREAM_APP_EMIT_FEATURES=true``).
    Numeric ``edges`` [a, b] make the bands ``<a``, ``a-b``, ``>=b``; ``values`` lists the
    categories of a string field (any other value is ``other``). A record without the field is
    ``unknown``.
    """

    field: str = Field(min_length=1)
    edges: list[float] | None = None
    values: list[str] | None = None


class Settings(BaseSettings):
    """Every knob of stream_app. Frozen: build a new one to change a value."""

    model_config = SettingsConfigDict(env_prefix="STREAM_APP_", frozen=True, extra="ignore")

    # --- Kafka -----------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="Bootstrap servers (host:port[,host:port]). Default: the local broker.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        validation_alias="KAFKA_SECURITY_PROTOCOL",
        description="Security protocol of the client connections.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, validation_alias="KAFKA_SASL_MECHANISM", description="SASL mechanism, if any."
    )
    kafka_sasl_username: str | None = Field(
        None, validation_alias="KAFKA_SASL_USERNAME", description="SASL user name."
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, validation_alias="KAFKA_SASL_PASSWORD", description="SASL password (masked)."
    )
    kafka_ssl_cafile: Path | None = Field(
        None, validation_alias="KAFKA_SSL_CAFILE", description="CA bundle to trust for TLS."
    )
    topic_prefix: str = Field("", description="Prefix added to every topic name (multi-tenant).")

    # --- Worker ----------------------------------------------------------------
    app_id: str = Field("stream-app", description="Faust application id = consumer group.")
    transport: Literal["aiokafka", "confluent"] = Field(
        "aiokafka", description="Faust broker driver (see README: transport measurement)."
    )
    store: Literal["memory", "rocksdb"] = Field(
        "memory", description="Table store: memory (tests, demo) or rocksdb (production)."
    )
    state_dir: Path = Field(
        Path(".state"), description="Faust data directory (RocksDB files, local state)."
    )
    partitions: int = Field(
        6, ge=1, description="Partition count of topics the worker creates (tables co-partition)."
    )
    replication_factor: int = Field(
        1,
        ge=1,
        description="Replication factor of every topic the project creates: declared topics "
        "with replication = \"default\", the tables' changelogs, Faust's leader topic. 1 for "
        "the local single-node broker, 3 on a production cluster; min.insync.replicas follows "
        "it (1 up to 2 replicas, 2 from 3). Worker start and `topics apply` refuse a factor the "
        "cluster has too few brokers for.",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="at_least_once: outputs delivered before offsets are committed (a crash "
        "re-scores what was in flight). exactly_once: the outputs and input offsets of each "
        "checkpoint commit in one Kafka transaction (read_committed consumers see each once).",
    )
    misrouted_keys: Literal["reroute", "dead_letter"] = Field(
        "reroute",
        description="An input record on another partition than its key's (murmur2, Java's "
        "default partitioner; a producer with another partitioner): reroute sends it to its "
        "key's partition of transactions.rerouted / labels.rerouted and processes it there; "
        "dead_letter rejects it with reason misrouted_key. Counted by "
        "stream_app_misrouted_records_total either way.",
    )
    partition_check_s: float = Field(
        10.0,
        ge=0,
        description="How often (seconds) the worker compares the partition counts of the "
        "co-partitioned topics (inputs, reroute and repartition topics, changelogs) with "
        "STREAM_APP_PARTITIONS; on a mismatch it reads nothing and is not ready until it is put "
        "right (stream-app topics grow). Also checked before the first record. 0: never.",
    )
    transactional_id: str | None = Field(
        None,
        description="exactly_once: this worker's transactional.id prefix, stable across its "
        "restarts and unique among live workers (default: app id, host name, web port).",
    )
    transaction_timeout_s: float = Field(
        30.0,
        ge=1.0,
        le=900.0,
        description="exactly_once: a crashed worker's open transaction is aborted by the broker "
        "after this long if the worker does not come back with the same transactional_id.",
    )
    batch_max: int = Field(
        1000,
        ge=1,
        description="Most records in one micro-batch of a stage (one predict_proba). A batch "
        "takes what has arrived; it never waits to fill up.",
    )
    max_buffered: int = Field(
        5000,
        ge=1,
        description="Records fetched ahead per input partition; a partition with this many "
        "waiting is not fetched until the stage takes some (back-pressure).",
    )
    max_task_idle_s: float = Field(
        1.0,
        ge=0,
        description="Event-time alignment: how long a stage waits for an input partition that "
        "has more to read but nothing fetched yet before going on without it (Kafka Streams' "
        "max.task.idle.ms).",
    )
    fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        le=1500,
        description="Longest time the broker holds a fetch that finds no new records (aiokafka's "
        "fetch_max_wait_ms; Faust fixes it at 1500). aiokafka sends one fetch per broker at a "
        "time, and one sent while other partitions' records wait to be handed over leaves those "
        "partitions out: held for this long, it holds every partition's next fetch.",
    )
    repartition_purge_s: float = Field(
        30.0,
        ge=0,
        description="Seconds between deletions of the committed records of the repartition "
        "topic (transactions.by-terminal keeps records until then; 0: never delete, e.g. to "
        "audit the topic, which then grows without limit).",
    )
    commit_interval_s: float | None = Field(
        None,
        gt=0,
        description="Seconds between checkpoints (state to the changelogs, outputs delivered, "
        "offsets committed). Unset: Faust's BROKER_COMMIT_INTERVAL (2.8 s), 0.5 s with "
        "exactly_once (its outputs are visible only once committed).",
    )
    max_message_bytes: int = Field(
        64 * 1024, ge=1024, description="Transactions larger than this go to the DLQ."
    )
    allowed_lateness_s: float = Field(
        3600.0,
        ge=0,
        description="Events this far behind their customer's latest are placed at "
        "their event time; later ones go to the DLQ as too_late.",
    )
    max_source_skew_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="How far (event time) one transactions partition may lag the others before "
        "terminal state is evicted regardless (bounds state when a partition is idle).",
    )
    stall_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A stage with input to read and no batch taken, records queued with no "
        "delivery report, or taken records with no commit for this long: /readyz answers 503 "
        "and stream_app_stalled says which.",
    )
    stall_exit_s: float = Field(
        120.0,
        gt=0,
        description="...and after this long stalled the worker exits with code 75 so that its "
        "supervisor restarts it.",
    )
    emit_features: bool = Field(
        False, description="Put the scored feature vector in every envelope (parity checks)."
    )
    stats_interval_s: float = Field(
        30.0, gt=0, description="Seconds between the worker's one-line activity summaries."
    )
    web_port: int = Field(6066, description="Faust web port (metrics, health).")
    web_bind: str = Field(
        "127.0.0.1", description="Address the web server binds (0.0.0.0 in containers)."
    )
    web_enabled: bool = Field(True, description="Run the Faust web server.")
    web_host: str = Field(
        "127.0.0.1",
        description="Host name or address other workers reach this one's web port at: its "
        "canonical URL, which Faust's assignment shares with the group and the HTTP API "
        "forwards requests to (127.0.0.1 for workers on one machine; the pod or host name "
        "otherwise).",
    )
    api_enabled: bool = Field(
        True,
        description="Serve the HTTP API on the web port: /v1/customers|terminals/{id}/features, "
        "POST /v1/score and /openapi.json (stream_app.api).",
    )
    api_retry_after_s: int = Field(
        1,
        ge=1,
        description="Retry-After (seconds) of the API's 503: the worker rebalances or recovers, or "
        "the owner of the key's partition is unknown or does not answer.",
    )
    api_forward_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Seconds a worker waits for the owner of a key's partition when it forwards "
        "a query or fetches a state for POST /v1/score (then 503).",
    )
    api_record_timeout_s: float = Field(
        10.0,
        gt=0,
        description="POST /v1/score?record=true: seconds to wait for the envelope the stream "
        "produces for the published transaction (then 504).",
    )
    scorecard_web_port: int = Field(
        6067,
        ge=0,
        description="Port of `stream-app scorecard`'s /metrics (binds `web_bind`; 0: none).",
    )
    scorecard_amount_edges: list[float] = Field(
        [50.0, 220.0],
        min_length=1,
        description="The scorecard's amount bands: edges (JSON list) of the `amount` slice "
        "(default <50, 50-220, >=220; the handbook's scenario 1 makes every amount over 220 a "
        "fraud).",
    )
    scorecard_tenure_days: float = Field(
        30.0,
        gt=0,
        description="The scorecard's tenure slice: a customer is `new` until this many days "
        "after their first transaction the scorecard read, `established` after.",
    )
    scorecard_slices: dict[str, SliceSpec] = Field(
        default_factory=dict,
        description="Slices a user declares (JSON): name -> {field, edges or values}; the field "
        "is a transaction field or `features.NAME` of the champion's envelope.",
    )

    # --- Models ----------------------------------------------------------------
    models_dir: Path = Field(
        default_factory=default_models_dir,
        description="Model registry root (default: ./models if the current directory has one, "
        "else ~/.local/share/stream-app/models, or under $XDG_DATA_HOME).",
    )
    champion: str | None = Field(
        None, description="Champion model version (default: the newest in models_dir)."
    )
    challenger: str | None = Field(
        None,
        description="Challenger version scored in shadow on `scores.shadow` (unset: no shadow).",
    )
    model_watch_interval_s: float = Field(
        2.0,
        ge=0,
        description="Seconds between checks of models/serving.json by a worker whose champion "
        "or challenger is not pinned (0: never swap while running).",
    )
    model_assignment: Literal["topic", "file"] = Field(
        "topic",
        description="Where a worker whose champion or challenger is not pinned takes the "
        "versions to serve from: `topic`, the compacted control topic `models.assignment` that "
        "`models promote` / `rollback` publish to (every worker of the group, on any machine; "
        "models/serving.json until the first assignment is published), or `file`, only "
        "models/serving.json of the worker's own models_dir (one machine, no control topic).",
    )
    models_uri: str | None = Field(
        None,
        description="Where workers fetch the versions that `models promote` / `rollback` "
        "publish: a shared directory (`file:///shared/models` or a path) or `http(s)://host/models`"
        "; version V is fetched from <uri>/V/. Unset: the file:// URI of models_dir.",
    )
    model_fetch_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds a worker waits for one file of an assigned version (manifest, "
        "artifact) fetched from its URI.",
    )
    model_retry_s: float = Field(
        30.0,
        gt=0,
        description="Seconds between attempts of a worker to apply an assignment it refused "
        "(an artifact whose SHA-256 does not match, a fetch that failed); it serves what it "
        "served meanwhile.",
    )
    canary_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Pins the canary: the share of customers (0-1) for whom the challenger "
        "decides instead of the champion (sticky: a hash of the customer id decides, and a "
        "larger share only adds customers). Unset: the share the model assignment names "
        "(`stream-app models canary VERSION --share 5%`), none without one.",
    )
    shadow_sample: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of customers whose events the challenger scores in shadow (sticky: "
        "a hash of the customer id decides, so a customer is always in or out).",
    )
    shadow_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority of the challenger's process, as nice(1) adds it: above 0 it "
        "runs on CPU the champion leaves idle and skips batches (counted) under full load.",
    )
    shadow_max_pending: int = Field(
        64,
        ge=1,
        description="Micro-batches queued for the challenger; further ones are skipped and "
        "counted, so the champion never waits.",
    )

    # --- Drift -------------------------------------------------------------------
    drift_enabled: bool = Field(True, description="Publish drift statistics on `drift`.")
    drift_window_events: int = Field(
        20_000, ge=1, description="A drift window closes after this many scored events..."
    )
    drift_window_seconds: float = Field(
        86_400.0, gt=0, description="...or once it spans this many seconds of event time..."
    )
    drift_min_events: int = Field(
        500, ge=1, description="...holding at least this many events (no noisy tiny windows)."
    )
    drift_detector: Literal["adwin", "page_hinkley"] = Field(
        "adwin", description="river change detector on the score stream."
    )

    # --- Local broker ------------------------------------------------------------
    broker_home: Path = Field(
        _default_cache() / "broker",
        description="Where `stream-app broker` keeps jars, data, logs and its pid file.",
    )
    kafka_version: str = Field("4.1.1", description="Apache Kafka version the local broker runs.")
    broker_heap_mb: int = Field(512, ge=128, le=512, description="Local broker heap (MB).")

    # --- Logging ---------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="Log level. DEBUG adds one `scored` line per event (event id, model "
        "version, feature hash, score, decision).",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="`text` for people, `json` for one JSON object per line."
    )

    def topic(self, name: str) -> str:
        """The real topic name for a declared one (adds ``topic_prefix``)."""
        return f"{self.topic_prefix}{name}"

    def describe(self) -> dict[str, str]:
        """Effective settings as strings, secrets masked."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            out[name] = "**********" if isinstance(value, SecretStr) else str(value)
        return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
