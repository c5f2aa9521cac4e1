"""Model quality offline: the handbook's metrics and its train/delay/test protocol, and the three
evaluations behind ``stream-app evaluate`` with the report they share.

- ``csv_range``: score a date range of a handbook-format CSV, no broker;
- ``topic_range``: score a range of the ``transactions`` topic, features rebuilt offline;
- ``served_scores``: join the scores the live worker published with the labels, nothing rescored;
- ``report``: ``scored.parquet``, ``metrics.json`` and ``report.html`` from a scored frame;
- ``compare``: champion against challenger on the scorecard's joined pairs.
"""
