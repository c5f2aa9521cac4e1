"""The package's docstring examples are executed (issue 18 item 8), as ``--doctest-modules`` would.

Every module of ``stream_app`` whose source has a ``>>>`` gets a test that imports it and runs its
examples with :mod:`doctest` (pytest's default option, ELLIPSIS); the test names the module and
fails with doctest's report. The modules are found on disk, not by importing the package, so
collection stays cheap; ``__main__`` modules are left out (importing one runs the CLI).

Running the examples imports the module: :func:`test_importing_every_module_starts_nothing`
imports all of them, in a child process of its own, and checks that none starts a thread or a
process, installs a signal handler or a root log handler, sets a ``STREAM_APP_``/``KAFKA_``
variable or writes a file in the working directory.
"""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "stream_app"


def _modules() -> dict[str, Path]:
    """Module name -> source file, for every module of the package but ``__main__`` ones."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()
WITH_EXAMPLES = [name for name, path in MODULES.items() if ">>>" in path.read_text()]


def test_the_package_has_examples() -> None:
    assert len(MODULES) > 50
    assert "stream_app" in MODULES
    assert WITH_EXAMPLES, "no module of stream_app has a docstring example: is PACKAGE_DIR right?"


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    assert tests, (
        f"{name} has '>>>' in its source but doctest finds no example there (an example must be "
        "in the docstring of the module, or of a class or function defined at its top level or "
        "in such a class)"
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    if runner.failures:
        pytest.fail(
            f"{runner.failures} of {runner.tries} examples of {name} failed:\n" + "".join(report),
            pytrace=False,
        )


_IMPORT_ALL = """
import importlib, json, logging, os, signal, sys, threading

names = json.loads(sys.argv[1])
watched = ("STREAM_APP_", "KAFKA_")
env = {k: v for k, v in os.environ.items() if k.startswith(watched)}
threads = {t.ident for t in threading.enumerate()}
signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
handlers = list(logging.getLogger().handlers)
for name in names:
    importlib.import_module(name)
try:
    os.waitpid(-1, os.WNOHANG)
    children = True
except ChildProcessError:
    children = False
print(json.dumps({
    "threads": sorted(t.name for t in threading.enumerate() if t.ident not in threads),
    "children": children,
    "signals": sorted(str(s) for s, h in signals.items() if signal.getsignal(s) is not h),
    "log_handlers": [repr(h) for h in logging.getLogger().handlers if h not in handlers],
    "env": sorted(
        k for k in set(env) | {k for k in os.environ if k.startswith(watched)}
        if os.environ.get(k) != env.get(k)
    ),
}))
"""


def test_importing_every_module_starts_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, json.dumps(sorted(MODULES))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    effects = json.loads(result.stdout.strip().splitlines()[-1])
    assert effects == {
        "threads": [],
        "children": False,
        "signals": [],
        "log_handlers": [],
        "env": [],
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == []
