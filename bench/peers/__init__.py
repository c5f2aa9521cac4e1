"""Peers of the benchmark: the same pipeline on other stream processors."""
