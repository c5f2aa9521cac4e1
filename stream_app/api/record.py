"""``POST /v1/score?record=true``: publish a transaction and answer with the stream's envelope.

The transaction goes to ``transactions`` keyed by its customer id with Java's partitioner
(murmur2, the key contract), as any producer would send it; the answer is the envelope the
stream published for it on ``scores`` (whichever worker scored it), read back from Kafka, or,
when the stream dead-lettered it (a duplicate, too late...), a 422 with the dead letter's reason.
Nothing comes within the timeout: 504 (the transaction is published all the same and will be
scored; the answer says at which partition and offset).

One consumer per worker, started at the first recorded request, tails every partition of
``scores`` and ``transactions.dlq`` from their ends (read_committed, no group, no commits) in a
thread of its own, and parses only records keyed by a customer with a request waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from stream_app.api.problems import ApiProblem
from stream_app.config import Settings
from stream_app.io.codecs import Transaction
from stream_app.io.security import librdkafka_config

log = logging.getLogger("stream_app.api.record")

RECENT_DEAD_LETTERS = 4096
"""Dead letters of waiting customers kept by source position (one may be read before the
delivery report of its transaction tells the position)."""


class _Waiter:
    __slots__ = ("event_id", "future", "key", "loop", "position")

    def __init__(self, event_id: str, key: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.event_id = event_id
        self.key = key
        self.loop = loop
        self.future: asyncio.Future[tuple[str, Any]] = loop.create_future()
        self.position: tuple[str, int, int] | None = None

    def resolve(self, kind: str, value: Any) -> None:
        def _set() -> None:
            if not self.future.done():
                self.future.set_result((kind, value))

        self.loop.call_soon_threadsafe(_set)


class RecordReply:
    """Publishes transactions and waits for what the stream made of them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.transactions = settings.topic("transactions")
        self.scores = settings.topic("scores")
        self.dlq = settings.topic("transactions.dlq")
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._started: asyncio.Future[None] | None = None
        self._lock = threading.Lock()
        self._by_event: dict[str, list[_Waiter]] = {}
        self._by_position: dict[tuple[str, int, int], _Waiter] = {}
        self._keys: dict[bytes, int] = {}
        self._recent: OrderedDict[tuple[str, int, int], tuple[str, str]] = OrderedDict()
        self._stop = threading.Event()

    # --- the tail ---------------------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                await asyncio.to_thread(self._start)
            except BaseException as exc:
                self._started.set_exception(exc)
                self._started = None
                raise
            self._started.set_result(None)
            return
        await asyncio.shield(self._started)

    def _start(self) -> None:
        config = librdkafka_config(self.settings)
        self._producer = Producer(
            {
                **config,
                "partitioner": "murmur2_random",
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                "client.id": f"{self.settings.app_id}-api",
            }
        )
        consumer = Consumer(
            {
                **config,
                "group.id": f"{self.settings.app_id}-api-reply-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        assignment = []
        for topic in (self.scores, self.dlq):
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None:
                consumer.close()
                raise ApiProblem(
                    503,
                    "unavailable",
                    f"topic {topic} is not readable ({getattr(metadata, 'error', 'missing')}); "
                    "is the worker's topology created (stream-app topics apply)?",
                    self.settings.api_retry_after_s,
                )
            for partition in metadata.partitions:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                assignment.append(TopicPartition(topic, partition, high))
        consumer.assign(assignment)
        self._consumer = consumer
        self._thread = threading.Thread(target=self._tail, name="api-record-tail", daemon=True)
        self._thread.start()

    def _tail(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stop.is_set():
            try:
                messages = consumer.consume(500, timeout=0.1)
            except Exception:  # closed at shutdown
                return
            for message in messages:
                if message.error() is None:
                    self._seen(message)

    def _seen(self, message: Message) -> None:
        key = message.key()
        if key is None or key not in self._keys:
            return
        try:
            value = orjson.loads(message.value() or b"")
        except orjson.JSONDecodeError:
            return
        if message.topic() == self.scores:
            with self._lock:
                waiters = self._by_event.pop(str(value.get("event_id")), [])
            for waiter in waiters:
                waiter.resolve("envelope", value)
            return
        source = value.get("source") or {}
        position = (
            str(source.get("topic")),
            int(source.get("partition", -1)),
            int(source.get("offset", -1)),
        )
        reason = (str(value.get("reason")), str(value.get("message")))
        with self._lock:
            found = self._by_position.pop(position, None)
            if found is None:
                self._recent[position] = reason
                while len(self._recent) > RECENT_DEAD_LETTERS:
                    self._recent.popitem(last=False)
        if found is not None:
            found.resolve("dead_letter", reason)

    # --- a request --------------------------------------------------------------------------------

    async def record(self, raw: bytes, tx: Transaction, timeout_s: float) -> dict[str, Any]:
        """Publish ``raw`` (the validated transaction ``tx``) and return the stream's envelope.
        Raises 422 (dead-lettered), 502 (not published) or 504 (no answer in time)."""
        await self._ensure_started()
        loop = asyncio.get_running_loop()
        key = tx.customer_id.encode()
        waiter = _Waiter(tx.event_id, key, loop)
        with self._lock:
            self._by_event.setdefault(tx.event_id, []).append(waiter)
            self._keys[key] = self._keys.get(key, 0) + 1
        deadline = time.monotonic() + timeout_s
        try:
            position = await asyncio.to_thread(self._produce, key, raw, timeout_s)
            with self._lock:
                early = self._recent.pop(position, None)
                if early is None:
                    waiter.position = position
                    self._by_position[position] = waiter
            if early is not None:
                waiter.resolve("dead_letter", early)
            left = max(deadline - time.monotonic(), 0.001)
            try:
                kind, value = await asyncio.wait_for(asyncio.shield(waiter.future), left)
            except TimeoutError:
                raise ApiProblem(
                    504,
                    "record_timeout",
                    f"transaction {tx.event_id!r} was published to {position[0]} partition "
                    f"{position[1]} at offset {position[2]}, but no envelope or dead letter for "
                    f"it came within {timeout_s:g} s; it will still be scored (read `scores`).",
                ) from None
        finally:
            self._forget(waiter)
        if kind == "dead_letter":
            reason, message = value
            raise ApiProblem(422, reason, f"the stream dead-lettered the transaction: {message}")
        return value  # type: ignore[no-any-return]

    def _produce(self, key: bytes, value: bytes, timeout_s: float) -> tuple[str, int, int]:
        producer = self._producer
        assert producer is not None
        result: list[tuple[KafkaError | None, Message]] = []
        producer.produce(
            self.transactions,
            value,
            key,
            headers=[("client-id", b"stream-app-http")],
            on_delivery=lambda err, msg: result.append((err, msg)),
        )
        deadline = time.monotonic() + timeout_s
        while not result and time.monotonic() < deadline:
            producer.poll(0.01)
        if not result:
            raise ApiProblem(
                502,
                "publish_failed",
                f"no delivery report for the transaction within {timeout_s:g} s: is the broker "
                f"at {self.settings.kafka_bootstrap_servers} up?",
            )
        err, msg = result[0]
        if err is not None:
            raise ApiProblem(502, "publish_failed", f"the broker refused the transaction: {err}")
        return str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)

    def _forget(self, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._by_event.get(waiter.event_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._by_event[waiter.event_id]
            if waiter.position is not None:
                self._by_position.pop(waiter.position, None)
            count = self._keys.get(waiter.key, 0) - 1
            if count > 0:
                self._keys[waiter.key] = count
            else:
                self._keys.pop(waiter.key, None)

    def close(self) -> None:
        """Stop the tail and close the clients."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
        if self._producer is not None:
            self._producer.flush(5.0)
