"""Which worker owns a key's state, and whether this worker may answer for it now.

A key's state lives in partition ``murmur2(key) % partitions`` of its table
(``stream_app.io.partitioning``): the stages use the partition the input record arrived on, and
every producer hashes the key bytes the Java way. Which worker holds which table partition is
Faust's: its partition assignor ships the group's *changelog distribution* (worker URL → active
changelog partitions) to every member at each rebalance, and ``app.router.table_metadata(name)``
reads it. Faust's own ``@app.table_route`` is not used as is: it hashes the table's serialized
key (the JSON string ``"c42"``, quotes included), not the key bytes the stages partition by, so
it would route to the wrong worker; and its forwarding drops a POST's body and the owner's
headers (``Retry-After``). :class:`Ownership` uses the same routing table with the right
partition, and ``stream_app.api.forward`` forwards whole requests.

This worker answers for a partition only when it holds it *actively* now (the assignor says so),
no rebalance or changelog recovery is in progress and the engine is not halted; otherwise it
answers 503 with ``Retry-After``, never a copy it may no longer keep current.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.types import TP
from yarl import URL

from stream_app.faust_ext.recovery import settled
from stream_app.io.partitioning import expected_partition


def url_ident(url: str | URL) -> tuple[str, int]:
    """``(host, port)`` of a worker URL."""
    parsed = URL(str(url))
    return (parsed.host or "", int(parsed.port or 80))


class Ownership:
    """Partitions of keys, their owners, and this worker's right to answer."""

    def __init__(
        self,
        app: Any,
        partitions: int,
        halted: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.app = app
        self.partitions = partitions
        self.halted = halted

    @property
    def me(self) -> str:
        """This worker's canonical URL (what the assignor ships to the group)."""
        return str(self.app.conf.canonical_url)

    def partition(self, key: str) -> int:
        """The table partition of ``key``."""
        return expected_partition(key.encode(), self.partitions)

    def owner(self, table: str, changelog: str, partition: int) -> str | None:
        """The URL of the worker that holds ``partition`` of ``table`` actively, per the last
        assignment this worker received; None when no member does (or none is known yet)."""
        try:
            metadata = self.app.router.table_metadata(table)
        except (KeyError, AttributeError):
            return None
        for host, topics in metadata.items():
            if partition in topics.get(changelog, ()):
                return str(host)
        return None

    def is_me(self, url: str) -> bool:
        """Whether ``url`` names this worker."""
        return url_ident(url) == url_ident(self.me)

    def not_ready(self, changelog: str, partition: int) -> str | None:
        """Why this worker cannot answer for ``partition`` now (None: it can)."""
        app = self.app
        if not settled(app):
            return (
                "the worker is rebalancing or restoring its tables from the changelogs; its "
                "state is not current yet"
            )
        halted = self.halted()
        if halted is not None:
            return f"the worker has stopped reading: {halted}"
        try:
            active = app.assignor.is_active(TP(changelog, partition))
        except Exception:  # assignor not set up yet
            active = False
        if not active:
            return f"partition {partition} of {changelog} is not assigned to this worker now"
        return None
