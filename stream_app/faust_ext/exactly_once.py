"""The Faust side of ``processing_guarantee=exactly_once``: read committed, commit in transactions.

Faust's own exactly-once mode (``processing_guarantee="exactly_once"`` on the app) puts one
aiokafka transactional producer per input partition behind Faust's producer, which the worker no
longer uses for its outputs or changelogs (:mod:`stream_app.outputs`). The worker's mode is its
own, built from three parts:

- the stages' outputs and input offsets commit in one librdkafka transaction per checkpoint
  (:class:`stream_app.outputs.kafka_transactions.TransactionalPublisher`);
- :class:`ExactlyOnceConsumer` reads with ``isolation_level=read_committed``, so the scoring
  stage never sees a ``transactions.by-terminal`` record of an aborted batch, and it never
  commits offsets itself: Faust's periodic commit (and one on revoke) would write the group's
  offsets outside the transactions, possibly behind what a transaction already committed;
- :meth:`ExactlyOnceConsumer.group_metadata` gives the transactions the group's current generation
  and member id (KIP-447 fencing: the coordinator refuses offsets from a member the group has
  moved past).

Faust's own commit bookkeeping still runs (``_commit`` reports success without a request), so
its acknowledgement tracking, recovery and rebalance code behave as in at-least-once mode; on an
assignment Faust seeks to the group's committed offsets, which are the transactions'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from stream_app.exceptions import ConfigError
from stream_app.faust_ext.batch import BatchApp, BatchConsumer, BatchConsumerThread
from stream_app.outputs.kafka_transactions import group_metadata


class ReadCommittedConsumerThread(BatchConsumerThread):
    """Faust's aiokafka consumer thread whose worker consumer reads committed records only."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads the attribute when start() builds its Fetcher, after this returns.
        if not hasattr(consumer, "_isolation_level"):
            raise ConfigError(
                f"aiokafka {aiokafka.__version__} has no AIOKafkaConsumer._isolation_level; "
                "exactly_once needs a read_committed consumer: pin aiokafka 0.14 or use "
                "at_least_once"
            )
        consumer._isolation_level = "read_committed"
        return consumer


class ExactlyOnceConsumer(BatchConsumer):
    """Reads committed records; leaves every offset commit to the checkpoints' transactions."""

    commit_on_revoke = False  # nothing to commit outside the transactions: Faust's own revoke
    read_committed = True

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        # The transactions committed these offsets (or later ones) already; see module doc.
        return True

    def group_metadata(self) -> bytes:
        """The group's metadata as this member knows it now (``send_offsets_to_transaction``)."""
        coordinator = self._thread._ensure_consumer()._coordinator
        return group_metadata(
            self.app.conf.id,
            coordinator.generation,
            coordinator.member_id,
            self.app.conf.consumer_group_instance_id,
        )


class ExactlyOnceTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, building :class:`ExactlyOnceConsumer`."""

    Consumer = ExactlyOnceConsumer


class ExactlyOnceApp(BatchApp):
    """The worker's app in exactly-once mode (aiokafka driver only)."""

    transport_class = ExactlyOnceTransport

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        if not isinstance(transport, ExactlyOnceTransport):
            raise ConfigError(
                "processing_guarantee=exactly_once needs the aiokafka transport "
                "(STREAM_APP_TRANSPORT=aiokafka)"
            )
        return transport

    def group_metadata(self) -> bytes:
        """The consumer group's current metadata (see :class:`ExactlyOnceConsumer`)."""
        return cast(ExactlyOnceConsumer, self.consumer).group_metadata()
