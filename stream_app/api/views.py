"""The API's routes on the worker's Faust web server (aiohttp), next to ``/readyz``.

* ``GET /v1/customers/{id}/features``, ``GET /v1/terminals/{id}/features`` (``?at=``,
  ``?samples=true``): the entity's live window state and features, from the worker that owns the
  id's partition (forwarded there when asked elsewhere).
* ``POST /v1/score``: a transaction (``schemas/transaction.schema.json``) → its score envelope
  from the current customer and terminal state, each fetched from its owner, with the champion;
  nothing changes (what-if). ``?record=true`` publishes it and answers with the stream's own
  envelope (``?timeout=`` seconds, then 504). Invalid input: 422 with the dead-letter reason.
* ``GET /openapi.json``: the OpenAPI document generated from ``schemas/``.
* ``POST /v1/internal/what-if/{customer|terminal}``: one owner's part of a what-if (workers
  call it on each other).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from faust import web

from stream_app.api.openapi import openapi_document
from stream_app.api.problems import FORWARDED_BY, MODE, SERVED_BY, ApiProblem
from stream_app.api.service import INTERNAL_WHAT_IF, ApiService, flag, parse_time
from stream_app.features.definitions import Entity

JSON = "application/json"


def _respond(view: web.View, status: int, body: Any, headers: dict[str, str]) -> web.Response:
    return view.bytes(orjson.dumps(body), content_type=JSON, status=status, headers=headers)


async def _answer(
    view: web.View, me: str, work: Callable[[], Awaitable[web.Response | dict[str, Any]]]
) -> web.Response:
    """``work()``'s dict as JSON (200), its response as is, or its problem; with a
    ``Server-Timing`` header: the milliseconds from the handler's start to its answer (what the
    API itself took, without the time the request waited for the event loop)."""
    started = time.perf_counter()
    try:
        result = await work()
    except ApiProblem as problem:
        response = _respond(
            view, problem.status, problem.body(), {**problem.headers(), SERVED_BY: me}
        )
    else:
        response = (
            _respond(view, 200, result, {SERVED_BY: me}) if isinstance(result, dict) else result
        )
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.3f}"
    return response


def install_api(app: Any, service: ApiService) -> None:
    """Register the API's routes on ``app``'s web server."""
    me = service.ownership.me

    def features_view(entity: Entity) -> type[web.View]:
        table = service.tables[entity]

        class FeaturesView(web.View):
            """The live window state and features of one entity."""

            async def get(self, request: web.Request, id: str) -> web.Response:
                """Answered here when this worker owns ``id``'s partition, else forwarded."""

                async def work() -> web.Response | dict[str, Any]:
                    forwarded = FORWARDED_BY in request.headers
                    owner, partition = service.route(table, id, forwarded)
                    if owner is not None:
                        status, headers, body = await service.forwarder.call(
                            owner, "GET", request.rel_url
                        )
                        return self.bytes(
                            body,
                            content_type=JSON,
                            status=status,
                            headers={
                                k: v for k, v in headers.items() if k.lower() != "content-type"
                            },
                        )
                    query = request.query
                    return service.features(
                        entity,
                        id,
                        partition,
                        parse_time(query.get("at")),
                        flag(query.get("samples")),
                    )

                return await _answer(self, me, work)

        return FeaturesView

    class ScoreView(web.View):
        """Synchronous scoring: what-if, or record and wait for the stream's envelope."""

        async def post(self, request: web.Request) -> web.Response:
            """The envelope (200), or a problem (422, 503, 504...)."""
            arrived_ms = time.time() * 1000.0
            raw = await request.read()
            query = request.query

            async def work() -> web.Response:
                if flag(query.get("record")):
                    timeout = query.get("timeout")
                    try:
                        seconds = float(timeout) if timeout else None
                    except ValueError:
                        raise ApiProblem(
                            400, "bad_request", f"timeout={timeout!r} is not a number of seconds"
                        ) from None
                    envelope = await service.record(raw, seconds)
                    mode = "recorded"
                else:
                    envelope = await service.score(raw, arrived_ms, flag(query.get("features")))
                    mode = "what-if"
                return _respond(self, 200, envelope, {SERVED_BY: me, MODE: mode})

            return await _answer(self, me, work)

    def what_if_view(entity: Entity) -> type[web.View]:
        class WhatIfView(web.View):
            """One owner's part of a what-if score."""

            async def post(self, request: web.Request) -> web.Response:
                """``{"values": [...], "partition": p}`` or a problem."""
                raw = await request.read()

                async def work() -> dict[str, Any]:
                    return service.owner_what_if(entity, service.decode(raw))

                return await _answer(self, me, work)

        return WhatIfView

    document = orjson.dumps(openapi_document())

    class OpenApiView(web.View):
        """The OpenAPI document."""

        async def get(self, request: web.Request) -> web.Response:
            """OpenAPI 3.1, generated from ``schemas/``."""
            return self.bytes(document, content_type=JSON)

    app.page("/v1/customers/{id:.+}/features", name="stream-app-customer-features")(
        features_view(Entity.CUSTOMER)
    )
    app.page("/v1/terminals/{id:.+}/features", name="stream-app-terminal-features")(
        features_view(Entity.TERMINAL)
    )
    app.page("/v1/score", name="stream-app-score")(ScoreView)
    for entity in Entity:
        app.page(INTERNAL_WHAT_IF.format(entity=entity.value), name=f"stream-app-what-if-{entity}")(
            what_if_view(entity)
        )
    app.page("/openapi.json", name="stream-app-openapi")(OpenApiView)

    @app.on_before_shutdown.connect
    def close_api(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        service.close()
