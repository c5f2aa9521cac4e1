"""The models a running worker serves, and their swap between two micro-batches.

:class:`LiveModels` holds the champion (scored by the scoring stage), the challenger's
:class:`~stream_app.scoring.shadow.ShadowScorer` and the champion's drift monitor. The scoring
agent processes each micro-batch while holding :attr:`LiveModels.lock`; a swap takes the same
lock, so a batch is scored, shadowed and drift-observed by one set of models, and the envelope of
every event names the version that scored it.

A swap never exposes a half-loaded model: the new version is loaded (and its SHA-256 checked) in
a worker thread first, and only the finished object is put in place. A version that fails to
load is refused with an error in the log, and the worker keeps serving what it had.

The canary (:mod:`stream_app.scoring.canary`) is the challenger deciding on the scoring path for a
share of customers: it is on while the challenger this worker serves is the version the canary
names (``STREAM_APP_CANARY_SHARE`` pins the share for whatever challenger is served). The shadow
goes on for the other customers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stream_app.config import Settings
from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
from stream_app.monitoring.drift_monitor import DriftMonitor
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.scoring.artifacts import REASON_INVALID, REASON_SHA256, ArtifactRefused
from stream_app.scoring.assignment import ASSIGNMENT_TOPIC, ModelRef, Published
from stream_app.scoring.canary import CanarySpec
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.registry import resolve_version
from stream_app.scoring.serving import ROLES, Role, Serving
from stream_app.scoring.shadow import ShadowCounts, ShadowScorer

log = logging.getLogger("stream_app.models")


@dataclass(frozen=True)
class Refusal:
    """An assigned version this worker did not load."""

    version: str
    reason: str
    message: str
    offset: int
    at: float = field(default_factory=time.monotonic)


class ModelUser(Protocol):
    """The scoring stage, as far as a swap is concerned."""

    def use_models(self, champion: ScoringModel, extra_features: Sequence[str]) -> None:
        """Score with ``champion``; also compute ``extra_features`` (the challenger's)."""

    def use_canary(self, canary: ScoringModel | None, share: float = 0.0) -> None:
        """Let ``canary`` decide for ``share`` of customers (None: nobody)."""


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
        canary: CanarySpec | None = None,
    ) -> None:
        """``canary``: the canary the worker starts with (the assignment's or serving.json's;
        ignored when ``settings.canary_share`` pins it)."""
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
        self.assignment: Published | None = None
        """The latest assignment applied (control topic), if any."""
        self.source = "models/serving.json"
        """Where the followed roles take their versions from now (``/readyz``)."""
        self.refused: dict[Role, Refusal] = {}
        self.in_step_at: float | None = None
        """Wall-clock time this worker first served all of the current assignment."""
        self._pinned_logged: dict[Role, str | None] = {}
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

    async def _swap(self, role: Role, model: ScoringModel | None) -> None:
        """Put ``model`` in ``role`` between two batches (None: no challenger)."""
        async with self.lock:
            if role == "champion":
                assert model is not None
                self.use_champion(model)
            else:
                self.use_challenger(model)
            self.swaps += 1

    # --- following serving.json -------------------------------------------------------------

    async def follow_serving(self, serving: Serving) -> list[str]:
        """Swap every followed role whose version differs from ``serving``; what changed."""
        loop = asyncio.get_running_loop()
        changes: list[str] = []
        latest = serving.history[-1] if serving.history else {}
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
            await self._swap(role, model)
            changes.append(f"{role} {current.version if current else None} -> {wanted}")
            log.info(
                "%s now %s%s (was %s; serving.json by %s; audit record %s: %s)",
                role,
                wanted,
                f" (sha256 {model.sha256[:12]})" if model is not None else "",
                current.version if current is not None else None,
                latest.get("by", "?"),
                latest.get("id", "none"),
                latest.get("reason", "no reason given"),
            )
        await self._follow_canary(
            CanarySpec.of(serving.canary),
            changes,
            f"serving.json by {latest.get('by', '?')}; audit record {latest.get('id', 'none')}: "
            f"{latest.get('reason', 'no reason given')}",
        )
        return changes

    async def _follow_canary(self, spec: CanarySpec | None, changes: list[str], why: str) -> None:
        """Apply the canary ``spec`` between two batches; log and list what changed."""
        before = self.canary_detail
        async with self.lock:
            changed = self.use_canary_spec(spec)
        if changed:
            changes.append(f"{before} -> {self.canary_detail}")
            (log.info if self.canary_active or spec is None else log.warning)(
                "%s (was: %s; %s)", self.canary_detail, before, why
            )

    # --- following the control topic ---------------------------------------------------------

    async def follow_assignment(
        self,
        published: Published,
        fetch: Callable[[ModelRef], Path],
        retry_s: float = 30.0,
    ) -> list[str]:
        """Swap every followed role to the version ``published`` names: fetched by its URI into
        this worker's models directory and checked (``fetch``, in a thread), then loaded
        (hash-verified again) and swapped between two batches. A version refused (its SHA-256
        does not match, its fetch fails) is logged, counted, reported by :meth:`assignment_state`
        and tried again after ``retry_s``; the role keeps its version meanwhile."""
        loop = asyncio.get_running_loop()
        assignment = published.assignment
        if self.assignment is None or self.assignment.offset != published.offset:
            self.in_step_at = None
        self.assignment = published
        changes: list[str] = []
        for role in ROLES:
            ref = assignment.get(role)
            wanted = ref.version if ref is not None else None
            current = self.champion if role == "champion" else self.challenger
            served = current.version if current is not None else None
            if wanted == served and (
                ref is None or current is None or current.sha256 == ref.sha256
            ):
                self.refused.pop(role, None)
                continue
            if role not in self.follow:
                if self._pinned_logged.get(role) != wanted:
                    self._pinned_logged[role] = wanted
                    log.warning(
                        "the model assignment names %s %s, but this worker's %s is pinned to %s "
                        "by its settings: not swapping (unset STREAM_APP_%s to follow it)",
                        role,
                        wanted,
                        role,
                        served,
                        role.upper(),
                    )
                continue
            if ref is None and role == "champion":
                continue
            prior = self.refused.get(role)
            if (
                prior is not None
                and prior.version == wanted
                and prior.offset == published.offset
                and time.monotonic() - prior.at < retry_s
            ):
                continue
            model: ScoringModel | None = None
            if ref is not None:
                try:
                    path = await loop.run_in_executor(None, fetch, ref)
                    model = await loop.run_in_executor(None, self.loader, path)
                    if model.sha256 != ref.sha256:  # the manifest changed after the check
                        raise ArtifactRefused(
                            REASON_SHA256,
                            f"{path} loaded with SHA-256 {model.sha256}, not the assignment's "
                            f"{ref.sha256}",
                        )
                except (ModelIntegrityError, ModelNotFoundError) as exc:
                    reason = exc.reason if isinstance(exc, ArtifactRefused) else REASON_INVALID
                    self._refuse(role, ref, published, reason, str(exc), served)
                    continue
            await self._swap(role, model)
            self.refused.pop(role, None)
            changes.append(f"{role} {served} -> {wanted}")
            log.info(
                "%s now %s%s (was %s; assignment %s@%d by %s; audit record %s: %s)",
                role,
                wanted,
                f" (sha256 {model.sha256[:12]})" if model is not None else "",
                served,
                ASSIGNMENT_TOPIC,
                published.offset,
                assignment.audit.get("by", "?"),
                assignment.audit.get("id", "none"),
                assignment.audit.get("reason", "no reason given"),
            )
        await self._follow_canary(
            assignment.canary_spec(),
            changes,
            f"assignment {ASSIGNMENT_TOPIC}@{published.offset} by "
            f"{assignment.audit.get('by', '?')}; audit record {assignment.audit.get('id', 'none')}"
            f": {assignment.audit.get('reason', 'no reason given')}",
        )
        if self.in_step_at is None and all(self.in_step().values()):
            self.in_step_at = time.time()
        self._export_assignment()
        return changes

    def _refuse(
        self,
        role: Role,
        ref: ModelRef,
        published: Published,
        reason: str,
        message: str,
        served: str | None,
    ) -> None:
        prior = self.refused.get(role)
        again = prior is not None and (prior.version, prior.reason) == (ref.version, reason)
        self.refused[role] = Refusal(ref.version, reason, message, published.offset)
        self.metrics.model_refused(role, reason)
        (log.warning if again else log.error)(
            "refused %s %s of the model assignment (%s@%d by %s): %s [%s]; still serving %s %s%s",
            role,
            ref.version,
            ASSIGNMENT_TOPIC,
            published.offset,
            published.assignment.audit.get("by", "?"),
            message,
            reason,
            role,
            served,
            "" if again else " (tried again every STREAM_APP_MODEL_RETRY_S)",
        )

    def in_step(self) -> dict[str, bool]:
        """Per role: serving what the assignment names (True without an assignment)."""
        published = self.assignment
        if published is None:
            return {role: True for role in ROLES}
        served = self.describe()
        return {
            role: role not in self.follow or served[role] == published.assignment.versions()[role]
            for role in ROLES
        }

    def _export_assignment(self) -> None:
        published = self.assignment
        assigned: dict[str, str | None] = (
            dict(published.assignment.versions()) if published is not None else {}
        )
        self.metrics.set_assignment(assigned, self.in_step())

    def assignment_state(self) -> dict[str, Any]:
        """The ``/readyz`` check ``models``: what is served, what the assignment names, what was
        refused. ``ok`` stays True on a refusal: the worker still scores, with the version it
        had (a split shows in the detail and in ``stream_app_model_in_step``)."""
        served = self.describe()
        published = self.assignment
        champion, challenger = self.champion, self.challenger
        parts = [
            f"champion {champion.version} (sha256 {champion.sha256[:12]})",
            f"challenger {challenger.version} (sha256 {challenger.sha256[:12]})"
            if challenger is not None
            else "no challenger",
        ]
        spec = self.canary_spec
        parts.append(self.canary_detail)
        state: dict[str, Any] = {
            "ok": True,
            "serving": {role: served[role] for role in ROLES},
            "source": self.source,
            "canary": {
                "version": spec.version,
                "share": spec.share,
                "active": self.canary_active,
                "pinned": self.settings.canary_share is not None,
            }
            if spec is not None
            else None,
        }
        if published is None:
            parts.append(f"assignment: none ({self.source})")
        else:
            audit = published.assignment.audit
            state["assigned"] = published.assignment.versions()
            published_at = published.timestamp_ms / 1000 if published.timestamp_ms else None
            state["assignment"] = {
                "offset": published.offset,
                "by": audit.get("by"),
                "action": audit.get("action"),
                "at": audit.get("at"),
                "published_at": published_at,
                "in_step_at": self.in_step_at,
                "in_step_after_s": round(self.in_step_at - published_at, 3)
                if self.in_step_at is not None and published_at is not None
                else None,
            }
            steps = self.in_step()
            state["in_step"] = all(steps.values())
            parts.append(
                f"assignment {ASSIGNMENT_TOPIC}@{published.offset} ({audit.get('action')} by "
                f"{audit.get('by')} at {audit.get('at')}): "
                + ("in step" if state["in_step"] else "NOT in step")
            )
        if self.refused:
            state["refused"] = {
                role: {"version": r.version, "reason": r.reason, "message": r.message}
                for role, r in self.refused.items()
            }
            parts += [
                f"refused {role} {r.version} ({r.reason}): {r.message}"
                for role, r in self.refused.items()
            ]
        state["detail"] = "; ".join(parts)
        return state

    def describe(self) -> dict[str, Any]:
        """Versions served now (logs, tests)."""
        challenger = self.challenger
        return {
            "champion": self.champion.version,
            "challenger": challenger.version if challenger is not None else None,
            "canary": self.canary_detail,
            "swaps": self.swaps,
        }
