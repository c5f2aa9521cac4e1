"""A Faust app on the worker's Faust layer whose agent runs several actors; one event is slow.

Run as a child process by ``test_concurrent_actors_kill.py``::

    python -m tests.faults.concurrent_agent_app --broker HOST:PORT --app-id ID \\
        --input TOPIC --output TOPIC [--concurrency 2] [--slow-offset N --slow-s S]

The app is built like the worker's (``stream_app.app.create_app``): :class:`FastDispatchApp`
(so the same consumer class, ``FastDispatchConsumer``), raw keys and values, earliest offset
reset, the seek-first table manager, the commit interval and session timeout Faust reads from
the environment. Its one agent reads ``--input`` with ``--concurrency`` actors sharing one queue
and "scores" each event by producing a record to ``--output`` (key: the input offset; value: JSON
with the offset, the actor and the pid) and waiting for its delivery before it takes the next
event, so the event is acknowledged only after its output is delivered, as the worker's batches
are. The event at ``--slow-offset`` sleeps ``--slow-s`` seconds first; the others 10 ms.

The worker's own agents run one actor each on purpose: their windowed per-entity state must see
a key's records in order. This app exists to test the acknowledgement bookkeeping under
concurrency (faust-streaming issue #606), which one actor never exercises.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

import faust
import orjson

from stream_app.faust_ext.dispatch import FastDispatchApp

log = logging.getLogger("concurrent_agent_app")

FAST_S = 0.01


def build_app(args: argparse.Namespace) -> faust.App:
    """The app and its agent (see the module docstring)."""
    app = FastDispatchApp(
        args.app_id,
        broker=f"kafka://{args.broker}",
        store="memory://",
        datadir=args.datadir,
        topic_partitions=1,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
        producer_linger_ms=5,
        TableManager="stream_app.faust_ext.recovery:SeekFirstTableManager",
    )
    source = app.topic(args.input, partitions=1)
    output = args.output

    @app.agent(source, concurrency=args.concurrency)
    async def score(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            offset = event.message.offset
            actor = stream.concurrency_index
            slow = offset == args.slow_offset
            log.info("actor %s took offset %d%s", actor, offset, " (slow)" if slow else "")
            await asyncio.sleep(args.slow_s if slow else FAST_S)
            value = {"offset": offset, "actor": actor, "pid": os.getpid()}
            await app.producer.send_and_wait(
                output, str(offset).encode(), orjson.dumps(value), 0, None, None
            )
            log.info("actor %s scored offset %d", actor, offset)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--slow-offset", type=int, default=-1)
    parser.add_argument("--slow-s", type=float, default=0.0)
    args = parser.parse_args()
    app = build_app(args)
    faust.Worker(app, loglevel="info", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
