"""A typed Python client for the worker's topics: publish, subscribe, evaluate.

- :class:`Publisher`: transactions and labels, validated by the worker's decoder (a
  :class:`RecordRejected` with the dead-letter reason per bad record), keyed and partitioned as
  the worker expects, batched, with a :class:`Delivery` per record.
- :class:`Subscription`: ``scores``, ``scores.shadow``, ``drift``, ``metrics`` as
  :class:`ScoreEnvelope`, :class:`ShadowScore`, :class:`DriftRecord`, :class:`MetricsRecord`,
  with ``for`` or ``async for``, in a consumer group or from an offset or a time.
- :func:`evaluate_topic` / :func:`evaluate_served`: a topic range scored (or the served scores)
  into an :class:`Evaluation` with each model's metrics (:func:`replay_range`: the deprecated
  old name of :func:`evaluate_topic`).
- :class:`StreamClient`: all three bound to one set of settings.

The README's "Python client" section shows each; its examples run in the tests.
"""

from stream_app.client.evaluate import (
    Evaluation,
    ModelMetrics,
    evaluate_served,
    evaluate_topic,
    replay_range,
)
from stream_app.client.http import HttpClient as HttpClient  # the worker's HTTP API (issue 17)
from stream_app.client.publish import (
    Delivery,
    DeliveryFailed,
    Publisher,
    PublishReport,
    RecordRejected,
)
from stream_app.client.records import (
    Contribution,
    DriftRecord,
    DriftWindow,
    Explanation,
    InvalidRecord,
    MetricsRecord,
    QualityMetrics,
    ScoreEnvelope,
    ShadowScore,
    Uncertainty,
)
from stream_app.client.streams import StreamClient
from stream_app.client.subscribe import Message, Subscription
from stream_app.io.deadletter import Reason

__all__ = [
    "Contribution",
    "Delivery",
    "DeliveryFailed",
    "DriftRecord",
    "DriftWindow",
    "Evaluation",
    "Explanation",
    "InvalidRecord",
    "Message",
    "MetricsRecord",
    "ModelMetrics",
    "PublishReport",
    "Publisher",
    "QualityMetrics",
    "Reason",
    "RecordRejected",
    "ScoreEnvelope",
    "ShadowScore",
    "StreamClient",
    "Subscription",
    "Uncertainty",
    "evaluate_served",
    "evaluate_topic",
    "replay_range",
]
