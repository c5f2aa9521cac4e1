"""Entry point of the ``stream-app`` console script."""

from __future__ import annotations

import typer

from stream_app.cli import (
    broker,
    config_cmd,
    demo,
    evaluate,
    features_cmd,
    models,
    publish,
    scorecard,
    tail,
    top,
    topics,
    topology,
    train,
    worker,
)

app = typer.Typer(
    name="stream-app",
    help="Streaming fraud scoring on Kafka: broker, topics, topology, worker, publish, tail, "
    "train, evaluate, scorecard, top.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(broker.app, name="broker")
app.add_typer(topics.app, name="topics")
app.add_typer(models.app, name="models")
app.command("worker")(worker.worker)
app.command("publish")(publish.publish)
app.command("tail")(tail.tail)
app.command("train")(train.train)
app.command("config")(config_cmd.config)
app.command("demo")(demo.demo)
app.command("features")(features_cmd.features)
app.add_typer(evaluate.app, name="evaluate")
app.command("scorecard")(scorecard.scorecard)
app.command("top")(top.top)
app.command("topology")(topology.topology)
# Old names, kept working: each warns on stderr (one line), then runs the new command.
app.command("replay", hidden=True)(evaluate.replay)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
