"""``stream-app tail``: print the records of a topic.

A confluent-kafka consumer in a fresh group of its own (``stream-app-tail-<uuid>``) that never
commits, so tailing leaves no trace on the cluster's offsets. By default it starts ``n`` records
before the end of each partition (the most recent records, like ``tail``); ``--from-beginning``
starts at the earliest offsets. It stops after ``n`` records, or when nothing new has arrived for
``--timeout`` seconds; ``--follow`` keeps printing until interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

if TYPE_CHECKING:
    from confluent_kafka import Message
    from rich.console import Console

    from stream_app.config import Settings

EXIT_ERROR = 1


def _decode_key(raw: bytes | None) -> dict[str, Any]:
    import base64

    if raw is None:
        return {"key": None}
    try:
        return {"key": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"key_base64": base64.b64encode(raw).decode("ascii")}


def _decode_value(raw: bytes | None) -> tuple[bool, Any]:
    """(True, parsed JSON) when the value is JSON, else (False, base64 text or None)."""
    import base64

    import orjson

    if raw is None:
        return True, None
    try:
        return True, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, base64.b64encode(raw).decode("ascii")


def record_as_json(msg: Message) -> dict[str, Any]:
    """One record as a JSON-ready dict: topic, partition, offset, timestamp (ms), key, value.

    The value is the decoded JSON when it is JSON, else ``value_base64`` holds its bytes.
    """
    _, timestamp = msg.timestamp()
    out: dict[str, Any] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": timestamp if timestamp >= 0 else None,
    }
    out.update(_decode_key(msg.key()))
    is_json, value = _decode_value(msg.value())
    out["value" if is_json else "value_base64"] = value
    return out


def _print_rich(console: Console, msg: Message) -> None:
    from datetime import UTC, datetime

    from rich.json import JSON
    from rich.markup import escape

    record = record_as_json(msg)
    key = record.get("key", record.get("key_base64"))
    when = ""
    if record["timestamp"] is not None:
        stamp = datetime.fromtimestamp(record["timestamp"] / 1000, UTC)
        when = f"  [dim]{stamp.isoformat(timespec='milliseconds')}[/]"
    console.print(
        f"[bold cyan]{escape(msg.topic() or '')}[/] partition [bold]{msg.partition()}[/] "
        f"offset [bold]{msg.offset()}[/]  key [green]{escape(repr(key))}[/]{when}"
    )
    if "value" in record:
        import orjson

        console.print(JSON(orjson.dumps(record["value"]).decode()))
    else:
        console.print(f"[yellow]not JSON, base64:[/] {record['value_base64']}")


def run_tail(
    settings: Settings,
    topic: str,
    *,
    n: int = 10,
    json_: bool = False,
    from_beginning: bool = False,
    timeout: float = 10.0,
    follow: bool = False,
    console: Console | None = None,
    out: TextIO | None = None,
) -> int:
    """Print records of the declared ``topic``; return how many were printed.

    ``json_`` writes one compact JSON line per record to ``out`` (default stdout), otherwise the
    records go to ``console`` with rich; warnings go to stderr. Raises ``KafkaAccessError`` if
    the cluster cannot be reached or refuses the credentials, ``TopicError`` if the topic does not
    exist.
    """
    import uuid

    import orjson
    from confluent_kafka import Consumer, TopicPartition
    from rich.console import Console

    from stream_app.io.security import check_access, librdkafka_config
    from stream_app.io.topic_reader import partitions_of

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    console = console if console is not None else Console()
    warn = Console(stderr=True)
    out = out if out is not None else sys.stdout
    name = settings.topic(topic)
    check_access(settings)  # a wrong password or CA fails here, clearly, within seconds
    conf = {
        **librdkafka_config(settings),
        "group.id": f"stream-app-tail-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    }
    consumer = Consumer(conf)
    printed = 0
    try:
        assignment = []
        for partition in partitions_of(consumer, settings, topic):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(name, partition), timeout=10, cached=False
            )
            start = low if from_beginning else max(low, high - n)
            assignment.append(TopicPartition(name, partition, start))
        consumer.assign(assignment)

        last_news = time.monotonic()
        wait = 0.5 if follow else min(0.5, max(timeout, 0.05))
        while follow or printed < n:
            msg = consumer.poll(wait)
            if msg is None:
                if not follow and time.monotonic() - last_news >= timeout:
                    break
                continue
            if msg.error():
                warn.print(f"[yellow]warning:[/] {msg.error()}", highlight=False)
                continue
            last_news = time.monotonic()
            if json_:
                out.write(orjson.dumps(record_as_json(msg)).decode() + "\n")
                out.flush()
            else:
                _print_rich(console, msg)
            printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return printed


def tail(
    topic: Annotated[
        str, typer.Argument(help="Declared topic name, e.g. transactions (the prefix is added).")
    ],
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Stop after this many records.")] = 10,
    json_: Annotated[
        bool, typer.Option("--json", help="One compact JSON line per record.")
    ] = False,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning", help="Start at the earliest offsets (default: the last n)."
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0, help="Stop when nothing new arrives for this many s."),
    ] = 10.0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until Ctrl-C (ignores -n).")
    ] = False,
) -> None:
    """Print records of a topic: key, partition, offset and the value (JSON pretty-printed)."""
    from rich.console import Console
    from rich.markup import escape

    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import StreamAppError

    settings = command_settings()
    console = Console()
    try:
        run_tail(
            settings,
            topic,
            n=n,
            json_=json_,
            from_beginning=from_beginning,
            timeout=timeout,
            follow=follow,
            console=console,
        )
    except StreamAppError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from exc
