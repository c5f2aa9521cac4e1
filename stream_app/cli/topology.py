"""``stream-app topology``: the worker's stages, the tools and every topic, as Kafka Streams'
``Topology.describe()`` prints a topology (:mod:`stream_app.io.topology`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer


def topology(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document instead of the text.")
    ] = False,
) -> None:
    """Print the topology for the current settings: the worker's sub-topologies (its stages)
    with their source and sink topics and their state, the tools, and every topic with its key,
    partitioning, readers and writers. Topic names as on the cluster (prefix and app id
    applied). Connects to nothing."""
    import orjson

    from stream_app.cli.settings import command_settings
    from stream_app.io.topology import describe

    described = describe(command_settings())
    if as_json:
        typer.echo(orjson.dumps(described, option=orjson.OPT_INDENT_2).decode())
        return
    typer.echo("\n".join(render(described)))


def render(described: dict[str, Any]) -> list[str]:
    """The text of ``stream-app topology``, one line per item."""
    prefix = described["topic_prefix"] or "none"
    lines = [
        f"Topology of app id {described['app_id']} (topic prefix {prefix}, "
        f"{described['partitions']} partitions)",
        f"Worker (consumer group {described['app_id']}):",
    ]
    for node in described["sub_topologies"]:
        lines.append(f"  Sub-topology: {node['sub_topology']} ({node['name']})")
        lines += _node_lines(node, "    ")
    lines.append("Tools and clients:")
    for node in described["tools"]:
        lines.append(f"  {node['process']} ({node['name']})")
        lines += _node_lines(node, "    ")
    lines.append("Topics:")
    width = max(len(t["name"]) for t in described["topics"])
    for t in described["topics"]:
        layout = f"{t['partitions']} partition{'s' if t['partitions'] != 1 else ''}"
        if t["copartitioned_with"]:
            layout += f", co-partitioned with {t['copartitioned_with']}"
        if t["compacted"]:
            layout += ", compacted"
        if t["purged"]:
            layout += ", purged once committed"
        lines.append(f"  {t['name']:<{width}}  {t['kind']}, key {t['key']}; {layout}")
        readers = ", ".join(t["readers"]) or "-"
        writers = ", ".join(t["writers"]) or "-"
        lines.append(f"  {'':<{width}}  written by {writers}; read by {readers}")
    return lines


def _node_lines(node: dict[str, Any], indent: str) -> list[str]:
    lines = [f"{indent}{node['description']}"]
    if node["sources"]:
        lines.append(f"{indent}Source: {', '.join(node['sources'])}")
    if "state" in node:
        state = node["state"]
        lines.append(f"{indent}State:  {state['table']} (changelog {state['changelog']})")
    if node["sinks"]:
        lines.append(f"{indent}Sink:   {', '.join(node['sinks'])}")
    return lines
