"""One root error; a subclass per failure kind. Messages say what went wrong and what to do."""

from __future__ import annotations


class StreamAppError(Exception):
    """Root of every error stream_app raises on purpose."""


class ConfigError(StreamAppError, ValueError):
    """A setting or declaration is wrong."""


class SchemaError(StreamAppError, ValueError):
    """A JSON Schema in schemas/ is missing or invalid."""


class BrokerError(StreamAppError, RuntimeError):
    """The local Kafka broker could not be installed, started or stopped."""


class TopicError(StreamAppError, RuntimeError):
    """A topic could not be created or differs from its declaration."""


class ModelIntegrityError(StreamAppError, RuntimeError):
    """A model artifact does not match its manifest (hash, feature list, format)."""


class ModelNotFoundError(StreamAppError, FileNotFoundError):
    """No model version where one was expected."""


class DatasetError(StreamAppError, FileNotFoundError):
    """An input data file is missing, empty or not in the expected format."""


class KafkaAccessError(StreamAppError, RuntimeError):
    """Kafka cannot be reached, or refuses the client's credentials or TLS settings."""


class KafkaUnreachable(KafkaAccessError):
    """No broker answered (down, or the wrong address): unlike refused credentials, this may
    pass; the worker waits for it."""
