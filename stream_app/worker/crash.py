"""What the worker does when its work raises: one helper, :func:`guard`, around every task.

Input errors never get here (the stages turn them into dead letters). A failure of the scoring
path (an output that fails for good, a checkpoint, a bug) is ``fatal``: the process exits at
once (:func:`die`), before any offset of the failed work is committed. A failure of a side task
(a broker away for one round of a watch, the follow task, the challenger) is logged and the task
goes on. Cancellation always passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger("stream_app.worker")

EXIT_FAILED = 70
"""The exit code of a fatal failure (EX_SOFTWARE)."""


def die(what: str, exc: BaseException) -> None:
    """Stop the process at once, before any offset of the failed work is committed.

    What gets here must not be swallowed: exiting without a commit makes the restart re-read
    what was not committed; state updates are idempotent by offset. A cancellation is raised
    again instead.
    """
    if isinstance(exc, GeneratorExit | KeyboardInterrupt | asyncio.CancelledError):
        raise exc
    log.critical(
        "%s failed: %r; exiting without committing so the input is read again on restart",
        what,
        exc,
        exc_info=exc,
    )
    logging.shutdown()
    os._exit(EXIT_FAILED)


@dataclass
class Failure:
    """What a guarded block raised (``exc`` None: nothing)."""

    exc: Exception | None = None


@contextlib.contextmanager
def guard(
    what: str,
    *,
    fatal: bool = False,
    level: int | None = logging.ERROR,
    logger: logging.Logger = log,
) -> Iterator[Failure]:
    """Run the block; if it raises, ``fatal``: :func:`die`; else the exception is logged as
    ``"<what> failed"`` at ``level`` (with its traceback from ERROR up; None: not logged, the
    caller says more), kept in the :class:`Failure` yielded, and the code after the block runs.
    """
    failure = Failure()
    try:
        yield failure
    except BaseException as exc:
        if fatal:
            die(what, exc)
        if not isinstance(exc, Exception):
            raise
        failure.exc = exc
        if level is not None:
            logger.log(
                level, "%s failed: %r", what, exc, exc_info=exc if level >= logging.ERROR else None
            )
