"""``stream-app top``: histogram quantiles as Prometheus computes them, rates between two real
scrapes of the worker's registry, and the rendered frame."""

import math

import pytest
from rich.console import Console

from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.monitoring.scorecard_metrics import ScorecardMetrics
from stream_app.operations.top import bucket_delta, figures, merge, parse, quantile, render

INF = math.inf


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.1, 0.007),  # rank 4 in (0.005, 0.01]: 0.005 + 0.005 * 4/10
        (0.5, 0.0175),  # rank 20 in (0.01, 0.025]: 0.01 + 0.015 * 10/20
        (0.75, 0.025),  # rank 30 exactly at the top of (0.01, 0.025]
        (0.99, 0.025),  # rank 39.6 in +Inf: the highest finite bound
    ],
)
def test_quantile_interpolates_like_histogram_quantile(q, expected):
    cumulative = [(0.005, 0.0), (0.01, 10.0), (0.025, 30.0), (INF, 40.0)]
    assert quantile(q, cumulative) == pytest.approx(expected, abs=1e-15)


def test_quantile_of_the_lowest_bucket_starts_at_zero_and_empty_is_none():
    assert quantile(0.5, [(1.0, 10.0), (INF, 10.0)]) == 0.5
    assert quantile(0.5, [(1.0, 0.0), (INF, 0.0)]) is None
    assert quantile(0.5, []) is None


def test_bucket_delta_is_what_moved_and_a_reset_keeps_the_new_counts():
    before = [(0.01, 5.0), (INF, 8.0)]
    assert bucket_delta(before, [(0.01, 7.0), (INF, 12.0)]) == [(0.01, 2.0), (INF, 4.0)]
    assert bucket_delta(before, [(0.01, 1.0), (INF, 1.0)]) == [(0.01, 1.0), (INF, 1.0)]


def scrape(m: WorkerMetrics, card: ScorecardMetrics | None = None):
    return merge(parse(m.render().decode()), parse(card.render().decode()) if card else {})


def test_figures_between_two_scrapes_of_a_real_registry():
    m = WorkerMetrics()
    m.set_model("v1", "ab" * 32)
    m.set_challenger("v2", "cd" * 32)
    m.batch("customer", 100)
    m.scored_batch("v1", 100, 0.002, [0.02] * 100)
    m.dead({"invalid_json": 3})
    before = scrape(m)

    m.batch("customer", 400)
    m.batch("scoring", 250)
    m.batch("scoring", 150)
    m.scored_batch("v1", 400, 0.004, [0.004] * 200 + [0.02] * 190 + [0.2] * 10)
    m.dead({"invalid_json": 2, "too_large": 1})
    m.shadow_outcomes(agreed=380, disagreed=20, skipped=4)
    m.label_outcomes(applied=30, unmatched=2)
    m.set_lag({("transactions", 0): 10, ("transactions", 1): 5, ("labels", 0): 0})
    m.drift(
        [
            {"statistic": "psi", "subject": "TX_AMOUNT", "value": 0.4, "alert": True},
            {"statistic": "ks", "subject": "score", "value": 0.01, "alert": False},
        ]
    )
    card = ScorecardMetrics()
    card.records(
        [
            {
                "model_version": "v1",
                "granularity": "event_day",
                "period": "2018-08-10",
                "labels": 900,
                "label_coverage": 0.5,
                "metrics": {
                    "auc_roc": 0.87,
                    "average_precision": 0.6,
                    "precision_at_k": 0.3,
                    "brier": 0.01,
                },
            }
        ]
    )
    f = figures(before, scrape(m, card), interval_s=2.0)

    assert f.consumed_per_s == 200.0 and f.scored_per_s == 200.0 and f.scored_total == 500
    # 400 latencies in the interval: 200 in (0.0, 0.005], 190 in (0.01, 0.025], 10 in (0.1, 0.25]
    assert f.latency[0.5] == pytest.approx(0.005)  # rank 200: top of the first bucket
    assert f.latency[0.95] == pytest.approx(0.01 + 0.015 * (380 - 200) / 190)
    assert f.latency[0.99] == pytest.approx(0.1 + 0.15 * (396 - 390) / 10)
    assert f.scoring_p99 == pytest.approx(0.0025 + 0.0025 * 0.99)  # one batch at 0.004 s
    assert f.batch_mean == 200.0
    assert f.dead_letters == {"invalid_json": (5.0, 1.0), "too_large": (1.0, 0.5)}
    assert f.lag == {("labels", "0"): 0, ("transactions", "0"): 10, ("transactions", "1"): 5}
    assert f.shadow_agreement == 0.95 and f.shadow_skipped_per_s == 2.0
    assert f.labels_per_s == {"applied": 15.0, "unmatched": 1.0}
    assert f.model.startswith("v1 (sha256 abababababab") and f.challenger.startswith("v2")
    assert f.drift == [("ks", "score", 0.01, False), ("psi", "TX_AMOUNT", 0.4, True)]
    assert f.scorecard[("v1", "event_day")]["auc_roc"] == 0.87

    console = Console(record=True, width=140, color_system=None)
    console.print(render(f, "http://w/metrics"))
    text = console.export_text()
    assert "scored/s" in text and " 200" in text
    assert "latency p99" in text and "190 ms" in text  # 0.1 + 0.15 * (396 - 390) / 10
    assert "invalid_json" in text and "Consumer lag (total 15)" in text
    assert "agreement 95.0% over the last 2 s" in text
    assert "ALERT" in text and "TX_AMOUNT" in text
    assert "v1 / event_day" in text and "0.870" in text and "50.0%" in text


def test_drift_table_shows_alerting_statistics_first_and_counts_the_rest():
    m = WorkerMetrics()
    m.set_model("v1", "ab" * 32)
    m.drift(
        [
            {"statistic": "psi", "subject": f"F{i:02d}", "value": i / 100, "alert": i in (3, 17)}
            for i in range(20)
        ]
    )
    f = figures(scrape(m), scrape(m), interval_s=1.0)
    console = Console(record=True, width=120, color_system=None)
    console.print(render(f))
    text = console.export_text()
    assert "2 of 20 alerting; 2 alerts since start" in text
    lines = text.splitlines()
    rows = [line for line in lines if "│psi" in line.replace(" ", "")]
    assert "F03" in rows[0] and "ALERT" in rows[0] and "F17" in rows[1] and "ALERT" in rows[1]
    assert len(rows) == 12 and "... 8 more, none alerting" in text
