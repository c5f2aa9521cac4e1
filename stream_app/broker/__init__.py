"""The local Kafka broker: a single KRaft node (broker + controller) that stream_app downloads with
Maven, starts, checks and stops itself. No Docker needed, only Java 17+ and Maven.

Use :class:`stream_app.broker.local.LocalBroker` (or ``stream-app broker start|stop|status|logs``).
"""

from __future__ import annotations

from stream_app.broker.local import BrokerStatus, Listener, LocalBroker, free_port, free_ports

__all__ = ["BrokerStatus", "Listener", "LocalBroker", "free_port", "free_ports"]
