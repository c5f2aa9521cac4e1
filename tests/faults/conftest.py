"""Fault-test fixtures: the integration suite's trained models and per-test worker environment.

Imported, not copied, from ``tests/integration/conftest.py`` (pytest registers fixtures a conftest
imports); the session broker comes from ``tests/conftest.py``.

The kill -9 and state-wipe tests were skipped here (``KNOWN_FAUST_RECOVERY_BUG``) while they
failed intermittently: after restoring the tables from their changelogs, Faust 0.15.3 resumes the
stream partitions before seeking them to the committed offsets, so records were delivered twice,
acknowledged by a false gap, or left the life's commits crawling. The worker now seeks first
(``stream_app/faust_ext/recovery.py``) and both run in every suite.
"""

from tests.integration.conftest import (  # noqa: F401  (fixtures, used by name)
    app_env,
    app_settings,
    challenger_version,
    champion_version,
    models_dir,
    trained_models,
)
