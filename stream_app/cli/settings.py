"""The one way a command reads its settings: :func:`command_settings`.

Every ``stream-app`` command calls it once, first: the environment as it is when the command
runs, read afresh (the cache of :func:`stream_app.config.get_settings` is cleared first), and then
cached for the rest of the command, so the command and any code it calls that asks
:func:`~stream_app.config.get_settings` see one and the same :class:`Settings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream_app.config import Settings


def command_settings() -> Settings:
    """The settings of the command now running, read from the environment."""
    from stream_app.config import get_settings

    get_settings.cache_clear()
    return get_settings()
