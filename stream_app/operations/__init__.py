"""Operator jobs beside the worker: ``stream-app top`` (live figures from the workers' metrics
endpoints) and ``stream-app topics grow`` (more partitions, the tables' state moved with its keys).
"""
