"""Everything in the worker that subclasses, patches or reaches into Faust or aiokafka.

The rest of the package talks to Faust through public API (``faust.App``, ``app.Table``,
``app.topic``, ``app.task``, ``app.timer``, the web views) and through this package; nothing
else imports a Faust or aiokafka internal. ``UPSTREAM.md`` beside this file says what each
module replaces, why, and the upstream issue numbers.

=====================  ===============================================================
``batch``              fetched partition chunks to the batch engine; commits through its
                       checkpoint; revoke and stop (``BatchConsumer``, ``BatchApp``)
``dispatch``           the fetch loop without four tasks per record; never commit past an
                       event in flight (faust #606); commit on revoke
``recovery``           seek the input partitions before resuming them after recovery
``exactly_once``       read_committed, no commits outside the transactions, group metadata
``tables``             checkpoint writes into a table's store (partition context) and its
                       changelog through librdkafka; raw-valued tables
=====================  ===============================================================

:data:`VERSIONS` is the one table of the versions this code was written against; importing the
package checks the installed ones (:func:`check_versions`) and refuses others with a clear
error. Each copied Faust method is also pinned by the SHA-256 of its source (``dispatch``,
``recovery``, ``batch``); ``tests/unit/test_faust_ext.py`` fails when one changes.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

VERSIONS: dict[str, str] = {
    "faust-streaming": "0.15.3",
    "aiokafka": "0.14.0",
    "mode-streaming": "0.7.1",
}
"""The distributions this package reaches into, at the versions it was written and tested
against. A different patch release of the same minor version is accepted (with the SHA-256 pins
still guarding each copied method); another minor version is refused."""

ALLOW_ENV = "STREAM_APP_UNCHECKED_FAUST"
"""Set to 1 to start with other versions anyway (after reviewing UPSTREAM.md against them)."""


class FaustVersionError(ImportError):
    """The installed Faust, aiokafka or mode is not a version ``faust_ext`` was written for."""


def _minor(text: str) -> tuple[str, ...]:
    return tuple(text.split(".")[:2])


def version_problems(installed: dict[str, str | None] | None = None) -> list[str]:
    """``name: installed X, written against Y`` for each distribution of another minor version
    (or missing)."""
    if installed is None:
        installed = {}
        for name in VERSIONS:
            try:
                installed[name] = version(name)
            except PackageNotFoundError:
                installed[name] = None
    problems = []
    for name, wanted in VERSIONS.items():
        got = installed.get(name)
        if got is None or _minor(got) != _minor(wanted):
            problems.append(f"{name}: installed {got or 'nothing'}, written against {wanted}")
    return problems


def check_versions() -> None:
    """Raise :class:`FaustVersionError` unless the installed versions are ones this package was
    written against (or ``STREAM_APP_UNCHECKED_FAUST=1``)."""
    problems = version_problems()
    if problems and os.environ.get(ALLOW_ENV) != "1":
        written = ", ".join(f"{k} {v}" for k, v in VERSIONS.items())
        raise FaustVersionError(
            f"stream_app.faust_ext patches Faust and aiokafka internals and was written against "
            f"{written}; found {'; '.join(problems)}. Install those versions (pyproject.toml "
            "pins them), or review stream_app/faust_ext/UPSTREAM.md against the new ones, bring "
            f"VERSIONS and the SHA-256 pins in line, and meanwhile set {ALLOW_ENV}=1 to start "
            "anyway."
        )


check_versions()
