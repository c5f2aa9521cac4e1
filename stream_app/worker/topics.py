"""The topics the worker reads and writes, by their names in this deployment."""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.config import Settings


@dataclass(frozen=True)
class WorkerTopics:
    """Each of the worker's topics, with the deployment's prefix (``Settings.topic``)."""

    transactions: str
    transactions_rerouted: str
    by_terminal: str
    labels: str
    labels_rerouted: str
    scores: str
    shadow: str
    drift: str
    dlq: str

    @classmethod
    def of(cls, settings: Settings) -> WorkerTopics:
        """The names for ``settings``."""
        topic = settings.topic
        return cls(
            transactions=topic("transactions"),
            transactions_rerouted=topic("transactions.rerouted"),
            by_terminal=topic("transactions.by-terminal"),
            labels=topic("labels"),
            labels_rerouted=topic("labels.rerouted"),
            scores=topic("scores"),
            shadow=topic("scores.shadow"),
            drift=topic("drift"),
            dlq=topic("transactions.dlq"),
        )

    @property
    def inputs(self) -> set[str]:
        """The topics the stages read."""
        return {
            self.transactions,
            self.transactions_rerouted,
            self.by_terminal,
            self.labels,
            self.labels_rerouted,
        }
