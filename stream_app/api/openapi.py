"""The OpenAPI 3.1 document of the HTTP API, generated from the JSON Schemas in ``schemas/``.

The request body of ``POST /v1/score`` is ``schemas/transaction.schema.json`` and its answer
``schemas/score_envelope.schema.json`` (the ``scores`` topic's records), each with its ``$ref``s
inlined (``stream_app.io.schemas.load_schema``); the error reasons are the dead-letter reason
codes of ``schemas/dead_letter.schema.json`` plus the API's own. The entity views' schema is
written here, with the feature names from ``stream_app.features``. OpenAPI 3.1 takes JSON Schema
as its schema dialect, so the contract's schemas go in unchanged but for their ``$schema``,
``$id`` and (inlined) ``definitions``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from stream_app import __version__ as version
from stream_app.api.problems import API_REASONS
from stream_app.features.state import CUSTOMER_FEATURES, TERMINAL_FEATURES
from stream_app.io.schemas import load_schema

_DROPPED = ("$schema", "$id", "definitions")


def contract_schema(name: str) -> dict[str, Any]:
    """``schemas/<name>.schema.json`` as an OpenAPI component."""
    return {k: v for k, v in load_schema(name).items() if k not in _DROPPED}


def _entity_schema(title: str, features: tuple[str, ...], sample: dict[str, Any]) -> dict[str, Any]:
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    return {
        "title": title,
        "type": "object",
        "required": [
            "entity",
            "id",
            "partition",
            "event_time",
            "offsets",
            "features_at",
            "features",
            "window",
            "served_by",
            "as_of",
        ],
        "properties": {
            "entity": {"enum": ["customer", "terminal"]},
            "id": {"type": "string"},
            "partition": {"type": "integer", "description": "murmur2(id) % partitions"},
            "event_time": {
                **nullable_time,
                "description": "The newest event time the state holds (what it reflects).",
            },
            "offsets": {
                "type": "array",
                "description": "The last input offset applied to this entity, per source.",
                "items": {
                    "type": "object",
                    "properties": {
                        "topic": {"type": ["string", "null"]},
                        "partition": {"type": ["integer", "null"]},
                        "offset": {"type": "integer"},
                    },
                },
            },
            "stage": {
                "type": "array",
                "description": "Where the owner's stage is on the entity's input partitions: "
                "the next offset it takes and the records between it and the log end.",
                "items": {
                    "type": "object",
                    "properties": {
                        "topic": {"type": "string"},
                        "partition": {"type": "integer"},
                        "next_offset": {"type": ["integer", "null"]},
                        "lag": {"type": ["integer", "null"]},
                    },
                },
            },
            "features_at": {
                **nullable_time,
                "description": "The event time the features are computed for (query `at`, "
                "default: event_time, i.e. the features of the entity's latest transaction).",
            },
            "features": {
                "type": "object",
                "required": list(features),
                "properties": {name: {"type": "number"} for name in features},
                "additionalProperties": False,
            },
            "window": {
                "type": "object",
                "properties": {
                    "samples": {"type": "integer"},
                    "oldest": nullable_time,
                    "newest": nullable_time,
                    "frauds_known": {"type": "integer"},
                    "pending_fraud_labels": {"type": "integer"},
                },
            },
            "samples": {"type": "array", "items": {"type": "object", "properties": sample}},
            "served_by": {"type": "string", "description": "URL of the owner that answered."},
            "as_of": {"type": "string", "format": "date-time", "description": "Wall clock."},
        },
    }


def _problem_schema() -> dict[str, Any]:
    reasons = list(load_schema("dead_letter")["properties"]["reason"]["enum"]) + list(API_REASONS)
    return {
        "title": "Problem",
        "type": "object",
        "required": ["status", "reason", "message"],
        "properties": {
            "status": {"type": "integer"},
            "reason": {
                "enum": reasons,
                "description": "A dead-letter reason code (422: the stream would reject the "
                "transaction for it) or one of the API's own.",
            },
            "message": {"type": "string"},
        },
    }


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _problem(description: str, retry: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _json("Problem")}
    if retry:
        answer["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before asking again (any worker).",
                "schema": {"type": "integer"},
            }
        }
    return answer


def _features_path(entity: str, schema: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": f"The live window state and features of one {entity}",
            "description": "Answered by the worker that owns the id's partition (forwarded to it "
            "when asked elsewhere). During a rebalance or recovery: 503 with Retry-After.",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "at",
                    "in": "query",
                    "required": False,
                    "description": "Compute the features for an event at this RFC 3339 time.",
                    "schema": {"type": "string", "format": "date-time"},
                },
                {
                    "name": "samples",
                    "in": "query",
                    "required": False,
                    "description": "Include every retained sample.",
                    "schema": {"type": "boolean"},
                },
            ],
            "responses": {
                "200": {"description": "The state", "content": _json(schema)},
                "400": _problem("A query parameter that does not parse"),
                "404": _problem("No state for this id"),
                "503": _problem("Rebalance, recovery, or the owner does not answer", True),
            },
        }
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The document served at ``/openapi.json``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "stream_app worker API",
            "version": version,
            "description": "Interactive queries over the live window state, and synchronous "
            "scoring with the champion, on every worker's web port.",
        },
        "paths": {
            "/v1/customers/{id}/features": _features_path("customer", "CustomerFeatures"),
            "/v1/terminals/{id}/features": _features_path("terminal", "TerminalFeatures"),
            "/v1/score": {
                "post": {
                    "summary": "Score a transaction now (what-if), or record it and answer with "
                    "the stream's envelope",
                    "parameters": [
                        {
                            "name": "record",
                            "in": "query",
                            "required": False,
                            "description": "Publish the transaction to `transactions` and answer "
                            "with the envelope the stream produces for it.",
                            "schema": {"type": "boolean", "default": False},
                        },
                        {
                            "name": "features",
                            "in": "query",
                            "required": False,
                            "description": "What-if: include the scored feature vector.",
                            "schema": {"type": "boolean", "default": False},
                        },
                        {
                            "name": "timeout",
                            "in": "query",
                            "required": False,
                            "description": "record=true: seconds to wait for the envelope.",
                            "schema": {"type": "number", "exclusiveMinimum": 0},
                        },
                    ],
                    "requestBody": {"required": True, "content": _json("Transaction")},
                    "responses": {
                        "200": {
                            "description": "The score envelope (header X-Stream-App-Mode: "
                            "what-if or recorded)",
                            "content": _json("ScoreEnvelope"),
                        },
                        "422": _problem(
                            "The stream would dead-letter the transaction (reason code)"
                        ),
                        "502": _problem("The transaction could not be published"),
                        "503": _problem("Rebalance, recovery, or an owner does not answer", True),
                        "504": _problem("record=true: no envelope within the timeout"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
        },
        "components": {
            "schemas": {
                "Transaction": contract_schema("transaction"),
                "ScoreEnvelope": contract_schema("score_envelope"),
                "CustomerFeatures": _entity_schema(
                    "Customer features",
                    CUSTOMER_FEATURES,
                    {
                        "event_id": {"type": ["string", "null"]},
                        "event_time": {"type": "string"},
                        "amount": {"type": "number"},
                    },
                ),
                "TerminalFeatures": _entity_schema(
                    "Terminal features",
                    TERMINAL_FEATURES,
                    {
                        "event_id": {"type": ["string", "null"]},
                        "event_time": {"type": "string"},
                        "fraud": {"type": "integer"},
                        "customer_id": {"type": ["string", "null"]},
                    },
                ),
                "Problem": _problem_schema(),
            }
        },
    }
