"""What the HTTP API answers when it cannot answer with data: one JSON shape for every error.

Every error body is ``{"status": int, "reason": str, "message": str}``. ``reason`` is a
dead-letter reason code (``stream_app.io.deadletter.Reason``) for a transaction the stream would
reject (422), or one of :data:`API_REASONS` otherwise. A 503 carries ``Retry-After``: the worker
rebalances or recovers, or the key's owner is unknown or does not answer; asking again later
(any worker) gets current data, never a stale copy.
"""

from __future__ import annotations

from typing import Any

from stream_app.io.deadletter import Rejection

RETRY_AFTER = "Retry-After"
FORWARDED_BY = "X-Stream-App-Forwarded-By"
"""Request header of a request one worker forwarded to another (it is never forwarded again)."""
SERVED_BY = "X-Stream-App-Served-By"
"""Response header: the canonical URL of the worker that read the state."""
MODE = "X-Stream-App-Mode"
"""Response header of ``POST /v1/score``: ``what-if`` or ``recorded``."""

API_REASONS = (
    "unavailable",  # 503: rebalance, recovery, halted engine, owner unknown or silent
    "unknown_entity",  # 404: no state for this id on its owner
    "bad_request",  # 400: a query parameter that does not parse
    "record_timeout",  # 504: no envelope for a recorded transaction in time
    "publish_failed",  # 502: the transaction could not be published to Kafka
)
"""Reason codes of API errors that are not dead-letter reasons."""


class ApiProblem(Exception):
    """An answer other than 200: raised by the API's code, turned into a response by the view."""

    def __init__(
        self, status: int, reason: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"status": self.status, "reason": self.reason, "message": self.message}

    def headers(self) -> dict[str, str]:
        """``Retry-After`` when set."""
        return {RETRY_AFTER: str(self.retry_after)} if self.retry_after is not None else {}


def unavailable(message: str, retry_after: int) -> ApiProblem:
    """503: ask again after ``retry_after`` seconds."""
    return ApiProblem(503, "unavailable", message, retry_after)


def rejected(rejection: Rejection) -> ApiProblem:
    """422 with the dead-letter reason the stream would give the same transaction."""
    return ApiProblem(422, rejection.reason.value, rejection.message)


def bad_request(message: str) -> ApiProblem:
    """400: a query parameter the API cannot read."""
    return ApiProblem(400, "bad_request", message)
