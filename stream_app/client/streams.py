"""One object for the three uses: publish, subscribe, evaluate; bound to one set of settings."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from stream_app.client.evaluate import Bound, Evaluation, evaluate_served, evaluate_topic
from stream_app.client.publish import Publisher
from stream_app.client.records import DriftRecord, MetricsRecord, R, ScoreEnvelope, ShadowScore
from stream_app.client.subscribe import Subscription
from stream_app.config import Settings


class StreamClient:
    """The worker's topics for a program: publish inputs, read outputs, evaluate ranges.

    ``settings``: the worker's settings (broker, ``STREAM_APP_TOPIC_PREFIX``, security, models);
    by default read from the environment as the worker reads them, with ``overrides`` (the
    :class:`~stream_app.config.Settings` field names, e.g. ``kafka_bootstrap_servers``,
    ``topic_prefix``) on top.
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        if settings is not None and overrides:
            settings = settings.model_copy(update=overrides)
        self.settings = settings if settings is not None else Settings(**overrides)

    def publisher(self, *, rate: float = 0.0, config: Mapping[str, Any] | None = None) -> Publisher:
        """A :class:`Publisher` for ``transactions`` and ``labels``."""
        return Publisher(self.settings, rate=rate, config=config)

    def subscribe(self, record_type: type[R], **options: Any) -> Subscription[R]:
        """A :class:`Subscription` to ``record_type``'s topic; ``options``: its keywords
        (``group``, ``start``, ``limit``, ``timeout``, ``until_end``, ``on_invalid``)."""
        return Subscription(record_type, self.settings, **options)

    def scores(self, **options: Any) -> Subscription[ScoreEnvelope]:
        """The champion's score envelopes (``scores``); ``options`` as :meth:`subscribe`."""
        return self.subscribe(ScoreEnvelope, **options)

    def shadow_scores(self, **options: Any) -> Subscription[ShadowScore]:
        """The challenger's shadow scores (``scores.shadow``)."""
        return self.subscribe(ShadowScore, **options)

    def drift(self, **options: Any) -> Subscription[DriftRecord]:
        """The drift statistics (``drift``)."""
        return self.subscribe(DriftRecord, **options)

    def metrics(self, **options: Any) -> Subscription[MetricsRecord]:
        """The live scorecard's quality records (``metrics``)."""
        return self.subscribe(MetricsRecord, **options)

    def evaluate_topic(
        self,
        start: Bound,
        stop: Bound,
        *,
        topic: str = "transactions",
        out_dir: Path | str | None = None,
        champion: str | None = None,
        challengers: Sequence[str] = (),
        history_days: float | None = None,
    ) -> Evaluation:
        """:func:`~stream_app.client.evaluate.evaluate_topic` with these settings."""
        return evaluate_topic(
            start,
            stop,
            settings=self.settings,
            topic=topic,
            out_dir=out_dir,
            champion=champion,
            challengers=challengers,
            history_days=history_days,
        )

    def replay(self, start: Bound, stop: Bound, **options: Any) -> Evaluation:
        """Deprecated: the old name of :meth:`evaluate_topic` (same arguments)."""
        warnings.warn(
            "StreamClient.replay is deprecated: use StreamClient.evaluate_topic",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.evaluate_topic(start, stop, **options)

    def evaluate_served(
        self,
        date_from: date,
        date_to: date,
        *,
        out_dir: Path | str | None = None,
        handbook_protocol: bool = False,
    ) -> Evaluation:
        """:func:`~stream_app.client.evaluate.evaluate_served` with these settings."""
        return evaluate_served(
            date_from,
            date_to,
            settings=self.settings,
            out_dir=out_dir,
            handbook_protocol=handbook_protocol,
        )
