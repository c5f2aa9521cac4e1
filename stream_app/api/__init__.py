"""The worker's HTTP API: interactive queries over the live window state and synchronous scoring
(issue 17), on the Faust web port. ``install`` wires it into an app (``stream_app.app``).

Modules, one job each: ``ownership`` (which worker owns a key's partition, and may this one
answer now), ``forward`` (requests passed on to the owner), ``entities`` (reading a state without
changing it, the entity views, what-if features), ``scoring`` (one envelope), ``record``
(publish and wait for the stream's envelope), ``openapi`` (the document from ``schemas/``),
``problems`` (error answers), ``service`` (the logic), ``views`` (the routes).
"""

from __future__ import annotations

from typing import Any

from stream_app.api.entities import EntityTable
from stream_app.api.service import ApiService, ApiState
from stream_app.config import Settings

__all__ = ["ApiService", "ApiState", "EntityTable", "install"]


def install(app: Any, settings: Settings, state: ApiState) -> ApiService:
    """Serve the API on ``app``'s web server from ``state``."""
    from stream_app.api.views import install_api

    service = ApiService(app, settings, state)
    install_api(app, service)
    return service
