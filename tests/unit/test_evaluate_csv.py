"""``stream-app evaluate csv`` (broker-less; run here by its old name, ``replay --csv``): scored
rows, metrics, report, determinism and errors."""

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from typer.testing import CliRunner

from stream_app.cli.main import app
from stream_app.evaluation.csv_range import HISTORY_DAYS, evaluate_csv
from stream_app.evaluation.metrics import card_precision_top_k
from stream_app.evaluation.report import PLOT_TITLES
from stream_app.exceptions import DatasetError, ModelIntegrityError, ModelNotFoundError
from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.offline import build_features
from stream_app.scoring.model import ScoringModel
from stream_app.sources.handbook_csv import read_csv_events
from stream_app.sources.schedule import batch_from_events
from stream_app.sources.simulator import simulate
from stream_app.training import make_estimator, write_version
from tests.unit.conftest import make_version

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 45
FROM, TO = "2026-02-08", "2026-02-14"  # days 38..44: 37 days of history before
CHAMPION, CHALLENGER = "v-logreg", "v-hgb"  # the newest by name is the default champion
WIDE = {"COLUMNS": "400"}  # no line wrapping by rich in error messages
PREFIX_COLUMNS = ["event_id", "event_time", "customer_id", "terminal_id"]


def write_handbook_csv(path: Path) -> pd.DataFrame:
    """Simulated transactions written with the fraud-handbook CSV columns."""
    events = list(simulate(n_customers=150, n_terminals=300, start=START, days=DAYS, seed=3))
    times = pd.to_datetime([e.event["event_time"] for e in events], utc=True)
    frame = pd.DataFrame(
        {
            "TRANSACTION_ID": [e.event["event_id"] for e in events],
            "TX_DATETIME": times.strftime("%Y-%m-%d %H:%M:%S"),
            "CUSTOMER_ID": [e.event["customer_id"] for e in events],
            "TERMINAL_ID": [e.event["terminal_id"] for e in events],
            "TX_AMOUNT": [e.event["amount"] for e in events],
            "TX_FRAUD": [e.label for e in events],
            "TX_FRAUD_SCENARIO": [e.scenario for e in events],
        }
    )
    frame.to_csv(path, index=False)
    frame["day"] = times.strftime("%Y-%m-%d")
    return frame


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    csv = root / "transactions.csv"
    rows = write_handbook_csv(csv)
    models = root / "models"
    make_version(models, "logreg", seed=0)
    make_version(models, "hgb", seed=1)
    in_range = rows[(rows.day >= FROM) & (rows.day <= TO)]
    assert 0 < in_range.TX_FRAUD.sum() < len(in_range)  # both classes in the range
    return SimpleNamespace(root=root, csv=csv, models=models, rows=rows, in_range=in_range)


def text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def invoke(data, out, *extra, csv=None, date_from=FROM, date_to=TO):
    args = [
        "replay",
        "--csv", str(csv or data.csv),
        "--from", date_from,
        "--to", date_to,
        "--out", str(out),
        "--models-dir", str(data.models),
        *extra,
    ]  # fmt: skip
    return CliRunner().invoke(app, args, env=WIDE)


@pytest.fixture(scope="module")
def replayed(data):
    out = data.root / "run1"
    result = invoke(data, out, "--model", CHALLENGER)
    assert result.exit_code == 0, result.output
    return SimpleNamespace(
        out=out,
        output=result.output,
        frame=pd.read_parquet(out / "scored.parquet"),
        metrics=orjson.loads((out / "metrics.json").read_bytes()),
    )


def test_scores_exactly_the_rows_of_the_range(data, replayed):
    frame = replayed.frame
    assert len(frame) == len(data.in_range)
    assert frame.event_id.tolist() == data.in_range.TRANSACTION_ID.tolist()
    assert frame.label.tolist() == data.in_range.TX_FRAUD.tolist()
    assert frame.event_time.min() >= pd.Timestamp(FROM, tz="UTC")
    assert frame.event_time.max() < pd.Timestamp("2026-02-15", tz="UTC")


def test_columns(replayed):
    assert list(replayed.frame.columns) == [
        *PREFIX_COLUMNS,
        *FEATURE_NAMES,
        f"score_{CHAMPION}",
        f"score_{CHALLENGER}",
        "label",
    ]


def test_features_and_scores_match_the_worker_code(data, replayed):
    batch = batch_from_events(
        read_csv_events(
            data.csv,
            date_from=date.fromisoformat(FROM) - timedelta(days=HISTORY_DAYS),
            date_to=date.fromisoformat(TO),
        )
    )
    X = build_features(batch)
    lo = pd.Timestamp(FROM, tz="UTC").timestamp()
    rows = np.flatnonzero(batch.ts >= lo)
    assert len(rows) == len(replayed.frame)
    X_range = np.ascontiguousarray(X[rows])
    np.testing.assert_array_equal(replayed.frame[list(FEATURE_NAMES)].to_numpy(), X_range)
    for version in (CHAMPION, CHALLENGER):
        model = ScoringModel.load(data.models / version)
        np.testing.assert_array_equal(
            replayed.frame[f"score_{version}"].to_numpy(), model.predict(X_range)
        )


def test_metrics_match_sklearn_and_the_handbook_cp(data, replayed):
    frame, doc = replayed.frame, replayed.metrics
    days = frame.event_time.dt.strftime("%Y-%m-%d").to_numpy()
    assert doc["range"] == {
        "from": FROM,
        "to": TO,
        "days": sorted(set(days)),
        "rows": len(frame),
        "frauds": int(frame.label.sum()),
    }
    assert doc["champion"] == CHAMPION
    assert [m["version"] for m in doc["models"]] == [CHAMPION, CHALLENGER]
    assert [m["role"] for m in doc["models"]] == ["champion", "challenger"]
    for entry in doc["models"]:
        manifest = orjson.loads((data.models / entry["version"] / "manifest.json").read_bytes())
        assert entry["sha256"] == manifest["sha256"]
    for version in (CHAMPION, CHALLENGER):
        score = frame[f"score_{version}"]
        m = doc["metrics"][version]
        assert m["auc_roc"] == roc_auc_score(frame.label, score)
        assert m["average_precision"] == average_precision_score(frame.label, score)
        cp, daily = card_precision_top_k(days, frame.customer_id, score, frame.label)
        assert m["card_precision_at_100"] == cp
        assert m["card_precision_at_100_daily"] == [
            {"day": d, "value": v} for d, v in zip(sorted(set(days)), daily, strict=True)
        ]
        assert m["n"] == len(frame)
        assert m["frauds"] == int(frame.label.sum())
    assert doc["source"]["history_days"] == HISTORY_DAYS
    first = (date.fromisoformat(FROM) - timedelta(days=HISTORY_DAYS)).isoformat()
    history = data.rows[(data.rows.day >= first) & (data.rows.day < FROM)]
    assert 0 < len(history) < len(data.rows) - len(frame)  # day 0 lies before the history
    assert doc["source"]["history_rows"] == len(history)


def test_report_is_self_contained_with_one_image_per_plot(replayed):
    page = (replayed.out / "report.html").read_text()
    images = re.findall(r"<img [^>]*>", page)
    assert len(images) == len(PLOT_TITLES) == 6
    assert all('src="data:image/png;base64,' in img for img in images)
    assert "http://" not in page and "https://" not in page
    assert CHAMPION in page and CHALLENGER in page and "Δ vs champion" in page
    assert CHAMPION in replayed.output and "report.html" in replayed.output


def test_same_input_gives_identical_outputs(data, replayed):
    out = data.root / "run2"
    result = invoke(data, out, "--model", CHALLENGER)
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out / "scored.parquet"), replayed.frame)
    for name in ("scored.parquet", "metrics.json", "report.html"):
        assert (out / name).read_bytes() == (replayed.out / name).read_bytes(), name


def test_default_champion_only_and_duplicates_dropped(data):
    out = data.root / "champion-only"
    result = invoke(data, out, "--model", CHAMPION, "--history-days", "3")
    assert result.exit_code == 0, result.output
    doc = orjson.loads((out / "metrics.json").read_bytes())
    assert [m["version"] for m in doc["models"]] == [CHAMPION]
    assert doc["source"]["history_days"] == 3
    frame = pd.read_parquet(out / "scored.parquet")
    assert list(frame.columns)[-2:] == [f"score_{CHAMPION}", "label"]
    assert len(re.findall(r"<img ", (out / "report.html").read_text())) == 6


def test_missing_csv(data, tmp_path):
    result = invoke(data, tmp_path / "out", csv=tmp_path / "nope.csv")
    assert result.exit_code == 1
    assert "nope.csv not found" in text(result)
    with pytest.raises(DatasetError, match="not found"):
        evaluate_csv(
            tmp_path / "nope.csv",
            date_from=date(2026, 2, 8),
            date_to=date(2026, 2, 14),
            out_dir=tmp_path / "out",
            models_dir=data.models,
        )


@pytest.mark.parametrize(
    ("date_from", "date_to", "message"),
    [
        ("2026-02-15", "2026-02-20", "all history"),  # after the data: history rows only
        ("2027-01-01", "2027-01-07", "no transactions"),  # nothing at all in the read span
        ("2026-02-14", "2026-02-08", "is after"),  # inverted
    ],
)
def test_empty_range(data, tmp_path, date_from, date_to, message):
    result = invoke(data, tmp_path / "out", date_from=date_from, date_to=date_to)
    assert result.exit_code == 1
    assert message in text(result)
    assert not (tmp_path / "out" / "scored.parquet").exists()
    with pytest.raises(DatasetError):
        evaluate_csv(
            data.csv,
            date_from=date.fromisoformat(date_from),
            date_to=date.fromisoformat(date_to),
            out_dir=tmp_path / "out",
            models_dir=data.models,
        )


def test_unknown_model_version(data, tmp_path):
    result = invoke(data, tmp_path / "out", "--model", "v-missing")
    assert result.exit_code == 1
    assert "'v-missing' not found" in text(result)
    assert not (tmp_path / "out").exists()
    result = invoke(data, tmp_path / "out", "--champion", "v-missing")
    assert result.exit_code == 1
    with pytest.raises(ModelNotFoundError):
        evaluate_csv(
            data.csv,
            date_from=date(2026, 2, 8),
            date_to=date(2026, 2, 14),
            out_dir=tmp_path / "out",
            models_dir=data.models,
            challengers=["v-missing"],
        )


def test_empty_registry(data, tmp_path):
    result = CliRunner().invoke(
        app,
        ["replay", "--csv", str(data.csv), "--from", FROM, "--to", TO,
         "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "empty")],
        env=WIDE,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "No model in" in text(result)


def test_tampered_model_is_refused(data, tmp_path):
    models = tmp_path / "models"
    version = make_version(models, "logreg")
    with (version / "model.joblib").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        evaluate_csv(
            data.csv,
            date_from=date(2026, 2, 8),
            date_to=date(2026, 2, 14),
            out_dir=tmp_path / "out",
            models_dir=models,
        )


def test_bad_date_is_a_usage_error(data, tmp_path):
    result = invoke(data, tmp_path / "out", date_from="08/02/2026")
    assert result.exit_code == 2


def test_a_model_sees_only_its_manifest_features(data, tmp_path):
    names = ["TERMINAL_ID_RISK_7DAY_WINDOW", "TX_AMOUNT", "CUSTOMER_ID_NB_TX_1DAY_WINDOW"]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, len(names))) + np.array([0.1, 50.0, 2.0])
    y = (X[:, 0] + rng.normal(size=300) > 0.5).astype(int)
    estimator = make_estimator("logreg", 0)
    estimator.fit(X, y)
    manifest = {
        "version": "v-subset",
        "model_type": "logreg",
        "model_file": "model.joblib",
        "sha256": "",
        "features": names,
        "training_data": {"tag": "unit", "fingerprint": "0" * 64},
        "metrics": {},
        "thresholds": {"review": 0.5, "decline": 0.9},
    }
    write_version(tmp_path / "models" / "v-subset", {"estimator": estimator}, manifest)
    result = evaluate_csv(
        data.csv,
        date_from=date(2026, 2, 8),
        date_to=date(2026, 2, 14),
        out_dir=tmp_path / "out",
        models_dir=tmp_path / "models",
    )
    frame = pd.read_parquet(result.files.scored)
    assert [m.version for m in result.models] == ["v-subset"]
    inputs = np.ascontiguousarray(frame[names].to_numpy())
    np.testing.assert_array_equal(frame["score_v-subset"], estimator.predict_proba(inputs)[:, 1])
    assert result.rows == len(frame) == len(data.in_range)
    assert result.metrics["v-subset"]["n"] == len(frame)


def test_handbook_protocol_replay_reproduces_the_trainers_test_metrics(data, tmp_path):
    """Training and replay agree: same features, same model, same protocol rows, same metrics."""
    from stream_app.sources.handbook_csv import read_csv_events
    from stream_app.sources.schedule import batch_from_events
    from stream_app.training import train

    models = tmp_path / "models"
    trained = train(
        batch_from_events(read_csv_events(data.csv)),
        model_type="logreg",
        train_start=datetime(2026, 1, 25, tzinfo=UTC),  # FROM - 14 days
        models_dir=models,
        data_tag="unit",
        seed=0,
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["replay", "--csv", str(data.csv), "--from", FROM, "--to", TO, "--out", str(out),
         "--models-dir", str(models), "--handbook-protocol"],
        env=WIDE,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = orjson.loads((out / "metrics.json").read_bytes())
    replayed = doc["metrics"][trained.version]
    assert doc["source"]["handbook_protocol"] is True
    assert replayed["n"] == trained.test_rows
    for key in ("auc_roc", "average_precision", "card_precision_at_100"):
        assert replayed[key] == trained.metrics[key], key
