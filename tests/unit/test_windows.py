"""SlidingWindow: exact (start, end] semantics, out-of-order inserts, eviction."""

from stream_app.features.windows import SlidingWindow

DAY = 86_400.0


def test_window_is_open_at_start_closed_at_end():
    w = SlidingWindow()
    for ts, amount in [(0.0, 1.0), (DAY, 2.0), (2 * DAY, 4.0)]:
        w.add(ts, amount)
    assert w.count_sum(0.0, 2 * DAY) == (2, 6.0)
    assert w.count_sum(-1.0, 2 * DAY) == (3, 7.0)
    assert w.count_sum(DAY, DAY) == (0, 0)
    assert w.count(0.0, DAY) == 1


def test_equal_times_keep_arrival_order_and_late_events_go_in_place():
    w = SlidingWindow()
    assert w.add(10.0, 1.0) == 0
    assert w.add(20.0, 2.0) == 1
    assert w.add(10.0, 3.0) == 1  # after the existing sample at 10
    assert w.add(5.0, 4.0) == 0
    assert w.times == [5.0, 10.0, 10.0, 20.0]
    assert w.values == [4.0, 1.0, 3.0, 2.0]
    assert w.count_sum(5.0, 10.0) == (2, 4.0)


def test_evict_through_drops_samples_at_or_before_cutoff():
    w = SlidingWindow([1.0, 2.0, 3.0], [10.0, 20.0, 30.0])
    assert w.evict_through(2.0) == 2
    assert (w.times, w.values) == ([3.0], [30.0])
    assert w.evict_through(0.0) == 0
    assert len(w) == 1


def test_state_lists_are_shared_not_copied():
    times, values = [1.0], [5.0]
    w = SlidingWindow(times, values)
    w.add(2.0, 6.0)
    assert times == [1.0, 2.0] and values == [5.0, 6.0]
