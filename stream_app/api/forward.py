"""Requests passed on to the worker that owns a key's partition, over the app's HTTP client.

A forwarded request carries :data:`~stream_app.api.problems.FORWARDED_BY` and is never forwarded
again: a worker that receives one for a key it does not own (the two disagree on the assignment,
during a rebalance) answers 503 with ``Retry-After``. The owner's status, body and ``Retry-After``
come back as they are; an owner that does not answer within the timeout is a 503.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from yarl import URL

from stream_app.api.problems import FORWARDED_BY, RETRY_AFTER, SERVED_BY, ApiProblem, unavailable

PASSED_BACK = ("Content-Type", RETRY_AFTER, SERVED_BY)


class Forwarder:
    """HTTP calls from this worker to its peers."""

    def __init__(self, app: Any, me: str, timeout_s: float, retry_after_s: int) -> None:
        self.app = app
        self.me = me
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retry_after_s = retry_after_s

    async def call(
        self, owner: str, method: str, path_qs: URL, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """``method`` ``path_qs`` (path and query, as encoded) on ``owner``: status, the headers
        passed back, body. Raises a 503 :class:`ApiProblem` when the owner does not answer."""
        url = URL(owner).join(path_qs)
        headers = {FORWARDED_BY: self.me}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self.app.http_client.request(
                method, url, data=body, headers=headers, timeout=self.timeout
            ) as response:
                payload = await response.read()
                kept = {k: response.headers[k] for k in PASSED_BACK if k in response.headers}
                return response.status, kept, payload
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise unavailable(
                f"the worker that owns this key's partition ({owner}) did not answer: "
                f"{type(exc).__name__}: {exc}",
                self.retry_after_s,
            ) from exc

    async def post_json(self, owner: str, path: str, body: bytes) -> dict[str, Any]:
        """POST ``body`` to ``owner``'s ``path``; its JSON answer when 200, else its error
        raised as an :class:`ApiProblem` (status, reason, message and ``Retry-After`` kept)."""
        status, headers, payload = await self.call(owner, "POST", URL(path), body)
        try:
            answer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            answer = None
        if status == 200 and isinstance(answer, dict):
            return answer
        if isinstance(answer, dict) and "reason" in answer:
            retry = headers.get(RETRY_AFTER)
            raise ApiProblem(
                status,
                str(answer["reason"]),
                str(answer.get("message", "")),
                int(retry) if retry and retry.isdigit() else None,
            )
        raise unavailable(
            f"the worker that owns this key's partition ({owner}) answered {status} without a "
            "readable body",
            self.retry_after_s,
        )
