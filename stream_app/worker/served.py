"""The models a running worker serves, and their swap between two micro-batches.

:class:`ServedModels` holds the champion (scored by the scoring stage), the challenger's
:class:`~stream_app.scoring.shadow.ShadowScorer` and the champion's drift monitor. The scoring
stage's handler runs a micro-batch without yielding to the event loop, and a swap runs on the
loop, under :attr:`ServedModels.lock` (one swap at a time): a batch is scored, shadowed and
drift-observed by one set of models, and the envelope of every event names the version that
scored it.

The canary (:mod:`stream_app.scoring.canary`) is the challenger deciding on the scoring path for a
share of customers: it is on while the challenger this worker serves is the version the canary
names (``STREAM_APP_CANARY_SHARE`` pins the share for whatever challenger is served). The shadow
goes on for the other customers.

What the served models follow (``serving.json``, the control topic) is
:class:`stream_app.worker.live.LiveModels`'.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from stream_app.config import Settings
from stream_app.monitoring.drift_monitor import DriftMonitor
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.scoring.canary import CanarySpec
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.serving import Role
from stream_app.scoring.shadow import ShadowCounts, ShadowScorer

log = logging.getLogger("stream_app.models")


class ModelUser(Protocol):
    """The scoring stage, as far as a swap is concerned."""

    def use_models(self, champion: ScoringModel, extra_features: Sequence[str]) -> None:
        """Score with ``champion``; also compute ``extra_features`` (the challenger's)."""

    def use_canary(self, canary: ScoringModel | None, share: float = 0.0) -> None:
        """Let ``canary`` decide for ``share`` of customers (None: nobody)."""


class ServedModels:
    """Champion, shadow challenger and drift monitor of one worker."""

    def __init__(
        self,
        settings: Settings,
        champion: ScoringModel,
        challenger: ScoringModel | None,
        stage: ModelUser,
        metrics: WorkerMetrics,
        canary: CanarySpec | None = None,
    ) -> None:
        """``canary``: the canary the worker starts with (the assignment's or serving.json's;
        ignored when ``settings.canary_share`` pins it)."""
        self.settings = settings
        self.stage = stage
        self.metrics = metrics
        self.lock = asyncio.Lock()
        self.champion = champion
        self.shadow: ShadowScorer | None = None
        self.drift: DriftMonitor | None = None
        self.swaps = 0
        self.shadow_counts = ShadowCounts()  # one tally for every challenger this worker runs
        self.canary_spec = (
            CanarySpec(challenger.version, settings.canary_share)
            if settings.canary_share is not None and challenger is not None
            else canary
        )
        self.canary_active = False
        self.canary_detail = "no canary"
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
        self._apply_canary()

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
        self._apply_canary()

    # --- the canary (call with ``lock`` held once the app runs) -------------------------------

    def use_canary_spec(self, spec: CanarySpec | None) -> bool:
        """Follow the canary ``spec`` names (unless the setting pins the share); whether what
        the stage does changed."""
        if self.settings.canary_share is not None:
            return False
        before = (self.canary_spec, self.canary_active)
        self.canary_spec = spec
        self._apply_canary()
        return (self.canary_spec, self.canary_active) != before

    def _apply_canary(self) -> None:
        """Tell the stage who decides: the challenger for the canary's share when it is the
        canary's version, else the champion for everyone."""
        spec = self.canary_spec
        if self.settings.canary_share is not None:  # pinned: whatever challenger is served
            challenger = self.challenger
            spec = (
                CanarySpec(challenger.version, self.settings.canary_share)
                if challenger is not None
                else None
            )
            self.canary_spec = spec
        challenger = self.challenger
        active = (
            spec is not None
            and spec.share > 0
            and challenger is not None
            and challenger.version == spec.version
        )
        if active:
            assert spec is not None and challenger is not None
            self.stage.use_canary(challenger, spec.share)
            self.canary_detail = f"canary {spec.describe()}"
            self.metrics.set_canary(spec.version, spec.share)
        else:
            self.stage.use_canary(None)
            self.metrics.set_canary(None, 0.0)
            if spec is None or spec.share <= 0:
                self.canary_detail = "no canary"
            else:
                served = challenger.version if challenger is not None else None
                self.canary_detail = (
                    f"canary {spec.describe()} NOT on: this worker's challenger is {served}"
                )
        self.canary_active = active

    def canary_arm(self) -> tuple[ScoringModel, float] | None:
        """(model, share) of the canary deciding now, None without one (the HTTP API's what-if
        routes a customer as the scoring stage does)."""
        spec, challenger = self.canary_spec, self.challenger
        if not self.canary_active or spec is None or challenger is None:
            return None
        return challenger, spec.share

    async def _swap(self, role: Role, model: ScoringModel | None) -> None:
        """Put ``model`` in ``role`` between two batches (None: no challenger)."""
        async with self.lock:
            if role == "champion":
                assert model is not None
                self.use_champion(model)
            else:
                self.use_challenger(model)
            self.swaps += 1

    def describe(self) -> dict[str, Any]:
        """Versions served now (logs, tests)."""
        challenger = self.challenger
        return {
            "champion": self.champion.version,
            "challenger": challenger.version if challenger is not None else None,
            "canary": self.canary_detail,
            "swaps": self.swaps,
        }
