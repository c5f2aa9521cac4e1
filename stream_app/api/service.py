"""What the API does, apart from HTTP: route a key to its owner, read or what-if its state,
score, record. The views (``stream_app.api.views``) only turn requests into calls here and
answers (or :class:`~stream_app.api.problems.ApiProblem`) into responses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stream_app.api.entities import (
    EntityTable,
    entity_key,
    entity_view,
    iso,
    peek,
    what_if_for,
)
from stream_app.api.forward import Forwarder
from stream_app.api.ownership import Ownership
from stream_app.api.problems import ApiProblem, rejected, unavailable
from stream_app.api.record import RecordReply
from stream_app.api.scoring import deciding_model, feature_row, score_envelope
from stream_app.config import Settings
from stream_app.features.definitions import Entity
from stream_app.features.state import Retention
from stream_app.io.codecs import Transaction, decode_transaction
from stream_app.io.deadletter import Rejection
from stream_app.scoring.model import ScoringModel

INTERNAL_WHAT_IF = "/v1/internal/what-if/{entity}"
"""A worker asks the owner of a key for that entity's what-if features (POST, the transaction)."""


@dataclass(frozen=True)
class ApiState:
    """What the worker hands the API: its two entity tables, the batch engine (positions, lag,
    halted), the champion of the moment and the state's retention."""

    customers: EntityTable
    terminals: EntityTable
    engine: Any
    champion: Callable[[], ScoringModel]
    retention: Retention
    canary: Callable[[], tuple[ScoringModel, float] | None] = lambda: None
    """The canary of the moment and its share, if one runs: a what-if for one of its customers
    is decided by it, as the stream would."""


class ApiService:
    """The API's logic over one worker's state."""

    def __init__(self, app: Any, settings: Settings, state: ApiState) -> None:
        self.settings = settings
        self.state = state
        self.tables = {Entity.CUSTOMER: state.customers, Entity.TERMINAL: state.terminals}
        engine = state.engine
        self.ownership = Ownership(app, settings.partitions, lambda: engine.halted)
        self.forwarder = Forwarder(
            app, self.ownership.me, settings.api_forward_timeout_s, settings.api_retry_after_s
        )
        self.recorder = RecordReply(settings)
        retention = {
            Entity.CUSTOMER: state.retention.customer_s,
            Entity.TERMINAL: state.retention.terminal_s,
        }
        self.what_if = {
            entity: what_if_for(entity, retention, settings.allowed_lateness_s)
            for entity in self.tables
        }

    # --- routing ------------------------------------------------------------------------------

    def route(self, table: EntityTable, key: str, forwarded: bool) -> tuple[str | None, int]:
        """``(owner URL, partition)`` of ``key``; owner None when it is this worker. Raises 503
        when no owner is known, or when a forwarded request reached a worker that does not own
        the key (the two disagree on the assignment: a rebalance is under way)."""
        partition = self.ownership.partition(key)
        owner = self.ownership.owner(table.name, table.changelog, partition)
        retry = self.settings.api_retry_after_s
        if owner is None:
            raise unavailable(
                f"no worker holds partition {partition} of {table.name} now (the group is "
                "rebalancing, or no worker runs)",
                retry,
            )
        if self.ownership.is_me(owner):
            return None, partition
        if forwarded:
            raise unavailable(
                f"this worker was asked as the owner of partition {partition} of {table.name}, "
                f"but the assignment it knows gives it to {owner}: the group is rebalancing",
                retry,
            )
        return owner, partition

    def _local(self, table: EntityTable, key: str, partition: int) -> Any:
        problem = self.ownership.not_ready(table.changelog, partition)
        if problem is not None:
            raise unavailable(
                f"{table.entity.value} {key!r} (partition {partition}): {problem}",
                self.settings.api_retry_after_s,
            )
        return peek(table.states, key, partition)

    # --- queries ------------------------------------------------------------------------------

    def features(
        self, entity: Entity, key: str, partition: int, at: float | None, with_samples: bool
    ) -> dict[str, Any]:
        """The entity view of ``key``, answered by this worker (its owner)."""
        table = self.tables[entity]
        state = self._local(table, key, partition)
        if state is None:
            raise ApiProblem(
                404,
                "unknown_entity",
                f"no state for {entity.value} {key!r}: none of its transactions is within the "
                f"retained window (partition {partition} of {table.name}, on "
                f"{self.ownership.me})",
            )
        view = entity_view(table, key, partition, state, at, with_samples)
        view["stage"] = self.stage_positions(table, partition)
        view["served_by"] = self.ownership.me
        view["as_of"] = iso(time.time())
        return view

    def stage_positions(self, table: EntityTable, partition: int) -> list[dict[str, Any]]:
        """The stage's next offset and lag on ``partition`` of each of the table's inputs."""
        engine = self.state.engine
        positions = {(tp.topic, tp.partition): o for tp, o in engine.positions().items()}
        lags = {(tp.topic, tp.partition): n for tp, n in engine.lag().items()}
        return [
            {
                "topic": topic,
                "partition": partition,
                "next_offset": positions.get((topic, partition)),
                "lag": lags.get((topic, partition)),
            }
            for topic in table.sources
        ]

    # --- scoring ------------------------------------------------------------------------------

    def decode(self, raw: bytes) -> Transaction:
        """The transaction in ``raw``, or a 422 with the dead-letter reason."""
        tx = decode_transaction(raw, self.settings.max_message_bytes)
        if isinstance(tx, Rejection):
            raise rejected(tx)
        return tx

    def local_what_if(self, entity: Entity, tx: Transaction, partition: int) -> list[float]:
        """``entity``'s what-if features of ``tx`` from this worker's (the owner's) state."""
        table = self.tables[entity]
        state = self._local(table, entity_key(entity, tx), partition)
        values = self.what_if[entity](state, tx)
        if isinstance(values, Rejection):
            raise rejected(values)
        return values

    def owner_what_if(self, entity: Entity, tx: Transaction) -> dict[str, Any]:
        """The internal endpoint's answer: this worker must own the key (never forwarded)."""
        _, partition = self.route(self.tables[entity], entity_key(entity, tx), forwarded=True)
        return {"values": self.local_what_if(entity, tx, partition), "partition": partition}

    async def _remote_what_if(self, owner: str, entity: Entity, raw: bytes) -> list[float]:
        path = INTERNAL_WHAT_IF.format(entity=entity.value)
        answer = await self.forwarder.post_json(owner, path, raw)
        return [float(v) for v in answer["values"]]

    async def score(self, raw: bytes, arrived_ms: float, with_features: bool) -> dict[str, Any]:
        """The what-if envelope of the transaction in ``raw``: no state changes anywhere.

        The parts this worker owns are computed at once, without handing the event loop over
        (a task per part would queue each behind the stages' next micro-batch); the others are
        asked of their owners concurrently."""
        tx = self.decode(raw)
        parts: dict[Entity, list[float]] = {}
        remote: dict[Entity, str] = {}
        for entity, table in self.tables.items():
            owner, partition = self.route(table, entity_key(entity, tx), False)
            if owner is None:
                parts[entity] = self.local_what_if(entity, tx, partition)
            else:
                remote[entity] = owner
        if remote:
            answers = await asyncio.gather(
                *(self._remote_what_if(owner, entity, raw) for entity, owner in remote.items())
            )
            parts.update(zip(remote, answers, strict=True))
        customer, terminal = parts[Entity.CUSTOMER], parts[Entity.TERMINAL]
        champion, canary = self.state.champion(), self.state.canary()
        route, model = deciding_model(champion, canary, tx.customer_id)
        return score_envelope(
            model,
            tx,
            feature_row(tx, customer, terminal),
            arrived_ms,
            with_features or self.settings.emit_features,
            route=route,
            champion_version=champion.version,
            canary_version=canary[0].version if canary is not None else None,
        )

    async def record(self, raw: bytes, timeout_s: float | None) -> dict[str, Any]:
        """Publish the transaction in ``raw``; the envelope the stream produced for it."""
        tx = self.decode(raw)
        timeout = timeout_s if timeout_s is not None else self.settings.api_record_timeout_s
        return await self.recorder.record(raw, tx, timeout)

    def close(self) -> None:
        """Stop the record path's clients."""
        self.recorder.close()


def parse_time(text: str | None) -> float | None:
    """An RFC 3339 query parameter as epoch seconds (None when absent); 400 when it does not
    parse."""
    if text is None or text == "":
        return None
    try:
        moment = datetime.fromisoformat(text.upper().replace(" ", "+"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ApiProblem(
            400, "bad_request", f"at={text!r} is not an RFC 3339 time with an offset or Z"
        )
    return moment.astimezone(UTC).timestamp()


def flag(value: str | None) -> bool:
    """A boolean query parameter (``true``/``1``/``yes``)."""
    return value is not None and value.lower() in ("1", "true", "yes", "on")
