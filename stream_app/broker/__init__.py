"""The local Kafka broker: a single KRaft node (broker + controller) that stream_app downloads with
Maven, starts, checks and stops itself. No Docker needed, only Java 17+ and Maven.

Use :class:`LocalBroker` (or ``stream-app broker start|stop|status|logs``). The modules:

* :mod:`~stream_app.broker.jars`: the Kafka jars (Maven download into a cache, classpath) and
  the ``java`` executable.
* :mod:`~stream_app.broker.listeners`: extra client listeners (SASL_SSL with SCRAM users).
* :mod:`~stream_app.broker.config`: one broker's home, ports, heap, ``server.properties``,
  ``log4j2.properties``, JVM command line and KRaft storage format.
* :mod:`~stream_app.broker.process`: :class:`LocalBroker`, the supervision of its JVM (start,
  readiness, pid file, stop, status).
* :mod:`~stream_app.broker.logs`: the broker's log tail and the report of a failed start.
* :mod:`~stream_app.broker.host`: loopback ports, ``/proc`` lookups and file locks.
"""

from __future__ import annotations

from stream_app.broker.config import new_cluster_id
from stream_app.broker.host import (
    free_port,
    free_ports,
    local_port,
    pid_alive,
    port_in_use,
    read_cmdline,
)
from stream_app.broker.jars import DEFAULT_KAFKA_VERSION, JARS_DIR_ENV, default_jars_dir
from stream_app.broker.listeners import SCRAM_MECHANISMS, Listener, SaslSslListener, ScramUser
from stream_app.broker.process import BrokerStatus, LocalBroker

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "JARS_DIR_ENV",
    "SCRAM_MECHANISMS",
    "BrokerStatus",
    "Listener",
    "LocalBroker",
    "SaslSslListener",
    "ScramUser",
    "default_jars_dir",
    "free_port",
    "free_ports",
    "local_port",
    "new_cluster_id",
    "pid_alive",
    "port_in_use",
    "read_cmdline",
]
