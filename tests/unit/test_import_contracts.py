"""Imports run one way (issue 18 item 5): the import-linter contracts of pyproject.toml hold.

:func:`test_contracts_are_kept` runs ``lint-imports`` on the package and fails with its report
when an import runs back up a layer, reads monitoring from outside the app layer or closes a
circle. :func:`test_a_back_arrow_breaks_each_contract` proves the check can fail: it copies the
package, adds one such import for each contract and expects each contract to be reported broken.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> list[dict]:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def _lint_imports(cwd: Path, **env: str) -> subprocess.CompletedProcess:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: pip install -e '.[dev]'"
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(PYPROJECT)],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **env},  # no import chain wrapped over two lines
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_contracts_are_kept() -> None:
    result = _lint_imports(ROOT)
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"an import breaks a contract of pyproject.toml:\n{report}"
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in report, report


def test_a_back_arrow_breaks_each_contract(tmp_path: Path) -> None:
    names = {c["id"]: c["name"] for c in _contracts()}
    assert set(names) == {"layers", "monitoring-readers", "no-circles"}
    package = tmp_path / "stream_app"
    shutil.copytree(ROOT / "stream_app", package, ignore=shutil.ignore_patterns("__pycache__"))
    # The bottom layer reads the top one; features reads monitoring; two scoring modules read
    # each other. (lint-imports reads the sources: nothing here is imported.)
    with (package / "io" / "__init__.py").open("a") as f:
        f.write("\nimport stream_app.cli  # noqa\n")
    (package / "features" / "back_arrow_check.py").write_text("import stream_app.monitoring\n")
    (package / "scoring" / "circle_a.py").write_text("import stream_app.scoring.circle_b\n")
    (package / "scoring" / "circle_b.py").write_text("import stream_app.scoring.circle_a\n")

    result = _lint_imports(tmp_path, PYTHONPATH=str(tmp_path))  # the copy, not the install
    report = result.stdout + result.stderr

    assert result.returncode != 0, report
    assert f"Contracts: 0 kept, {len(names)} broken." in report, report
    assert "stream_app.io -> stream_app.cli" in report, report
    assert "stream_app.features.back_arrow_check -> stream_app.monitoring" in report, report
    assert "circle_a" in report, report
    assert "circle_b" in report, report
