"""The ceiling: a plain confluent-kafka consume -> produce loop that does no work.

It reads the benchmark's input topics (transactions and labels) with its own consumer group and
copies every record, key and value untouched, to one output topic; it exits once it has copied
``--expect`` records. Whatever the pipeline does on top costs throughput against this.

    python -m bench.ceiling --bootstrap HOST:PORT --topics P.transactions P.labels \\
        --out P.ceiling.out --group G --expect N
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from confluent_kafka import Consumer, Producer


def main(argv: Sequence[str] | None = None) -> None:
    """Copy ``--expect`` records from ``--topics`` to ``--out``, then exit."""
    parser = argparse.ArgumentParser(description="consume -> produce, no work")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    args = parser.parse_args(argv)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(
        {"bootstrap.servers": args.bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"}
    )
    consumer.subscribe(args.topics)
    copied = 0
    try:
        while copied < args.expect:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    continue
                while True:
                    try:
                        producer.produce(args.out, value=message.value(), key=message.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
                copied += 1
            producer.poll(0)
        producer.flush(60)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
