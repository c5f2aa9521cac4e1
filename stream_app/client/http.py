"""A small typed client for a worker's HTTP API (``stream_app.api``): interactive queries and
synchronous scoring.

>>> with HttpClient("http://127.0.0.1:6066") as api:  # doctest: +SKIP
...     api.customer_features("42").features["CUSTOMER_ID_NB_TX_7DAY_WINDOW"]
...     api.score(transaction).envelope["score"]               # what-if: changes nothing
...     api.score(transaction, record=True).envelope["score"]  # the stream's own envelope

Any worker of the group answers (it forwards a query to the worker that owns the key). Errors
are :class:`ApiError` subclasses carrying the API's reason code: :class:`Rejected` (422, a
dead-letter reason such as ``missing_field`` or ``duplicate_event``), :class:`NotFound` (404),
:class:`Unavailable` (503, with ``retry_after``: a rebalance or recovery; ``retries`` makes the
client wait and ask again), :class:`RecordTimeout` (504). One keep-alive connection per client,
not shared between threads.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote, urlencode, urlsplit

import orjson

if TYPE_CHECKING:
    from stream_app.client.records import ScoreEnvelope


class ApiError(Exception):
    """An answer other than 200: ``status``, ``reason`` (code), ``message``."""

    def __init__(
        self, status: int, reason: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class Rejected(ApiError):
    """422: the stream would dead-letter the transaction; ``reason`` is the dead-letter code."""


class NotFound(ApiError):
    """404: no state for that id."""


class Unavailable(ApiError):
    """503: the group rebalances or recovers, or the owner does not answer; ask again after
    ``retry_after`` seconds."""


class RecordTimeout(ApiError):
    """504: the recorded transaction's envelope did not come in time (it is still scored)."""


_ERRORS: dict[int, type[ApiError]] = {
    422: Rejected,
    404: NotFound,
    503: Unavailable,
    504: RecordTimeout,
}


@dataclass(frozen=True)
class EntityFeatures:
    """The live window state of one customer or terminal (``GET /v1/.../features``)."""

    entity: str
    id: str
    partition: int
    event_time: str | None
    features_at: str | None
    features: dict[str, float]
    offsets: list[dict[str, Any]]
    window: dict[str, Any]
    served_by: str
    as_of: str
    stage: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] | None = None

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Self:
        """From the API's JSON."""
        return cls(
            entity=obj["entity"],
            id=obj["id"],
            partition=int(obj["partition"]),
            event_time=obj["event_time"],
            features_at=obj["features_at"],
            features={k: float(v) for k, v in obj["features"].items()},
            offsets=list(obj["offsets"]),
            window=dict(obj["window"]),
            served_by=obj["served_by"],
            as_of=obj["as_of"],
            stage=list(obj.get("stage") or []),
            samples=obj.get("samples"),
        )


@dataclass(frozen=True)
class ScoreResult:
    """A score envelope (``schemas/score_envelope.schema.json``) and how it was made: ``mode``
    ``what-if`` (nothing recorded) or ``recorded`` (the stream's own envelope)."""

    envelope: dict[str, Any]
    mode: str
    served_by: str

    @property
    def score(self) -> float:
        """The probability of fraud."""
        return float(self.envelope["score"])

    @property
    def decision(self) -> str:
        """approve, review or decline."""
        return str(self.envelope["decision"])

    def typed(self) -> ScoreEnvelope:
        """The envelope as :class:`stream_app.client.ScoreEnvelope`."""
        from stream_app.client.records import ScoreEnvelope

        return ScoreEnvelope.from_dict(self.envelope)


class HttpClient:
    """Calls one worker's API (any worker of the group will do)."""

    def __init__(
        self, base_url: str = "http://127.0.0.1:6066", timeout: float = 5.0, retries: int = 0
    ) -> None:
        """``retries``: how many times a 503 is asked again, after its ``Retry-After``."""
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"base_url {base_url!r}: expected http://host:port")
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self.retries = retries
        self._conn: http.client.HTTPConnection | None = None

    # --- the endpoints ----------------------------------------------------------------------------

    def customer_features(
        self, customer_id: str, at: str | None = None, samples: bool = False
    ) -> EntityFeatures:
        """The customer's live window state and features (at ``at``, RFC 3339, if given)."""
        return self._features("customers", customer_id, at, samples)

    def terminal_features(
        self, terminal_id: str, at: str | None = None, samples: bool = False
    ) -> EntityFeatures:
        """The terminal's live window state and features."""
        return self._features("terminals", terminal_id, at, samples)

    def score(
        self,
        transaction: Mapping[str, Any] | bytes,
        record: bool = False,
        features: bool = False,
        timeout: float | None = None,
    ) -> ScoreResult:
        """Score ``transaction`` (the input contract, as a mapping or its JSON bytes). What-if
        by default; ``record=True`` publishes it and returns the stream's envelope (``timeout``
        seconds to wait for it)."""
        query: dict[str, str] = {}
        if record:
            query["record"] = "true"
            if timeout is not None:
                query["timeout"] = f"{timeout:g}"
        if features:
            query["features"] = "true"
        body = transaction if isinstance(transaction, bytes) else orjson.dumps(dict(transaction))
        path = "/v1/score" + (f"?{urlencode(query)}" if query else "")
        wait = self.timeout if timeout is None else max(self.timeout, timeout + 1.0)
        answer, headers = self._call("POST", path, body, wait)
        return ScoreResult(
            answer, headers.get("x-stream-app-mode", ""), headers.get("x-stream-app-served-by", "")
        )

    def openapi(self) -> dict[str, Any]:
        """The API's OpenAPI document."""
        return self._call("GET", "/openapi.json")[0]

    # --- plumbing ---------------------------------------------------------------------------------

    def _features(self, kind: str, key: str, at: str | None, samples: bool) -> EntityFeatures:
        query: dict[str, str] = {}
        if at is not None:
            query["at"] = at
        if samples:
            query["samples"] = "true"
        path = f"/v1/{kind}/{quote(key, safe='')}/features"
        if query:
            path += f"?{urlencode(query)}"
        return EntityFeatures.from_dict(self._call("GET", path)[0])

    def _call(
        self, method: str, path: str, body: bytes | None = None, timeout: float | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        attempt = 0
        while True:
            status, headers, payload = self._request(method, path, body, timeout or self.timeout)
            if status == 200:
                return orjson.loads(payload), headers
            error = _error(status, headers, payload)
            if isinstance(error, Unavailable) and attempt < self.retries:
                attempt += 1
                time.sleep(error.retry_after or 1.0)
                continue
            raise error

    def _request(
        self, method: str, path: str, body: bytes | None, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for fresh in (False, True):
            conn = self._connection(fresh, timeout)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (http.client.HTTPException, ConnectionError) as exc:
                self.close()
                if fresh:
                    raise ApiError(
                        503, "unavailable", f"{self.base_url} did not answer: {exc}", 1.0
                    ) from exc
                continue  # a kept-alive connection the server had closed: once more, fresh
            except OSError as exc:  # refused, timed out
                self.close()
                raise ApiError(
                    503, "unavailable", f"{self.base_url} did not answer: {exc}", 1.0
                ) from exc
            return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
        raise AssertionError("unreachable")

    def _connection(self, fresh: bool, timeout: float) -> http.client.HTTPConnection:
        if fresh:
            self.close()
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        else:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
        return self._conn

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _error(status: int, headers: Mapping[str, str], payload: bytes) -> ApiError:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        body = {"reason": "http_error", "message": payload[:200].decode(errors="replace")}
    retry = headers.get("retry-after")
    kind = _ERRORS.get(status, ApiError)
    return kind(
        status,
        str(body.get("reason", "http_error")),
        str(body.get("message", "")),
        float(retry) if retry and retry.replace(".", "", 1).isdigit() else None,
    )
