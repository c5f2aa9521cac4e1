"""The score envelope (``schemas/score_envelope.schema.json``), built for a whole micro-batch.

:func:`build_envelopes` gives the envelopes as objects (the shadow path, the benchmark's peer,
tests); :class:`EnvelopeWriter` gives the scoring stage their bytes, with what is the same for
every event of a batch (the model's version, hash and data tag, the methods, the time of
scoring) computed once per batch and every per-event column converted from numpy in one call.
The data contract (the input schema's ``$id`` and version) is a constant of the process.

Every envelope names the arm that decided (``route``: ``champion``, ``canary``; ``shadow`` in the
challenger's shadow records) and both versions the group serves on the scoring path
(``champion_version``, ``canary_version``: None without a canary).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from stream_app.io.schemas import data_contract
from stream_app.scoring.model import BatchScores, ScoringModel


class EventLike(Protocol):
    """What an envelope says about the event it scores."""

    @property
    def event_id(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def terminal_id(self) -> str: ...
    @property
    def event_time(self) -> str: ...
    @property
    def arrived_ms(self) -> float: ...


class ScoredEvent:
    """The identity of one event in a micro-batch, and when it reached Kafka."""

    __slots__ = ("arrived_ms", "customer_id", "event_id", "event_time", "terminal_id")

    def __init__(
        self,
        event_id: str,
        customer_id: str,
        terminal_id: str,
        event_time: str,
        arrived_ms: float,
    ) -> None:
        self.event_id = event_id
        self.customer_id = customer_id
        self.terminal_id = terminal_id
        self.event_time = event_time
        self.arrived_ms = arrived_ms

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScoredEvent) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __repr__(self) -> str:
        return f"ScoredEvent({self.event_id!r}, {self.customer_id!r}, {self.terminal_id!r})"

    @classmethod
    def of(cls, event: EventLike) -> ScoredEvent:
        """A copy of ``event``'s identity."""
        return cls(
            event.event_id, event.customer_id, event.terminal_id, event.event_time, event.arrived_ms
        )


def build_envelopes(
    model: ScoringModel,
    events: Sequence[EventLike],
    X: npt.NDArray[np.float64],
    scores: BatchScores,
    emit_features: bool = False,
    now: datetime | None = None,
    route: str = "champion",
    champion_version: str | None = None,
    canary_version: str | None = None,
) -> list[dict[str, Any]]:
    """One envelope per event, in order. ``latency_ms`` runs from ``arrived_ms`` to now."""
    writer = EnvelopeWriter(model, emit_features, route, champion_version, canary_version)
    return writer.objects(events, X, scores, now)


class EnvelopeWriter:
    """Envelopes of one model, as objects or as ``(key, value)`` records for ``scores``."""

    def __init__(
        self,
        model: ScoringModel,
        emit_features: bool = False,
        route: str = "champion",
        champion_version: str | None = None,
        canary_version: str | None = None,
    ) -> None:
        """``route``: the arm ``model`` serves; ``champion_version``: the champion's (default:
        ``model``'s); ``canary_version``: the canary's, None without one."""
        self.model = model
        self.emit_features = emit_features
        self.route = route
        self.champion_version = champion_version or model.version
        self.canary_version = canary_version
        self.names = list(model.features)
        # A constant of the process: the input schema every transaction was validated against.
        self.contract, self.contract_version = data_contract("transaction")

    def objects(
        self,
        events: Sequence[EventLike],
        X: npt.NDArray[np.float64],
        scores: BatchScores,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """One envelope per event, in order. ``latency_ms`` runs from ``arrived_ms`` to now."""
        model = self.model
        moment = now or datetime.now(UTC)
        scored_at = moment.isoformat()
        now_ms = moment.timestamp() * 1000.0
        names = self.names
        uncertainty_method = model.uncertainty_method
        explanation_method = model.explanation_method
        version, sha256, tag = model.version, model.sha256, model.training_data_tag
        score = scores.score.tolist()
        decision = scores.decision.tolist()
        std = scores.std.tolist()
        low = scores.low.tolist()
        high = scores.high.tolist()
        top = scores.top_index.tolist()
        values = np.take_along_axis(X, scores.top_index, axis=1).tolist()
        contribution = scores.contribution.tolist()
        hashes = scores.feature_hash
        rows = X.tolist() if self.emit_features else None
        contract, contract_version = self.contract, self.contract_version
        route, champion_version, canary_version = (
            self.route,
            self.champion_version,
            self.canary_version,
        )
        out: list[dict[str, Any]] = []
        for i, event in enumerate(events):
            envelope: dict[str, Any] = {
                "event_id": event.event_id,
                "customer_id": event.customer_id,
                "terminal_id": event.terminal_id,
                "event_time": event.event_time,
                "score": score[i],
                "decision": decision[i],
                "uncertainty": {
                    "method": uncertainty_method,
                    "std": std[i],
                    "interval": [low[i], high[i]],
                },
                "explanation": {
                    "method": explanation_method,
                    "contributions": [
                        {"feature": names[j], "value": v, "contribution": c}
                        for j, v, c in zip(top[i], values[i], contribution[i], strict=True)
                    ],
                },
                "model_version": version,
                "model_sha256": sha256,
                "training_data_tag": tag,
                "feature_hash": hashes[i],
                "scored_at": scored_at,
                "latency_ms": max(0.0, now_ms - event.arrived_ms),
                "data_contract": contract,
                "data_contract_version": contract_version,
                "route": route,
                "champion_version": champion_version,
                "canary_version": canary_version,
            }
            if rows is not None:
                envelope["features"] = dict(zip(names, rows[i], strict=True))
            out.append(envelope)
        return out

    def encode(
        self,
        events: Sequence[EventLike],
        X: npt.NDArray[np.float64],
        scores: BatchScores,
        now: datetime | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """``(customer id, envelope JSON)`` per event, in order."""
        dumps = orjson.dumps
        return [
            (event.customer_id.encode(), dumps(envelope))
            for event, envelope in zip(events, self.objects(events, X, scores, now), strict=True)
        ]
