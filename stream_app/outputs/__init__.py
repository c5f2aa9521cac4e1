"""What the worker publishes: scores, shadow scores, drift statistics, dead letters."""
