"""The served models follow the assignment: the control topic, else ``serving.json``.

:class:`LiveModels` swaps every role this worker follows to the version the group's assignment
(``models.assignment``) or ``models/serving.json`` names, between two micro-batches
(:class:`~stream_app.worker.served.ServedModels`), and reports what it serves (``/readyz``).

A swap never exposes a half-loaded model: the new version is loaded (and its SHA-256 checked) in
a worker thread first, and only the finished object is put in place. A version that fails to
load is refused with an error in the log, and the worker keeps serving what it had.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_app.config import Settings
from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.scoring.artifacts import REASON_INVALID, REASON_SHA256, ArtifactRefused
from stream_app.scoring.assignment import ASSIGNMENT_TOPIC, ModelRef, Published
from stream_app.scoring.canary import CanarySpec
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.registry import resolve_version
from stream_app.scoring.serving import ROLES, Role, Serving
from stream_app.worker.served import ModelUser, ServedModels

log = logging.getLogger("stream_app.models")


@dataclass(frozen=True)
class Refusal:
    """An assigned version this worker did not load."""

    version: str
    reason: str
    message: str
    offset: int
    at: float = field(default_factory=time.monotonic)


class LiveModels(ServedModels):
    """The served models, following the assignment for the roles in ``follow``."""

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
        """``loader``: loads a version's directory (hash-verified)."""
        super().__init__(settings, champion, challenger, stage, metrics, canary=canary)
        self.follow = follow
        self.loader = loader
        self.assignment: Published | None = None
        """The latest assignment applied (control topic), if any."""
        self.source = "models/serving.json"
        """Where the followed roles take their versions from now (``/readyz``)."""
        self.refused: dict[Role, Refusal] = {}
        self.in_step_at: float | None = None
        """Wall-clock time this worker first served all of the current assignment."""
        self._pinned_logged: dict[Role, str | None] = {}

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
