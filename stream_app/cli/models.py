"""``stream-app models list|promote|rollback|canary|assignment|register|history|compare``: the
registry, which versions serve and decide, and the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    from stream_app.scoring.serving import Role, Serving

EXIT_ERROR = 1

app = typer.Typer(
    help="The model registry: list versions, promote one to champion or challenger, roll back, "
    "and the audit trail of every change (history). Running workers that do not pin a role swap "
    "within STREAM_APP_MODEL_WATCH_INTERVAL_S.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _role(challenger: bool) -> Role:
    return "challenger" if challenger else "champion"


@app.command("list")
def list_models() -> None:
    """Every registered version: type, training data, test metrics, hash, and its role."""
    from rich.console import Console
    from rich.table import Table

    from stream_app.cli.settings import command_settings
    from stream_app.scoring.registry import list_versions, read_manifest
    from stream_app.scoring.serving import read_serving

    settings = command_settings()
    serving = read_serving(settings.models_dir)
    versions = list_versions(settings.models_dir)
    table = Table(title=f"Models in {settings.models_dir}")
    for column in ("version", "role", "type", "training data", "AUC", "AP", "sha256"):
        table.add_column(column)
    for version in versions:
        m = read_manifest(settings.models_dir / version)
        role = ""
        if serving is not None:
            role = "champion" if serving.champion == version else ""
            role = "challenger" if serving.challenger == version else role
            if serving.canary is not None and serving.canary["version"] == version:
                role += f" (canary {serving.canary['share'] * 100:g} %)"
        elif version == versions[-1]:
            role = "champion (newest)"
        metrics = m.metrics.get("test", m.metrics)
        auc, ap = metrics.get("auc_roc"), metrics.get("average_precision")
        table.add_row(
            version,
            role,
            m.model_type,
            m.training_data_tag,
            f"{auc:.4f}" if isinstance(auc, float) else "",
            f"{ap:.4f}" if isinstance(ap, float) else "",
            m.sha256[:12],
        )
    Console().print(table)


BY_OPTION = typer.Option(
    "--by",
    help="Who makes the change, for the audit trail (default: the OS user as user@host).",
    show_default=False,
)
REASON_HELP = "Why, for the audit trail (models.audit): required."


def _apply(
    change: Callable[..., Serving],
    what: str,
    action: Literal["promote", "rollback", "canary"],
    role: Role | Literal["canary"],
    *args: Any,
    by: str | None,
    reason: str,
) -> tuple[Serving, str, str]:
    """Run ``change`` (promote or rollback) on the group's current assignment (the control
    topic's, else this machine's serving.json), publish the result to the control topic, write
    serving.json, then the audit record to models.audit; (the new content, where it went, the
    audit record's id and offset). Errors exit with a message."""
    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError, StreamAppError
    from stream_app.scoring.assignment import (
        ASSIGNMENT_TOPIC,
        base_uri,
        from_serving,
        to_serving,
        who,
    )
    from stream_app.scoring.assignment_topic import publish, read_latest
    from stream_app.scoring.audit import AuditError, AuditRecord, check_reason, new_id, side
    from stream_app.scoring.serving import write_serving

    settings = command_settings()
    by = (by or "").strip() or who()
    topic = settings.topic(ASSIGNMENT_TOPIC)
    try:
        reason = check_reason(reason, action)
    except AuditError as exc:
        typer.echo(f"error: not {what}: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    record_id = new_id()
    entry = {"id": record_id, "reason": reason}
    published = None
    try:
        if settings.model_assignment == "file":
            serving = change(settings.models_dir, *args, by=by, audit=entry)
            where = f"{settings.models_dir}/serving.json"
            published_at = None
        else:
            from stream_app.io.topics import ensure_topics

            ensure_topics(settings, [ASSIGNMENT_TOPIC])
            published = read_latest(settings)
            current = to_serving(published.assignment) if published is not None else None
            serving = change(
                settings.models_dir, *args, current=current, by=by, write=False, audit=entry
            )
            assignment = from_serving(
                serving,
                settings.models_dir,
                settings.app_id,
                base_uri(settings),
                by,
                published.assignment if published is not None else None,
            )
            offset = publish(settings, assignment)
            published_at = f"{topic}@{offset}"
            write_serving(settings.models_dir, serving)
            ref = assignment.get("champion" if role == "champion" else "challenger")
            source = f" from {ref.uri}" if ref is not None else ""
            where = (
                f"{published_at} for group {settings.app_id}{source}, and "
                f"{settings.models_dir}/serving.json; workers follow within "
                f"STREAM_APP_MODEL_WATCH_INTERVAL_S"
            )
    except (ModelIntegrityError, ModelNotFoundError) as exc:
        typer.echo(f"error: not {what}: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    except StreamAppError as exc:
        typer.echo(
            f"error: not {what}: the assignment could not be published to {topic} ({exc}); "
            "serving.json is unchanged. STREAM_APP_MODEL_ASSIGNMENT=file changes serving.json "
            "only (workers of this machine).",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR) from exc
    last = serving.history[-1]
    model_role: Role = "champion" if role == "champion" else "challenger"
    before = published.assignment.get(model_role) if published is not None else None
    source_side = side(settings.models_dir, last.get("previous"))
    if before is not None and source_side is not None and before.version == source_side["version"]:
        source_side["sha256"] = before.sha256  # what the workers were told to serve
    target_side = side(settings.models_dir, last.get("version"))
    if action == "canary":  # the shares, before and after
        if source_side is not None:
            source_side["share"] = last.get("previous_share")
        if target_side is not None:
            target_side["share"] = last.get("share")
    record = AuditRecord.new(
        action,
        settings.app_id,
        by=by,
        reason=reason,
        role=role,
        source=source_side,
        target=target_side,
        record_id=record_id,
    ).with_assignment(published_at)
    return serving, where, _audit(settings, record, f"the {what} {role}")


def _audit(settings: Any, record: Any, change: str) -> str:
    """Write ``record`` to models.audit; ``id@offset``. A failure exits 1 and says the change
    itself stands."""
    from stream_app.exceptions import StreamAppError
    from stream_app.scoring.audit import AUDIT_TOPIC, write

    topic = settings.topic(AUDIT_TOPIC)
    try:
        offset = write(settings, record)
    except StreamAppError as exc:
        typer.echo(
            f"error: {change} is in place, but its audit record {record.id} could not be "
            f"written to {topic} ({exc}). The assignment's own audit entry (`stream-app models "
            f"assignment`) holds who, when and why; make {topic} writable (ACL Write, or start "
            "the broker) before the next change.",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR) from exc
    return f"audit {record.id} at {topic}@{offset}"


@app.command()
def promote(
    version: Annotated[
        str, typer.Argument(help="Registered version (`none` with --challenger: stop shadowing).")
    ],
    reason: Annotated[str, typer.Option("--reason", help=REASON_HELP, show_default=False)],
    challenger: Annotated[
        bool, typer.Option("--challenger", help="Promote to challenger instead of champion.")
    ] = False,
    by: Annotated[str | None, BY_OPTION] = None,
) -> None:
    """Make VERSION the champion (or challenger) of every worker of the group, after it loads
    with its SHA-256 matching its manifest and features the feature module computes: published
    to the control topic models.assignment (with its URI under STREAM_APP_MODELS_URI and its
    hashes) and written to models/serving.json; who, when, from which version to which and
    why go to the audit topic models.audit (`stream-app models history`)."""
    from stream_app.scoring.serving import promote as do_promote

    role: Role = "challenger" if challenger else "champion"
    target = None if challenger and version.lower() == "none" else version
    serving, where, audit = _apply(
        do_promote, "promoted", "promote", role, target, role, by=by, reason=reason
    )
    last = serving.history[-1]
    typer.echo(f"{role}: {last['previous']} -> {last['version']} ({where}; {audit})")


@app.command()
def rollback(
    reason: Annotated[str, typer.Option("--reason", help=REASON_HELP, show_default=False)],
    challenger: Annotated[
        bool, typer.Option("--challenger", help="Roll back the challenger instead.")
    ] = False,
    by: Annotated[str | None, BY_OPTION] = None,
) -> None:
    """Serve the version the champion (or challenger) had before its latest promotion (in the
    group's assignment; published, written and audited as `promote` does)."""
    from stream_app.scoring.serving import rollback as do_rollback

    role = _role(challenger)
    serving, where, audit = _apply(
        do_rollback, "rolled back", "rollback", role, role, by=by, reason=reason
    )
    last = serving.history[-1]
    typer.echo(f"{role}: {last['previous']} -> {last['version']} (rollback; {where}; {audit})")


@app.command()
def canary(
    version: Annotated[
        str | None,
        typer.Argument(
            help="Registered version to decide for the share (it becomes the challenger if it "
            "is not); omit with --off.",
            show_default=False,
        ),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help=REASON_HELP, show_default=False)] = "",
    share: Annotated[
        str,
        typer.Option(
            "--share",
            help="Share of customers the canary decides for: a percentage (5%) or 0-1 (0.05). "
            "Sticky by customer: a larger share only adds customers, a smaller one only takes "
            "some back.",
        ),
    ] = "5%",
    off: Annotated[
        bool, typer.Option("--off", help="Switch the canary off: the champion decides for all.")
    ] = False,
    by: Annotated[str | None, BY_OPTION] = None,
) -> None:
    """Let VERSION (the challenger) decide instead of the champion for a sticky share of
    customers (a hash of the customer id decides), or switch that off. Every envelope says which
    arm decided (route: champion or canary) and names both versions; the shadow goes on for the
    other customers. Published to the control topic like `promote` (running workers apply it
    between two micro-batches, without a restart) and audited in models.audit."""
    from stream_app.scoring.canary import parse_share
    from stream_app.scoring.serving import set_canary

    if off == (version is not None):
        typer.echo("error: name a VERSION to start or change the canary, or pass --off", err=True)
        raise typer.Exit(EXIT_ERROR)
    try:
        fraction = 0.0 if off else parse_share(share)
    except ValueError as exc:
        typer.echo(f"error: --share: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    if not off and fraction == 0.0:
        typer.echo("error: --share 0 decides for nobody; use --off to end the canary", err=True)
        raise typer.Exit(EXIT_ERROR)
    target = None if off else version
    serving, where, audit = _apply(
        set_canary, "changed", "canary", "canary", target, fraction, by=by, reason=reason
    )
    last = serving.history[-1]
    before = (
        f"{last['previous']} for {last['previous_share'] * 100:g} %" if last["previous"] else "off"
    )
    now = f"{last['version']} for {last['share'] * 100:g} %" if last["version"] else "off"
    became = (
        f"; {last['version']} is now the challenger (was {last['challenger_before']})"
        if last["version"] and last["challenger_before"] != last["version"]
        else ""
    )
    typer.echo(f"canary: {before} -> {now}{became} ({where}; {audit})")


@app.command()
def assignment(
    publish_file: Annotated[
        bool,
        typer.Option(
            "--publish",
            help="Publish this machine's models/serving.json as the group's assignment (to "
            "initialise an empty control topic, or to undo a change made elsewhere).",
        ),
    ] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="With --publish: why, for the audit trail.")
    ] = "models/serving.json published as the group's assignment",
    by: Annotated[str | None, BY_OPTION] = None,
) -> None:
    """Show the group's model assignment on the control topic models.assignment (what every
    worker that does not pin a role serves), with its audit trail."""
    import orjson

    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import StreamAppError
    from stream_app.scoring.assignment import (
        ASSIGNMENT_TOPIC,
        base_uri,
        encode,
        from_serving,
        who,
    )
    from stream_app.scoring.assignment_topic import publish, read_latest
    from stream_app.scoring.audit import AuditRecord, side
    from stream_app.scoring.serving import read_serving

    settings = command_settings()
    topic = settings.topic(ASSIGNMENT_TOPIC)
    try:
        if publish_file:
            from stream_app.io.topics import ensure_topics

            serving = read_serving(settings.models_dir)
            if serving is None:
                typer.echo(f"error: no {settings.models_dir}/serving.json to publish", err=True)
                raise typer.Exit(EXIT_ERROR)
            ensure_topics(settings, [ASSIGNMENT_TOPIC])
            who_ = (by or "").strip() or who()
            record = AuditRecord.new(
                "publish",
                settings.app_id,
                by=who_,
                reason=reason,
                target=side(settings.models_dir, serving.champion),
            )
            serving.history.append(
                {
                    "role": None,
                    "version": None,
                    "previous": None,
                    "action": "publish",
                    "at": serving.updated_at,
                    "by": who_,
                    **record.entry(),
                }
            )
            offset = publish(
                settings,
                from_serving(
                    serving, settings.models_dir, settings.app_id, base_uri(settings), who_
                ),
            )
            audit = _audit(
                settings, record.with_assignment(f"{topic}@{offset}"), "the published assignment"
            )
            typer.echo(
                f"published {settings.models_dir}/serving.json to {topic}@{offset} ({audit})"
            )
        published = read_latest(settings)
    except StreamAppError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    if published is None:
        typer.echo(
            f"no assignment of group {settings.app_id} on {topic}: workers follow their own "
            "models/serving.json (`stream-app models promote` or `models assignment --publish` "
            "publishes one)"
        )
        return
    data = orjson.loads(encode(published.assignment))
    typer.echo(f"{topic}@{published.offset} (group {settings.app_id}):")
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


@app.command()
def register(
    version: Annotated[str, typer.Argument(help="A version in the registry (models list).")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why it is registered, for the audit trail.")
    ] = "registered in the model registry",
    by: Annotated[str | None, BY_OPTION] = None,
) -> None:
    """Record VERSION's registration in the audit topic models.audit (`stream-app train` does it
    for the versions it trains; this is for a version copied into the registry, or one trained
    while the broker was away)."""
    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
    from stream_app.scoring.assignment import who
    from stream_app.scoring.audit import AuditRecord, side
    from stream_app.scoring.registry import read_manifest

    settings = command_settings()
    try:
        read_manifest(settings.models_dir / version)
        record = AuditRecord.new(
            "register",
            settings.app_id,
            by=(by or "").strip() or who(),
            reason=reason,
            target=side(settings.models_dir, version),
        )
    except (ModelIntegrityError, ModelNotFoundError) as exc:
        typer.echo(f"error: not registered: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    typer.echo(f"registered {version} ({_audit(settings, record, f'{version} (registered)')})")


def audit_registration(version: str, sha256: str, reason: str, by: str | None) -> str:
    """Write the registration record of a version just trained into the registry; the line to
    print (a warning that says what to do when it could not be written: training stands)."""
    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import StreamAppError
    from stream_app.scoring.assignment import who
    from stream_app.scoring.audit import AUDIT_TOPIC, AuditRecord, write

    settings = command_settings()
    record = AuditRecord.new(
        "register",
        settings.app_id,
        by=(by or "").strip() or who(),
        reason=reason,
        target={"version": version, "sha256": sha256},
    )
    topic = settings.topic(AUDIT_TOPIC)
    try:
        from stream_app.io.security import check_access

        check_access(settings, timeout=5.0)
        offset = write(settings, record, timeout=10.0)
    except StreamAppError as exc:
        return (
            f"warning: {version} is registered, but not in the audit trail: {topic} could not be "
            f"written ({exc}). Once Kafka answers, run `stream-app models register {version} "
            f"--reason ...`."
        )
    return f"audit {record.id} at {topic}@{offset}"


@app.command()
def history(
    all_groups: Annotated[
        bool,
        typer.Option("--all-groups", help="Every consumer group's records, not only this one's."),
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=0, help="Only the latest N records (0: all).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line.")] = False,
) -> None:
    """The audit trail of the models (topic models.audit), oldest first: every promote,
    rollback, published assignment and model registration of this group (STREAM_APP_APP_ID):
    its id, when, who, the action and role, from which version (and artifact SHA-256) to which,
    why, and where the change was published."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import StreamAppError
    from stream_app.scoring.audit import AUDIT_TOPIC, describe, read_history

    settings = command_settings()
    topic = settings.topic(AUDIT_TOPIC)
    try:
        stored, problems = read_history(settings, None if all_groups else settings.app_id)
    except StreamAppError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    for problem in problems:
        typer.echo(f"warning: skipped {problem}", err=True)
    if limit:
        stored = stored[-limit:]
    if as_json:
        for item in stored:
            typer.echo(orjson.dumps(item.record.to_dict()).decode())
        return
    scope = "all groups" if all_groups else f"group {settings.app_id}"
    if not stored:
        typer.echo(f"no audit records of {scope} on {topic}")
        return
    table = Table(title=f"{topic} ({scope}): {len(stored)} record(s)")
    columns = ["id", "at", "by", "action", "from", "to", "reason", "published"]
    if all_groups:
        columns.insert(1, "group")
    for column in columns:
        table.add_column(column, overflow="fold")
    for item in stored:
        r = item.record
        action = f"{r.action} {r.role}" if r.role and r.role != r.action else r.action
        row = [
            r.id,
            r.at,
            r.by,
            action,
            describe(r.source),
            describe(r.target),
            r.reason,
            r.assignment or "-",
        ]
        if all_groups:
            row.insert(1, r.group)
        table.add_row(*row)
    Console(width=max(Console().width, 160)).print(table)


from stream_app.cli.compare import compare as _compare  # noqa: E402

app.command("compare")(_compare)
