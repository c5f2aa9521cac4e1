"""docker-compose.yml and the Dockerfile agree with the project.

No Docker engine is needed: the compose file is parsed as YAML and checked for the services the
stack needs, dependencies that name real services, volumes that are declared, and environment
variable names that ``stream_app.config.Settings`` really reads (a misspelt name would be
silently ignored by the worker). The Dockerfile's final stage must run ``stream-app``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_app.config import REPO_ROOT, Settings

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
REQUIRED_SERVICES = ("kafka", "topics", "train", "worker")
ENV_PREFIX = Settings.model_config.get("env_prefix", "")
# ${NAME}, ${NAME:-default}, ${NAME-default}: compose interpolation, resolved to the default.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a KEY=VALUE list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def interpolate(value: str) -> str:
    """Resolve compose ``${NAME:-default}`` references to their defaults (no host environment)."""
    return INTERPOLATION.sub(lambda m: m.group("default") or "", value)


def depends_on(service: dict[str, Any]) -> dict[str, str | None]:
    """Dependency name -> condition (None for the short list form)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps)
    return {name: (spec or {}).get("condition") for name, spec in deps.items()}


def app_services(services: dict[str, dict[str, Any]]) -> list[str]:
    """Services that run the stream-app image built from the Dockerfile."""
    return sorted(name for name, svc in services.items() if "build" in svc)


def settings_env_names() -> dict[str, str]:
    """Every environment variable name Settings reads -> the field it sets."""
    names: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if alias is None:
            names[f"{ENV_PREFIX}{field}".upper()] = field
        elif isinstance(alias, str):
            names[alias.upper()] = field
        else:  # AliasChoices / AliasPath: every string choice is a readable name
            for choice in getattr(alias, "choices", []):
                if isinstance(choice, str):
                    names[choice.upper()] = field
    return names


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        buffer = ""
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "Dockerfile has no FROM"
    return instructions[starts[-1] :]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON array) form: {args}"
    return value


# --------------------------------------------------------------------------------------------
# Compose: services, dependencies, volumes
# --------------------------------------------------------------------------------------------


def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name in REQUIRED_SERVICES if name not in services]
    assert not missing, f"docker-compose.yml lacks services {missing}"


def test_depends_on_targets_exist(services: dict[str, dict[str, Any]]) -> None:
    unknown = {
        name: missing
        for name, svc in services.items()
        if (missing := [dep for dep in depends_on(svc) if dep not in services])
    }
    assert not unknown, f"depends_on names services that do not exist: {unknown}"


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert "healthcheck" in services["kafka"], "kafka needs a healthcheck for service_healthy"
    assert depends_on(services["topics"]).get("kafka") == "service_healthy"
    worker = depends_on(services["worker"])
    assert worker.get("topics") == "service_completed_successfully"
    assert worker.get("train") == "service_completed_successfully"


def test_demo_publisher_is_optional(services: dict[str, dict[str, Any]]) -> None:
    publisher = services.get("publisher")
    assert publisher is not None, "the demo publisher service is missing"
    assert "demo" in publisher.get("profiles", []), "the publisher must sit behind profile demo"
    command = publisher["command"]
    assert command[0] == "publish" and "--synthetic" in command


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":", 1)[0]
            if source and not source.startswith((".", "/", "~", "$")):
                used.add(source)
    assert used <= declared, f"volumes used but not declared: {sorted(used - declared)}"
    assert {"models", "state"} <= used


def test_kafka_image_matches_local_broker_version(services: dict[str, dict[str, Any]]) -> None:
    image = services["kafka"]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository == "apache/kafka"
    assert tag == Settings.model_fields["kafka_version"].default


# --------------------------------------------------------------------------------------------
# Compose: the environment the app containers get
# --------------------------------------------------------------------------------------------


def test_app_services_use_the_built_image(services: dict[str, dict[str, Any]]) -> None:
    built = app_services(services)
    assert set(REQUIRED_SERVICES) - {"kafka"} <= set(built)
    for name in built:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "")
        assert (REPO_ROOT / context / (dockerfile or "Dockerfile")).resolve() == DOCKERFILE


@pytest.mark.parametrize("service", ["topics", "train", "worker", "scorecard", "publisher"])
def test_env_names_are_settings(services: dict[str, dict[str, Any]], service: str) -> None:
    known = settings_env_names()
    env = env_of(services[service])
    unknown = [name for name in env if name.upper() not in known]
    assert not unknown, (
        f"{service}: {unknown} are not read by stream_app.config.Settings "
        f"(STREAM_APP_<FIELD> or a KAFKA_* validation_alias)"
    )


def test_every_stream_app_name_maps_to_a_field(services: dict[str, dict[str, Any]]) -> None:
    fields = Settings.model_fields
    for name in env_of(services["worker"]):
        if name.startswith(ENV_PREFIX):
            field = name[len(ENV_PREFIX) :].lower()
            assert field in fields, f"{name}: Settings has no field {field!r}"
            assert fields[field].validation_alias is None, f"{name}: {field} is read via alias"
        else:
            aliases = {str(info.validation_alias) for info in fields.values()}
            assert name in aliases, f"{name} is no Settings field's validation_alias"


def test_worker_env_builds_the_intended_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith((ENV_PREFIX, "KAFKA_")):
            monkeypatch.delenv(name)
    for name, value in env_of(services["worker"]).items():
        monkeypatch.setenv(name, interpolate(value))
    settings = Settings()
    assert settings.store == "rocksdb"
    assert settings.state_dir == Path("/state")
    assert settings.models_dir == Path("/models")
    assert settings.kafka_bootstrap_servers
    web_port = settings.web_port
    published = [str(p).rsplit(":", 1)[-1] for p in services["worker"].get("ports", [])]
    assert str(web_port) in published, f"worker web port {web_port} is not published"


def test_worker_reaches_an_advertised_listener(services: dict[str, dict[str, Any]]) -> None:
    advertised = interpolate(env_of(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"])
    endpoints = {entry.split("://", 1)[1] for entry in advertised.split(",")}
    for service in app_services(services):
        bootstrap = interpolate(env_of(services[service]).get("KAFKA_BOOTSTRAP_SERVERS", ""))
        assert bootstrap, f"{service}: KAFKA_BOOTSTRAP_SERVERS is not set"
        for server in bootstrap.split(","):
            assert server.strip() in endpoints, f"{service}: {server} is not in {endpoints}"


def test_models_volume_shared_by_train_and_worker(services: dict[str, dict[str, Any]]) -> None:
    def mounts(service: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for volume in services[service].get("volumes", []):
            source, target = str(volume).split(":")[:2]
            out[target] = source
        return out

    for service in ("train", "worker"):
        models_dir = interpolate(env_of(services[service])["STREAM_APP_MODELS_DIR"])
        assert mounts(service).get(models_dir) == "models", f"{service}: {models_dir} not mounted"
    state_dir = interpolate(env_of(services["worker"])["STREAM_APP_STATE_DIR"])
    assert mounts("worker").get(state_dir) == "state"


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def test_dockerfile_runs_stream_app() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    stage = final_stage(instructions)
    entrypoints = [args for keyword, args in stage if keyword == "ENTRYPOINT"]
    assert entrypoints, "the final stage has no ENTRYPOINT"
    assert exec_form(entrypoints[-1]) == ["stream-app"]
    commands = [args for keyword, args in stage if keyword == "CMD"]
    assert commands and exec_form(commands[-1]) == ["worker"]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "stream-app" in scripts["project"]["scripts"]


def test_dockerfile_base_and_user() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    args = {}
    for keyword, rest in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
    stage = final_stage(instructions)
    image = stage[0][1].split()[0]
    image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
    assert image == "python:3.11-slim"
    users = [rest.split(":")[0] for keyword, rest in stage if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".state", ".git", "models/*"):
        assert required in patterns, f".dockerignore must exclude {required}"
