"""The HTTP API's pieces without a broker: reading a state without changing it, what-if features,
the OpenAPI document, query parameters, the client's errors."""

from __future__ import annotations

import copy

import fastjsonschema
import pytest

from stream_app.api.entities import (
    EntityTable,
    customer_what_if,
    entity_view,
    peek,
    terminal_what_if,
)
from stream_app.api.openapi import contract_schema, openapi_document
from stream_app.api.problems import ApiProblem
from stream_app.api.service import flag, parse_time
from stream_app.client.http import NotFound, Rejected, Unavailable, _error
from stream_app.features.definitions import Entity
from stream_app.features.state import CustomerState, Retention, TerminalState
from stream_app.io.codecs import Transaction
from stream_app.io.deadletter import Reason
from stream_app.io.schemas import load_schema
from stream_app.pipeline.state_store import StateStore

RETENTION = Retention.for_lateness(3600.0)
T0 = 1_772_323_200.0  # 2026-03-01T00:00:00Z


def tx(event_id: str, ts: float, amount: float = 10.0, customer: str = "c1") -> Transaction:
    return Transaction(event_id, "2026-03-01T00:00:00Z", ts, customer, "t1", amount)


def customer_with(*events: tuple[str, float, float]) -> CustomerState:
    state = CustomerState()
    for offset, (event_id, ts, amount) in enumerate(events):
        state.apply(ts, amount, offset, RETENTION.customer_s, event_id)
    return state


def test_customer_what_if_equals_applying_it_and_leaves_the_state_alone():
    state = customer_with(("a", T0, 10.0), ("b", T0 + 3600, 30.0))
    before = state.encode()
    values = customer_what_if(state, tx("c", T0 + 7200, 50.0), RETENTION.customer_s, 3600.0)
    applied = customer_with(("a", T0, 10.0), ("b", T0 + 3600, 30.0), ("c", T0 + 7200, 50.0))
    assert values == applied.feature_values(T0 + 7200)
    assert state.encode() == before


def test_customer_what_if_for_a_new_customer_and_a_late_one():
    assert customer_what_if(None, tx("a", T0, 8.0), RETENTION.customer_s, 3600.0) == (
        customer_with(("a", T0, 8.0)).feature_values(T0)
    )
    state = customer_with(("a", T0, 10.0), ("b", T0 + 3600, 30.0))
    late = customer_what_if(state, tx("x", T0 + 1800, 5.0), RETENTION.customer_s, 3600.0)
    assert late == customer_with(
        ("a", T0, 10.0), ("x", T0 + 1800, 5.0), ("b", T0 + 3600, 30.0)
    ).feature_values(T0 + 1800)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (tx("b", T0 + 3600), Reason.DUPLICATE_EVENT),
        (tx("b", T0 + 9000), Reason.EVENT_ID_REUSED),
        (tx("z", T0 + 3600 - 3601), Reason.TOO_LATE),
    ],
)
def test_customer_what_if_rejects_as_stage_1_would(event, reason):
    state = customer_with(("a", T0, 10.0), ("b", T0 + 3600, 30.0))
    rejection = customer_what_if(state, event, RETENTION.customer_s, 3600.0)
    assert not isinstance(rejection, list) and rejection.reason is reason


def test_terminal_what_if_reads_the_delayed_windows_and_rejects_a_reused_id():
    state = TerminalState()
    for i in range(5):
        state.apply(T0 + i * 60, f"e{i}", i, RETENTION.terminal_s, customer_id="c9")
    state.apply_label(T0, "e0", 1)
    later = T0 + 8 * 86_400
    assert terminal_what_if(state, tx("new", later)) == state.feature_values(later)
    assert terminal_what_if(None, tx("new", later)) == TerminalState().feature_values(later)
    reused = terminal_what_if(state, tx("e1", later, customer="c1"))
    assert not isinstance(reused, list) and reused.reason is Reason.EVENT_ID_REUSED


class _Table:
    name = "customer-state"


def test_peek_reads_the_table_without_caching_and_the_view_says_what_it_reflects():
    held = customer_with(("a", T0, 10.0), ("b", T0 + 3600, 30.0))
    table: dict[str, bytes] = {"c1": held.encode()}
    store: StateStore[CustomerState] = StateStore(CustomerState, table)
    state = peek(store, "c1", 0)
    assert state is not None and state.encode() == held.encode()
    assert store.cache == {} and store.dirty == {}
    assert peek(store, "nobody", 0) is None and store.cache == {}
    entity = EntityTable(Entity.CUSTOMER, _Table(), store, ("transactions", "rerouted"))
    view = entity_view(entity, "c1", 2, state, with_samples=True)
    assert view["event_time"] == "2026-03-01T01:00:00Z"
    assert view["features"] == dict(
        zip(entity.feature_names, held.feature_values(T0 + 3600), strict=True)
    )
    assert view["offsets"] == [{"topic": "transactions", "partition": 0, "offset": 1}]
    assert view["window"]["samples"] == 2 and len(view["samples"]) == 2


def test_openapi_document_holds_the_contract_schemas():
    document = openapi_document()
    schemas = document["components"]["schemas"]
    envelope = load_schema("score_envelope")
    assert schemas["ScoreEnvelope"]["properties"] == envelope["properties"]
    assert schemas["ScoreEnvelope"] == contract_schema("score_envelope")
    assert "$schema" not in schemas["Transaction"] and "$id" not in schemas["Transaction"]
    for schema in schemas.values():
        fastjsonschema.compile(schema)
    reasons = set(schemas["Problem"]["properties"]["reason"]["enum"])
    assert {r.value for r in Reason} <= reasons
    assert {"unavailable", "record_timeout", "unknown_entity"} <= reasons


def test_query_parameters():
    assert parse_time(None) is None
    assert parse_time("2026-03-01T00:00:00Z") == T0
    assert parse_time("2026-03-01T01:00:00+01:00") == T0
    with pytest.raises(ApiProblem) as bad:
        parse_time("yesterday")
    assert bad.value.status == 400
    assert flag("true") and flag("1") and not flag(None) and not flag("false")


def test_client_errors_carry_the_reason_and_retry_after():
    error = _error(503, {"retry-after": "2"}, b'{"reason":"unavailable","message":"rebalancing"}')
    assert isinstance(error, Unavailable) and error.retry_after == 2.0
    rejected = _error(422, {}, b'{"reason":"missing_field","message":"amount"}')
    assert isinstance(rejected, Rejected) and rejected.reason == "missing_field"
    assert isinstance(_error(404, {}, b"not json"), NotFound)


def test_one_row_scores_equal_the_models_own_bit_for_bit(tmp_path):
    """The what-if's logistic fast path gives what predict_proba gives (the stream's score),
    exactly; another model is scored by its own predict_proba."""
    import numpy as np

    from stream_app.api.scoring import (
        _without_validation,
        feature_row,
        one_row_model,
        score_envelope,
    )
    from stream_app.scoring.envelope import EnvelopeWriter, ScoredEvent
    from stream_app.scoring.model import ScoringModel
    from tests.unit.conftest import make_version

    model = ScoringModel.load(make_version(tmp_path, "logreg"))
    fast = one_row_model(model)
    assert fast is not model and one_row_model(model) is fast
    other = copy.copy(model)
    other.estimator = model.estimator.named_steps["clf"]  # not the pipeline: left as it is
    assert _without_validation(other) is other
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(3000, len(model.features))) * rng.choice([0.1, 3, 300], size=(3000, 1))
    rows += 10
    for row in rows[:300]:
        one = row[np.newaxis, :]
        assert fast.predict(one).tolist() == model.predict(one).tolist()
    assert fast.predict(rows).tolist() == model.predict(rows).tolist()
    event = tx("e", T0 + 7200, 50.0)
    row = feature_row(event, [1.0, 50.0, 2.0, 40.0, 3.0, 30.0], [4.0, 0.25, 9.0, 0.1, 20.0, 0.05])
    envelope = score_envelope(model, event, row, 0.0)
    X = np.array([row])
    expected = EnvelopeWriter(model).objects(
        [ScoredEvent("e", "c1", "t1", event.event_time, 0.0)], X, model.score_batch(X)
    )[0]
    for name in ("score", "decision", "uncertainty", "explanation", "feature_hash"):
        assert envelope[name] == expected[name], name
