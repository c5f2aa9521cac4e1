"""The metric families of the models a worker serves, as a part of
:class:`~stream_app.monitoring.metrics.WorkerMetrics`: the champion and the challenger (Info),
the version serving each role, the canary's share, the group's assignment and whether this
worker is in step with it, the versions it refused, and the challenger's shadow outcomes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info


class ModelMetrics:
    """The model families; :class:`~stream_app.monitoring.metrics.WorkerMetrics` registers them
    (:meth:`_register_model_families`) after its own ``scored`` counter, which they share."""

    scored: Counter
    _scored: dict[str, Any]

    def _register_model_families(self, r: CollectorRegistry) -> None:
        """Register the model families in ``r``; the role series start in step, none refused."""
        self.model = Info("stream_app_model", "The champion model.", registry=r)
        self.challenger = Info(
            "stream_app_challenger", "The challenger scored in shadow.", registry=r
        )
        self.serving = Gauge(
            "stream_app_model_serving",
            "1 for the version this worker serves in a role (champion, challenger). Across "
            "workers, count by (role, version) shows a split of the group.",
            ["role", "version"],
            registry=r,
        )
        self.canary_share = Gauge(
            "stream_app_canary_share",
            "Share of customers (0-1) for whom the canary version decides instead of the "
            "champion on this worker; no series without a canary.",
            ["version"],
            registry=r,
        )
        self._canary_version: str | None = None
        self.assigned = Gauge(
            "stream_app_model_assigned",
            "1 for the version the group's model assignment (control topic models.assignment) "
            "names for a role, as this worker last read it.",
            ["role", "version"],
            registry=r,
        )
        self.in_step = Gauge(
            "stream_app_model_in_step",
            "1 when this worker serves the version the assignment names for the role (or there "
            "is no assignment yet, or the role is pinned), 0 while it serves another one "
            "(an artifact refused, a fetch failing; /readyz says why).",
            ["role"],
            registry=r,
        )
        self.refused = Counter(
            "stream_app_model_refused",
            "Assigned versions this worker did not load, by role and reason: sha256_mismatch "
            "(artifact), manifest_mismatch, fetch_failed, invalid.",
            ["role", "reason"],
            registry=r,
        )
        self.shadow = Counter(
            "stream_app_shadow",
            "Events the challenger scored in shadow (its decision agrees or disagrees with the "
            "champion's), skipped because the challenger lagged (the champion never waits), or "
            "left out of the shadow sample (unsampled).",
            ["outcome"],
            registry=r,
        )
        self._role_versions: dict[tuple[str, str], str] = {}
        for role in ("champion", "challenger"):
            self.in_step.labels(role=role).set(1)
            for reason in ("sha256_mismatch", "manifest_mismatch", "fetch_failed", "invalid"):
                self.refused.labels(role=role, reason=reason)

    # --- set-up ---------------------------------------------------------------------------

    def set_model(self, version: str, sha256: str) -> None:
        """Publish the champion (Info) and create its scored series at 0."""
        self.model.info({"version": version, "sha256": sha256})
        self._role_version(self.serving, "champion", version)
        self._scored_child(version)

    def set_challenger(self, version: str, sha256: str) -> None:
        """Publish the shadow challenger (Info)."""
        self.challenger.info({"version": version, "sha256": sha256})
        self._role_version(self.serving, "challenger", version)

    def clear_challenger(self) -> None:
        """No challenger any more (the Info line loses its labels)."""
        self.challenger.info({})
        self._role_version(self.serving, "challenger", None)

    def set_canary(self, version: str | None, share: float) -> None:
        """The canary this worker runs (None: none; its series goes)."""
        old = self._canary_version
        if old is not None and old != version:
            self.canary_share.remove(old)
        self._canary_version = version
        if version is not None:
            self.canary_share.labels(version=version).set(share)
            self._scored_child(version)

    def _role_version(self, gauge: Gauge, role: str, version: str | None) -> None:
        """``gauge{role, version}`` 1 for ``version`` only (None: no series for the role)."""
        key = (gauge._name, role)
        old = self._role_versions.pop(key, None)
        if old is not None and old != version:
            gauge.remove(role, old)
        if version is not None:
            gauge.labels(role=role, version=version).set(1)
            self._role_versions[key] = version

    def set_assignment(
        self, assigned: Mapping[str, str | None], in_step: Mapping[str, bool]
    ) -> None:
        """The versions the group's assignment names, and whether this worker serves them."""
        for role, version in assigned.items():
            self._role_version(self.assigned, role, version)
        for role, ok in in_step.items():
            self.in_step.labels(role=role).set(1 if ok else 0)

    def model_refused(self, role: str, reason: str) -> None:
        """An assigned version not loaded."""
        self.refused.labels(role=role, reason=reason).inc()

    def _scored_child(self, version: str) -> Any:
        child = self._scored.get(version)
        if child is None:
            child = self._scored[version] = self.scored.labels(model_version=version)
        return child

    def shadow_outcomes(
        self, agreed: int, disagreed: int, skipped: int, unsampled: int = 0
    ) -> None:
        """Challenger events since the previous call (``unsampled``: events of customers outside
        the shadow sample, ``STREAM_APP_SHADOW_SAMPLE``)."""
        for outcome, n in (
            ("agree", agreed),
            ("disagree", disagreed),
            ("skipped", skipped),
            ("unsampled", unsampled),
        ):
            if n:
                self.shadow.labels(outcome=outcome).inc(n)
