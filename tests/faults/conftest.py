"""Fault-test fixtures: the integration suite's trained models and per-test worker environment.

Imported, not copied, from ``tests/integration/conftest.py`` (pytest registers fixtures a conftest
imports); the session broker comes from ``tests/conftest.py``.
"""

from tests.integration.conftest import (  # noqa: F401  (fixtures, used by name)
    app_env,
    app_settings,
    champion_version,
    models_dir,
    trained_models,
)
