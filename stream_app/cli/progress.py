"""A spinner that counts records, for the commands that read topics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console


@contextmanager
def record_counter(console: Console, description: str) -> Iterator[Callable[[int], None]]:
    """Show ``description``, a running record count and the time; yields ``advance(n)``."""
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn(escape(description)),
        TextColumn("{task.completed:,} records"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)
        yield lambda n: progress.advance(task, n)
