"""The worker's output records as typed objects: one dataclass per JSON Schema in ``schemas/``.

Each record type names its topic (declared name) and its schema. :func:`parse` checks the JSON
against the compiled schema (the contract the worker writes to, :mod:`stream_app.io.schemas`)
before building the object, so a field the object has is a field the schema promises; a record
that does not match raises :class:`InvalidRecord` saying where it was and what is wrong.
``tests/unit/test_client_records.py`` checks every dataclass against its schema's fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal, Self, TypeVar

import orjson

from stream_app.exceptions import StreamAppError
from stream_app.io.schemas import ValidationError, validator

Decision = Literal["approve", "review", "decline"]
Route = Literal["champion", "canary", "shadow"]


class InvalidRecord(StreamAppError, ValueError):
    """A record on an output topic is not what its schema says (not JSON, or a field breaks it).

    ``topic``, ``partition`` and ``offset`` say where it is (None when parsed off the broker).
    """

    def __init__(
        self,
        message: str,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        where = f"{topic}[{partition}]@{offset}: " if topic is not None else ""
        super().__init__(
            f"{where}{message}. The producer of this topic does not follow schemas/ (another "
            "program writing to it, or a worker of another version); skip such records with "
            "on_invalid='skip'."
        )
        self.topic, self.partition, self.offset = topic, partition, offset


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.upper())


@dataclass(frozen=True, slots=True)
class Uncertainty:
    """How sure the score is: its standard error and 95% interval."""

    method: Literal["logit_delta", "bernoulli"]
    std: float
    interval: tuple[float, float]


@dataclass(frozen=True, slots=True)
class Contribution:
    """One feature's part in the score's logit."""

    feature: str
    value: float
    contribution: float


@dataclass(frozen=True, slots=True)
class Explanation:
    """The (at most three) features that moved the score most."""

    method: Literal["linear_exact", "occlusion"]
    contributions: tuple[Contribution, ...]


@dataclass(frozen=True, slots=True)
class ScoreEnvelope:
    """One scored transaction (``schemas/score_envelope.schema.json``, topic ``scores``)."""

    topic: ClassVar[str] = "scores"
    schema: ClassVar[str] = "score_envelope"

    event_id: str
    customer_id: str
    terminal_id: str
    event_time: str
    score: float
    decision: Decision
    uncertainty: Uncertainty
    explanation: Explanation
    model_version: str
    model_sha256: str
    training_data_tag: str
    feature_hash: str
    scored_at: str
    latency_ms: float
    features: dict[str, float] | None = None
    data_contract: str | None = None
    data_contract_version: int | None = None
    route: Route | None = None
    """The arm that decided: champion or canary (shadow in ``scores.shadow``)."""
    champion_version: str | None = None
    canary_version: str | None = None

    @property
    def event_at(self) -> datetime:
        """``event_time`` as an aware datetime."""
        return _time(self.event_time)

    @property
    def scored_at_time(self) -> datetime:
        """``scored_at`` as an aware datetime."""
        return _time(self.scored_at)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Self:
        """From a schema-valid envelope (see :func:`parse`)."""
        unc, exp = obj["uncertainty"], obj["explanation"]
        return cls(
            event_id=obj["event_id"],
            customer_id=obj["customer_id"],
            terminal_id=obj["terminal_id"],
            event_time=obj["event_time"],
            score=float(obj["score"]),
            decision=obj["decision"],
            uncertainty=Uncertainty(
                unc["method"],
                float(unc["std"]),
                (float(unc["interval"][0]), float(unc["interval"][1])),
            ),
            explanation=Explanation(
                exp["method"],
                tuple(
                    Contribution(c["feature"], float(c["value"]), float(c["contribution"]))
                    for c in exp["contributions"]
                ),
            ),
            model_version=obj["model_version"],
            model_sha256=obj["model_sha256"],
            training_data_tag=obj["training_data_tag"],
            feature_hash=obj["feature_hash"],
            scored_at=obj["scored_at"],
            latency_ms=float(obj["latency_ms"]),
            features=obj.get("features"),
            data_contract=obj.get("data_contract"),
            data_contract_version=obj.get("data_contract_version"),
            route=obj.get("route"),
            champion_version=obj.get("champion_version"),
            canary_version=obj.get("canary_version"),
        )


@dataclass(frozen=True, slots=True)
class ShadowScore:
    """The challenger's envelope beside the champion's answer (topic ``scores.shadow``)."""

    topic: ClassVar[str] = "scores.shadow"
    schema: ClassVar[str] = "shadow_score"

    challenger: ScoreEnvelope
    champion_version: str
    champion_score: float
    champion_decision: Decision
    agree: bool
    score_delta: float | None = None

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Self:
        """From a schema-valid shadow record (see :func:`parse`)."""
        delta = obj.get("score_delta")
        return cls(
            challenger=ScoreEnvelope.from_dict(obj["challenger"]),
            champion_version=obj["champion_version"],
            champion_score=float(obj["champion_score"]),
            champion_decision=obj["champion_decision"],
            agree=obj["agree"],
            score_delta=None if delta is None else float(delta),
        )


@dataclass(frozen=True, slots=True)
class DriftWindow:
    """The window a drift statistic covers."""

    start: str
    end: str
    events: int


@dataclass(frozen=True, slots=True)
class DriftRecord:
    """One drift statistic over one window (``schemas/drift_record.schema.json``, ``drift``)."""

    topic: ClassVar[str] = "drift"
    schema: ClassVar[str] = "drift_record"

    statistic: Literal["psi", "ks", "adwin", "page_hinkley"]
    subject: str
    value: float
    threshold: float
    alert: bool
    model_version: str
    window: DriftWindow

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Self:
        """From a schema-valid drift record (see :func:`parse`)."""
        window = obj["window"]
        return cls(
            statistic=obj["statistic"],
            subject=obj["subject"],
            value=float(obj["value"]),
            threshold=float(obj["threshold"]),
            alert=obj["alert"],
            model_version=obj["model_version"],
            window=DriftWindow(window["start"], window["end"], window["events"]),
        )


@dataclass(frozen=True, slots=True)
class QualityMetrics:
    """Model quality over a period; None where it cannot be computed (one class only)."""

    auc_roc: float | None = None
    average_precision: float | None = None
    precision_at_k: float | None = None
    brier: float | None = None


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    """One non-empty bin of scores: its range, count, mean score and fraud rate."""

    lo: float
    hi: float
    n: int
    mean_score: float
    fraud_rate: float


@dataclass(frozen=True, slots=True)
class Calibration:
    """Expected calibration error over 10 equal-width score bins (None: no scores), its bins."""

    ece: float | None
    bins: tuple[CalibrationBin, ...]

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Self:
        """From the record's ``calibration`` object."""
        ece = obj["ece"]
        return cls(
            ece=None if ece is None else float(ece),
            bins=tuple(CalibrationBin(**b) for b in obj["bins"]),
        )


@dataclass(frozen=True, slots=True)
class SliceQuality:
    """The labelled scores of one band of a slice (e.g. amount ``<50``, hour ``night``)."""

    labels: int
    metrics: QualityMetrics
    calibration: Calibration


@dataclass(frozen=True, slots=True)
class MetricsRecord:
    """The live scorecard's quality of one model over one period (topic ``metrics``)."""

    topic: ClassVar[str] = "metrics"
    schema: ClassVar[str] = "metrics_record"

    model_version: str
    granularity: Literal["event_day", "processing_hour"]
    period: str
    labels: int
    metrics: QualityMetrics
    label_coverage: float | None = None
    route: str | None = None  # champion, shadow or canary (None: an older record, champion)
    calibration: Calibration | None = None
    slices: dict[str, dict[str, SliceQuality]] | None = None  # slice -> band -> its scores

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Self:
        """From a schema-valid metrics record (see :func:`parse`)."""
        coverage = obj.get("label_coverage")
        return cls(
            model_version=obj["model_version"],
            granularity=obj["granularity"],
            period=obj["period"],
            labels=obj["labels"],
            metrics=QualityMetrics(**obj["metrics"]),
            label_coverage=None if coverage is None else float(coverage),
            route=obj.get("route"),
            calibration=_calibration(obj.get("calibration")),
            slices=None
            if obj.get("slices") is None
            else {
                name: {
                    band: SliceQuality(
                        labels=q["labels"],
                        metrics=QualityMetrics(**q["metrics"]),
                        calibration=Calibration.from_dict(q["calibration"]),
                    )
                    for band, q in bands.items()
                }
                for name, bands in obj["slices"].items()
            },
        )


def _calibration(obj: dict[str, Any] | None) -> Calibration | None:
    return None if obj is None else Calibration.from_dict(obj)


R = TypeVar("R", ScoreEnvelope, ShadowScore, DriftRecord, MetricsRecord)

RECORD_TYPES: dict[str, type[ScoreEnvelope | ShadowScore | DriftRecord | MetricsRecord]] = {
    t.topic: t for t in (ScoreEnvelope, ShadowScore, DriftRecord, MetricsRecord)
}
"""Declared topic name → its record type."""


def parse(
    record_type: type[R],
    raw: bytes | None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> R:
    """``raw`` (a record value of ``record_type.topic``) as a ``record_type``, checked against
    its schema first. Raises :class:`InvalidRecord` (with the position, when given)."""
    try:
        obj = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"the value is not JSON ({exc})", topic, partition, offset) from exc
    try:
        validator(record_type.schema)(obj)
    except ValidationError as exc:
        raise InvalidRecord(
            f"not a valid {record_type.schema} record: {exc.message}", topic, partition, offset
        ) from exc
    return record_type.from_dict(obj)
