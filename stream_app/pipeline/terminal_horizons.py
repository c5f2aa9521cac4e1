"""How far back the scoring stage's terminal state may forget, per input partition, and from when
a label without its transaction is for an unknown event (:class:`TerminalHorizons`).

A terminal's records all arrive on one input partition of ``transactions.by-terminal``,
interleaved from every transactions partition (the customer stage's inputs); each of those
sub-streams is in event-time order, so the least advanced one bounds what the terminals of that
input partition may evict. With replay floors (the worker's commits, :mod:`stream_app.pipeline.
floors`) the bound is the floor at the last commit instead.
"""

from __future__ import annotations

from stream_app.features.retention import Retention
from stream_app.pipeline.floors import CommitFloors


class TerminalHorizons:
    """The event times seen and the replay floors announced per input partition, and the
    horizons read from them."""

    def __init__(
        self,
        retention: Retention,
        source_partitions: int = 1,
        max_source_skew_s: float = 7 * 86_400.0,
        floors: CommitFloors | None = None,
    ) -> None:
        """``source_partitions``: how many transactions partitions feed each input partition.
        ``floors``: the replay floors the worker's commits update (:meth:`eviction_horizon`);
        None (offline, in tools, in tests of one pass) evicts from the newest event times seen."""
        self.retention = retention
        self.source_partitions = source_partitions
        self.max_source_skew_s = max_source_skew_s
        self.floors = floors
        # Newest event time seen per (input partition, transactions partition). A terminal's
        # records all arrive on one input partition, interleaved from every customer partition;
        # each of those sub-streams is in event-time order, so the least advanced one is the
        # low watermark that bounds eviction for the terminals of that input partition.
        self.source_time: dict[int, dict[int, float]] = {}
        # The highest replay floor each transactions partition announced (in its forwards) per
        # input partition; floors only rise, so a record from that source comes at or after it
        # (less the lateness). See eviction_horizon.
        self.source_floor: dict[int, dict[int, float]] = {}

    def eviction_horizon(self, partition: int) -> float:
        """The event time that terminal state on input ``partition`` may be evicted relative to.

        With replay floors (the worker): :meth:`floor_horizon` as it was at the input
        partition's last committed offset (-inf before its first commit). Every forward after
        that offset, and every forward the customer stage may still send again after a crash of
        its own, comes at or after it less the lateness: nothing their windows need is evicted,
        however far ahead of them the recovered state is. Without floors:
        :meth:`time_horizon`.
        """
        floors = self.floors
        if floors is None:
            return self.time_horizon(partition)
        return floors.partition_floor(partition)

    def floor_horizon(self, partition: int) -> float:
        """The least replay floor the transactions partitions announced in the forwards taken
        from input ``partition`` so far: once every one has announced one, the lowest of those
        within ``max_source_skew_s`` of the highest (an idle or stuck partition must not let
        state grow without bound); until then the highest less ``max_source_skew_s``. -inf when
        none has announced one."""
        announced = self.source_floor.get(partition)
        if not announced:
            return float("-inf")
        top = max(announced.values())
        valve = top - self.max_source_skew_s
        if len(announced) < self.source_partitions:
            return valve
        return min(f for f in announced.values() if f >= valve)

    def time_horizon(self, partition: int) -> float:
        """The eviction horizon from event times alone (no commits: one pass over a stream).

        The partition's low watermark (the least advanced transactions partition's newest event
        time among the records it carried) once every transactions partition has been seen on
        it, but never more than ``max_source_skew_s`` behind its newest: an idle or stuck
        partition must not let state grow without bound. Unknown partitions give -inf.
        """
        seen = self.source_time.get(partition)
        if not seen:
            return float("-inf")
        newest = max(seen.values())
        watermark = min(seen.values()) if len(seen) >= self.source_partitions else float("-inf")
        return max(watermark, newest - self.max_source_skew_s)

    def label_horizon(self, partition: int) -> float:
        """Labels on input ``partition`` for events at or before this time are for unknown events
        when the terminal does not hold them; later ones may have arrived before their event.

        An event that old is gone either way: either the state would evict it by now (the
        eviction horizon minus the retention), or every transactions partition has brought this
        input partition events more than the allowed lateness newer, so it would have come
        before them (a transactions partition carries its events in event-time order up to the
        lateness: the order publishers produce, which the customer stage enforces per customer).
        Nothing seen yet gives -inf: every label may still be early.
        """
        seen = self.source_time.get(partition)
        if not seen:
            return float("-inf")
        evicted = self.eviction_horizon(partition) - self.retention.terminal_s
        if len(seen) < self.source_partitions:
            return evicted
        return max(evicted, min(seen.values()) - self.retention.lateness_s)
