"""Logging: text for people by default, JSON lines when ``STREAM_APP_LOG_FORMAT=json``.

The worker hands :func:`logging_config` to Faust's worker (which otherwise installs its own
coloured text handler); the other long-running commands call :func:`configure_logging`. JSON
lines come from python-json-logger: ``time``, ``level``, ``logger``, ``message`` and every
``extra`` field of the call, so a scoring line is queryable by ``event_id``, ``model_version`` or
``feature_hash`` without parsing the message.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Sequence
from typing import Any

from stream_app.config import Settings
from stream_app.scoring.envelope import EventLike
from stream_app.scoring.model import BatchScores

TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}

#: The per-event scoring log (DEBUG): one line per scored event.
score_log = logging.getLogger("stream_app.scored")


def logging_config(settings: Settings) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for ``settings.log_format`` and ``log_level``."""
    if settings.log_format == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": JSON_RENAMES,
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": settings.log_level, "handlers": ["default"]},
    }


def configure_logging(settings: Settings) -> None:
    """Install :func:`logging_config` on the root logger (commands other than the worker)."""
    logging.config.dictConfig(logging_config(settings))


def log_scores(
    logger: logging.Logger, events: Sequence[EventLike], scores: BatchScores, version: str
) -> None:
    """One DEBUG line per scored event with its id, model version, feature hash, score and
    decision (as ``extra`` fields too). The caller checks ``isEnabledFor(DEBUG)`` once per batch,
    so at INFO this costs nothing per event."""
    for i, event in enumerate(events):
        score, decision, feature_hash = (
            float(scores.score[i]),
            str(scores.decision[i]),
            scores.feature_hash[i],
        )
        logger.debug(
            "scored %s: %.4f %s (model %s, features %s)",
            event.event_id,
            score,
            decision,
            version,
            feature_hash,
            extra={
                "event_id": event.event_id,
                "model_version": version,
                "feature_hash": feature_hash,
                "score": score,
                "decision": decision,
            },
        )
