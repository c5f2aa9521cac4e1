"""The models a running worker serves, and their swap between two micro-batches.

:class:`LiveModels` holds the champion (scored by the scoring stage), the challenger's
:class:`~stream_app.scoring.shadow.ShadowScorer` and the champion's drift monitor. The scoring
agent processes each micro-batch while holding :attr:`LiveModels.lock`; a swap takes the same
lock, so a batch is scored, shadowed and drift-observed by one set of models, and the envelope of
every event names the version that scored it.

A swap never exposes a half-loaded model: the new version is loaded (and its SHA-256 checked) in
a worker thread first, and only the finished object is put in place. A version that fails to
load is refused with an error in the log, and the worker keeps serving what it had.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from stream_app.config import Settings
from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
from stream_app.monitoring.drift_monitor import DriftMonitor
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.registry import resolve_version
from stream_app.scoring.serving import Role, Serving
from stream_app.scoring.shadow import ShadowCounts, ShadowScorer

log = logging.getLogger("stream_app.models")


class ModelUser(Protocol):
    """The scoring stage, as far as a swap is concerned."""

    def use_models(self, champion: ScoringModel, extra_features: Sequence[str]) -> None:
        """Score with ``champion``; also compute ``extra_features`` (the challenger's)."""


class LiveModels:
    """Champion, shadow challenger and drift monitor of one worker."""

    def __init__(
        self,
        settings: Settings,
        champion: ScoringModel,
        challenger: ScoringModel | None,
        stage: ModelUser,
        metrics: WorkerMetrics,
        follow: frozenset[Role] = frozenset(),
        loader: Callable[[Path], ScoringModel] = ScoringModel.load,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.metrics = metrics
        self.follow = follow
        self.loader = loader
        self.lock = asyncio.Lock()
        self.champion = champion
        self.shadow: ShadowScorer | None = None
        self.drift: DriftMonitor | None = None
        self.swaps = 0
        self.shadow_counts = ShadowCounts()  # one tally for every challenger this worker runs
        self._start_champion(champion)
        self.use_challenger(challenger)  # tells the stage both models' features

    @property
    def challenger(self) -> ScoringModel | None:
        """The challenger in shadow, if any."""
        return self.shadow.challenger if self.shadow is not None else None

    # --- swaps (call with ``lock`` held once the app runs) -----------------------------------

    def use_champion(self, model: ScoringModel) -> None:
        """Score with ``model`` from the next batch on; its drift window starts empty."""
        challenger = self.challenger
        self.stage.use_models(model, challenger.features if challenger is not None else ())
        self._start_champion(model)

    def _start_champion(self, model: ScoringModel) -> None:
        """The champion's metrics line and a new drift window."""
        self.champion = model
        self.metrics.set_model(model.version, model.sha256)
        s = self.settings
        self.drift = (
            DriftMonitor(
                model,
                max_events=s.drift_window_events,
                max_seconds=s.drift_window_seconds,
                min_events=s.drift_min_events,
                detector=s.drift_detector,
            )
            if s.drift_enabled
            else None
        )

    def use_challenger(self, model: ScoringModel | None) -> None:
        """Shadow ``model`` (None: stop shadowing). Jobs queued for the old one are dropped and
        counted as skipped; the shadow task picks the new scorer up."""
        old = self.shadow
        self.shadow = (
            ShadowScorer(
                model,
                self.settings.shadow_max_pending,
                self.settings.emit_features,
                version_dir=self.settings.models_dir / model.version,
                counts=self.shadow_counts,
                nice=self.settings.shadow_nice,
            )
            if model is not None
            else None
        )
        self.stage.use_models(self.champion, model.features if model is not None else ())
        if model is not None:
            self.metrics.set_challenger(model.version, model.sha256)
        else:
            self.metrics.clear_challenger()
        if old is not None:
            dropped = old.close()
            if dropped:
                log.info("%d queued shadow events of %s dropped", dropped, old.challenger.version)

    # --- following serving.json -------------------------------------------------------------

    async def follow_serving(self, serving: Serving) -> list[str]:
        """Swap every followed role whose version differs from ``serving``; what changed."""
        loop = asyncio.get_running_loop()
        changes: list[str] = []
        for role in ("champion", "challenger"):
            wanted = serving.get(role)
            current = self.champion if role == "champion" else self.challenger
            if wanted == (current.version if current is not None else None):
                continue
            if role not in self.follow:
                log.warning(
                    "serving.json names %s %s, but this worker's %s is pinned to %s by its "
                    "settings: not swapping (unset STREAM_APP_%s to follow promotions)",
                    role,
                    wanted,
                    role,
                    current.version if current is not None else None,
                    role.upper(),
                )
                continue
            if wanted is None and role == "champion":
                continue
            model: ScoringModel | None = None
            if wanted is not None:
                try:
                    path = resolve_version(self.settings.models_dir, wanted)
                    model = await loop.run_in_executor(None, self.loader, path)
                except (ModelIntegrityError, ModelNotFoundError) as exc:
                    log.error("not swapping %s to %s: %s", role, wanted, exc)
                    continue
            async with self.lock:
                if role == "champion":
                    assert model is not None
                    self.use_champion(model)
                else:
                    self.use_challenger(model)
                self.swaps += 1
            changes.append(f"{role} {current.version if current else None} -> {wanted}")
            log.info(
                "%s now %s%s (was %s)",
                role,
                wanted,
                f" (sha256 {model.sha256[:12]})" if model is not None else "",
                current.version if current is not None else None,
            )
        return changes

    def describe(self) -> dict[str, Any]:
        """Versions served now (logs, tests)."""
        challenger = self.challenger
        return {
            "champion": self.champion.version,
            "challenger": challenger.version if challenger is not None else None,
            "swaps": self.swaps,
        }
