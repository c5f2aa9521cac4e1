"""One time-ordered record stream from labelled transactions: the merge both sources share.

A source (the simulator in :mod:`stream_app.sources.simulator` or the handbook CSV in
:mod:`stream_app.sources.handbook_csv`) yields transactions in event-time order, each with its label
kept aside. :func:`schedule` turns them into the Kafka records a live system would have seen, in
time order: each transaction at its ``event_time`` on ``transactions`` (keyed by ``customer_id``),
and its label at ``label_time = event_time + delay`` on ``labels`` (keyed by ``terminal_id``).

It is a two-way merge of the transaction stream with the stream of pending labels (what
``heapq.merge`` does). Because the delay is one constant and the transactions arrive in time
order, the pending labels come due in the order they were created, so the "heap" is a FIFO queue:
O(1) per record, and the merge stays lazy (memory = the labels pending within one delay).

Ties: at the same instant a label goes before a transaction. The label of transaction A became
known at ``t``; a transaction B at the same ``t`` may use it (the handbook's terminal-risk window
is ``(t - delay - w, t - delay]``, closed on the right), so the consumer must have seen the label
when it scores B.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import orjson

from stream_app.exceptions import DatasetError
from stream_app.features.offline import TransactionBatch

TRANSACTIONS = "transactions"
"""Declared name of the transaction topic (pass it through ``Settings.topic``)."""
LABELS = "labels"
"""Declared name of the label topic (pass it through ``Settings.topic``)."""
DEFAULT_LABEL_DELAY = timedelta(days=7)
"""The handbook's label delay: fraud feedback is known a week after the payment."""


class LabelledTransaction(NamedTuple):
    """A transaction event (a dict matching schemas/transaction.schema.json) and its truth.

    ``label`` (1 = fraud) and ``scenario`` (0 genuine, 1/2/3 the handbook's fraud scenarios) are
    kept beside the event, never inside it: the scorer must not see them with the transaction.
    """

    event: dict[str, Any]
    label: int
    scenario: int = 0


class Record(NamedTuple):
    """One Kafka record to publish.

    ``topic`` is the declared name (``"transactions"`` or ``"labels"``; map it with
    ``Settings.topic``), ``key`` the message key, ``value`` the orjson-encoded event and ``time``
    the instant the record belongs at (event time for transactions, label time for labels, less
    ``schedule``'s ``label_lead``).
    """

    topic: str
    key: str
    value: bytes
    time: datetime


@dataclass(slots=True)
class ScheduleStats:
    """Counts kept by :func:`schedule` while it runs (read them after the stream is consumed)."""

    transactions: int = 0
    labels: int = 0
    withheld_labels: int = 0
    first_event_time: datetime | None = None
    last_event_time: datetime | None = None


def rfc3339_utc(epoch_seconds: np.ndarray | Sequence[int]) -> list[str]:
    """Format whole epoch seconds as ``YYYY-MM-DDTHH:MM:SS+00:00`` strings (vectorized)."""
    stamps = np.asarray(epoch_seconds, dtype=np.int64).astype("datetime64[s]")
    return [f"{text}+00:00" for text in np.datetime_as_string(stamps, unit="s").tolist()]


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"event_time {text!r} has no UTC offset; RFC 3339 needs one")
    return moment


def schedule(
    items: Iterable[LabelledTransaction | tuple[dict[str, Any], int]],
    *,
    label_delay: timedelta = DEFAULT_LABEL_DELAY,
    labels: bool = True,
    labels_until: datetime | None = None,
    stats: ScheduleStats | None = None,
    label_lead: timedelta = timedelta(0),
) -> Iterator[Record]:
    """Yield the records of ``items`` (time-ordered ``(event, label)`` pairs) in time order.

    Each transaction is yielded at its ``event_time``; unless ``labels`` is false, its label event
    (``event_id``, ``customer_id``, ``terminal_id``, the transaction's ``event_time``, ``label``,
    ``label_time = event_time + label_delay``, ``schema_version`` 1) follows at ``label_time``.
    At equal times labels come first (see the module docstring). Labels whose ``label_time`` is
    after ``labels_until`` (e.g. now: not known yet) are withheld and counted in ``stats``.
    Pending labels are flushed after the last transaction.

    ``label_lead``: each label goes out this long *before* its ``label_time`` (which its payload
    keeps, and which is when a consumer uses it). A producer may reorder records of different
    partitions by a few milliseconds (each partition's batch leaves on its own), so a label
    yielded just before a transaction can reach the broker just after it, and a live consumer
    that keeps up scores that transaction without it; a lead of a few hours of event time absorbs
    that. At most ``label_delay``: a label never goes out before its transaction.

    Raises ``ValueError`` on a negative delay or lead, a lead longer than the delay, an event time
    without offset, or input that goes back in time.
    """
    if label_delay < timedelta(0):
        raise ValueError(f"label_delay must not be negative, got {label_delay}")
    if not timedelta(0) <= label_lead <= label_delay:
        raise ValueError(
            f"label_lead must be between 0 and label_delay ({label_delay}), got {label_lead}"
        )
    stats = stats if stats is not None else ScheduleStats()
    pending: deque[Record] = deque()
    previous: datetime | None = None
    dumps = orjson.dumps
    for item in items:
        event, label = item[0], item[1]
        moment = _parse_time(event["event_time"])
        if previous is not None and moment < previous:
            raise ValueError(
                f"transactions are not in event-time order: {event['event_time']} "
                f"(event_id {event['event_id']}) comes after {previous.isoformat()}"
            )
        previous = moment
        while pending and pending[0].time <= moment:
            stats.labels += 1
            yield pending.popleft()
        if stats.first_event_time is None:
            stats.first_event_time = moment
        stats.last_event_time = moment
        stats.transactions += 1
        yield Record(TRANSACTIONS, event["customer_id"], dumps(event), moment)
        if not labels:
            continue
        due = moment + label_delay
        if labels_until is not None and due > labels_until:
            stats.withheld_labels += 1
            continue
        label_event = {
            "event_id": event["event_id"],
            "customer_id": event["customer_id"],
            "terminal_id": event["terminal_id"],
            "event_time": event["event_time"],
            "label": int(label),
            "label_time": due.isoformat(),
            "schema_version": 1,
        }
        pending.append(Record(LABELS, event["terminal_id"], dumps(label_event), due - label_lead))
    while pending:
        stats.labels += 1
        yield pending.popleft()


def batch_from_events(events: Iterable[LabelledTransaction]) -> TransactionBatch:
    """Column arrays from labelled transaction events (simulator or CSV source): what training
    and the offline evaluations build features from."""
    ids: list[str] = []
    ts: list[float] = []
    customers: list[str] = []
    terminals: list[str] = []
    amounts: list[float] = []
    labels: list[int] = []
    for item in events:
        event = item.event
        ids.append(event["event_id"])
        ts.append(datetime.fromisoformat(event["event_time"]).timestamp())
        customers.append(event["customer_id"])
        terminals.append(event["terminal_id"])
        amounts.append(float(event["amount"]))
        labels.append(int(item.label))
    if not ids:
        raise DatasetError("No transactions to train on: the source or the date range is empty.")
    return TransactionBatch(
        ids,
        np.asarray(ts),
        customers,
        terminals,
        np.asarray(amounts),
        np.asarray(labels, dtype=np.int64),
    )
