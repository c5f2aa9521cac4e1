"""The bad-input corpus of ``tests/data/bad_inputs/`` (issue #6), as records to send.

``corpus.toml`` lists the cases in sending order; each names its value file (raw bytes), topic,
key, expected dead-letter reason and kind. See the comment at the top of ``corpus.toml``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

CORPUS_DIR = Path(__file__).parent / "data" / "bad_inputs"
MANIFEST = CORPUS_DIR / "corpus.toml"
TOPICS = {
    "transactions": "transactions",
    "by-terminal": "transactions.by-terminal",  # junk written to the repartition topic
    "labels": "labels",
}
"""A case's topic → the declared topic name it is sent to."""


@dataclass(frozen=True)
class Case:
    """One bad record, and the good transaction (``first``) to send just before it, if any."""

    name: str  # "transactions/13-nan"
    topic: str  # "transactions", "by-terminal" or "labels" (see TOPICS)
    key: bytes | None
    value: bytes | None
    reason: str
    kind: str
    first: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    via_repartition: bool = False  # dead-lettered by the terminal stage (see corpus.toml)


def _key(entry: dict) -> bytes | None:
    given = [k for k in ("key", "key_hex", "key_null") if k in entry]
    assert len(given) == 1, f"{entry}: exactly one of key, key_hex, key_null"
    if "key_null" in entry:
        assert entry["key_null"] is True
        return None
    if "key_hex" in entry:
        return bytes.fromhex(entry["key_hex"])
    return str(entry["key"]).encode() * entry.get("key_repeat", 1)


def _headers(entry: dict) -> tuple[tuple[str, bytes], ...]:
    return tuple(
        (str(h["name"]), bytes.fromhex(h["hex"]) * h.get("repeat", 1))
        for h in entry.get("headers", [])
        for _ in range(h.get("copies", 1))
    )


def load_corpus() -> list[Case]:
    """Every case of the manifest, in order."""
    entries = tomllib.loads(MANIFEST.read_text())["case"]
    cases = []
    for n, entry in enumerate(entries):
        if entry.get("value_null"):
            assert "file" not in entry
            value = None
            name = f"{entry['topic']}/null-value-{n}"
        else:
            value = (CORPUS_DIR / entry["file"]).read_bytes() * entry.get("repeat", 1)
            name = entry["file"].removesuffix(".bin")
        first = (CORPUS_DIR / entry["first"]).read_bytes() if "first" in entry else None
        assert entry["topic"] in TOPICS, entry
        cases.append(
            Case(
                name,
                entry["topic"],
                _key(entry),
                value,
                entry["reason"],
                entry["kind"],
                first,
                _headers(entry),
                entry.get("dead_letter_from") == "by-terminal",
            )
        )
    return cases


def listed_files() -> set[str]:
    """Every file the manifest names (values and firsts), relative to the corpus directory."""
    entries = tomllib.loads(MANIFEST.read_text())["case"]
    return {e[k] for e in entries for k in ("file", "first") if k in e}
