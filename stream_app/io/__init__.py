"""Kafka boundary: topic declarations, codecs, schemas, dead letters."""
