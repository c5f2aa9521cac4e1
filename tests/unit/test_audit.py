"""The audit record of models.audit without a broker: ids, the schema, reasons, the entry the
assignment carries, and serving.json's history entries."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from stream_app.scoring.audit import (
    AuditError,
    AuditRecord,
    check_reason,
    describe,
    new_id,
    side,
)
from stream_app.scoring.serving import Serving, promote, rollback

SHA = "ab" * 32


def record(**changes: object) -> AuditRecord:
    base: dict[str, object] = {
        "by": "ana@vm",
        "reason": "better AP",
        "role": "champion",
        "source": {"version": "v1", "sha256": SHA},
        "target": {"version": "v2", "sha256": None},
        "at": datetime(2026, 12, 4, 23, 15, 2, tzinfo=UTC),
    }
    base.update(changes)
    return AuditRecord.new("promote", "stream-app", **base)  # type: ignore[arg-type]


def test_ids_sort_by_time_and_are_unique() -> None:
    early = new_id(datetime(2026, 12, 4, 23, 0, tzinfo=UTC))
    late = new_id(datetime(2026, 12, 4, 23, 0, 1, tzinfo=UTC))
    assert re.fullmatch(r"20261204T230000Z-[0-9a-f]{8}", early)
    assert early < late
    assert len({new_id() for _ in range(1000)}) == 1000


def test_record_round_trips_through_its_schema() -> None:
    r = record().with_assignment("it.models.assignment@7")
    value = r.encode()
    data = orjson.loads(value)
    assert list(data) == [
        "schema",
        "id",
        "action",
        "group",
        "role",
        "from",
        "to",
        "by",
        "at",
        "reason",
        "assignment",
    ]
    assert data["at"] == "2026-12-04T23:15:02+00:00" and data["id"].startswith("20261204T231502Z-")
    assert data["from"] == {"version": "v1", "sha256": SHA} and data["to"]["sha256"] is None
    assert AuditRecord.decode(value) == r
    assert r.entry() == {"id": r.id, "reason": "better AP"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"schema": 2}', "not a model audit record"),
        (
            orjson.dumps({**orjson.loads(record().encode()), "action": "delete"}),
            "not a model audit record",
        ),
    ],
)
def test_decode_refuses_what_is_not_a_record(value: bytes, message: str) -> None:
    with pytest.raises(AuditError, match=message):
        AuditRecord.decode(value)


def test_encode_refuses_an_invalid_record() -> None:
    with pytest.raises(AuditError, match="is not valid"):
        record(source={"version": "v1", "sha256": "not hex"}).encode()


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_change_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(AuditError, match="--reason"):
        check_reason(reason, "rollback")
    with pytest.raises(AuditError, match="--reason"):
        record(reason=reason)
    assert check_reason("  why  ", "promote") == "why"


def test_side_reads_the_manifest_digest(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    assert side(tmp_path, None) is None
    assert side(tmp_path, "v1") == {"version": "v1", "sha256": None}  # no manifest there
    assert describe({"version": "v1", "sha256": SHA}) == f"v1 ({SHA[:12]})"
    assert describe({"version": "v1", "sha256": None}) == "v1 (?)"
    assert describe(None) == "-"


def test_serving_history_entries_carry_the_audit_id_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stream_app.scoring.model as model_module

    monkeypatch.setattr(model_module.ScoringModel, "load", classmethod(lambda cls, path: None))
    monkeypatch.setattr("stream_app.scoring.serving.resolve_version", lambda d, v: d / v)
    current = Serving(champion="v1")
    serving = promote(
        tmp_path, "v2", current=current, by="ana", write=False, audit={"id": "x1", "reason": "r1"}
    )
    assert serving.history[-1] | {"at": None} == {
        "role": "champion",
        "version": "v2",
        "previous": "v1",
        "action": "promote",
        "at": None,
        "by": "ana",
        "id": "x1",
        "reason": "r1",
    }
    back = rollback(tmp_path, current=serving, write=False, audit={"id": "x2", "reason": "r2"})
    assert (back.champion, back.history[-1]["id"], back.history[-1]["reason"]) == ("v1", "x2", "r2")
