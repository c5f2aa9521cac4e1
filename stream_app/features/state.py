"""Per-entity window state: what a Faust table holds for one customer or one terminal.

The live state of an entity is a small object of typed arrays (``array('d')`` times and amounts,
``array('B')`` fraud flags, ``array('I')`` application numbers) plus a list of event ids. Its
table value and changelog record are those arrays' bytes behind a fixed header
(:meth:`CustomerState.encode`): no per-number formatting on the way out, a ``memcpy`` on the way
in. A state written by earlier code (a JSON object) still loads (:func:`decode_state`).

Updates are idempotent: each state remembers the highest offset it applied per *source* (one
topic partition, :func:`source_id`), and a record read again after a crash or a rebalance, before
its offset was committed, is recognised and not counted twice. Its features are recomputed from
the samples applied *before* it (:meth:`CustomerState.replayed_features`), not from the state as
it stands: that already holds the customer's later events, and one at the event's own second, or
a late one placed before it, falls inside its windows. Each customer sample carries the number of
its application (``q``), which is all it takes to tell which samples came after it. A record the
stage dead-lettered by a decision on the state (a duplicate, too late) is remembered by its
source and offset (:meth:`CustomerState.dead_lettered`), so that reading it again reaches the
same decision instead of forwarding it.

Both the live worker and the offline builder (``features.offline``) go through these classes:
that is what keeps training and serving features equal. Window sums run left to right over the
window's samples (``sum`` of a slice), exactly as the offline builder's, so features are equal
bit for bit, not within a tolerance.

The modules: :mod:`~stream_app.features.customer_state` and
:mod:`~stream_app.features.terminal_state` (the two states), :mod:`~stream_app.features.
state_windows` (their window features), :mod:`~stream_app.features.state_layout` (their JSON view,
source ids and byte layout), :mod:`~stream_app.features.retention` (how long they keep samples);
this one reads a table value as either state.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from stream_app.features.customer_state import CustomerState
from stream_app.features.retention import Retention
from stream_app.features.state_layout import (
    LEGACY_SOURCE,
    SOURCE_PARTITIONS,
    StateValue,
    source_id,
)
from stream_app.features.state_windows import (
    CUSTOMER_FEATURES,
    TERMINAL_FEATURES,
    WindowSpec,
    window_specs,
)
from stream_app.features.terminal_state import TerminalState

__all__ = [
    "CUSTOMER_FEATURES",
    "LEGACY_SOURCE",
    "SOURCE_PARTITIONS",
    "TERMINAL_FEATURES",
    "CustomerState",
    "Retention",
    "State",
    "StateValue",
    "TerminalState",
    "WindowSpec",
    "decode_state",
    "encoded_sizes",
    "source_id",
    "state_bytes",
    "state_view",
    "window_specs",
]

State = CustomerState | TerminalState


def decode_state(raw: bytes | StateValue, kind: type[State]) -> State:
    """A table value (bytes :meth:`encode` wrote, or a JSON state of earlier code) as a state."""
    if isinstance(raw, dict):
        return kind(raw)
    if raw[:1] == b"{":  # a JSON state written by earlier code
        return kind(orjson.loads(raw))
    return kind.decode(raw)


def state_view(raw: bytes, kind: type[State]) -> StateValue:
    """The JSON view of a table value (tests, tools, the benchmark)."""
    return decode_state(raw, kind).value


def state_bytes(state: State | bytes | StateValue) -> int:
    """Serialized size of one entity's state (what the changelog and store hold): a state is
    encoded, bytes are measured as they are, a JSON state of earlier code as compact JSON."""
    if isinstance(state, CustomerState | TerminalState):
        return len(state.encode())
    if isinstance(state, bytes):
        return len(state)
    return len(orjson.dumps(state))


def encoded_sizes(states: Iterable[State]) -> list[int]:
    """:func:`state_bytes` of each state."""
    return [len(s.encode()) for s in states]
