"""The JSON Schemas in ``schemas/`` (the contract), loaded and compiled once.

Every ``$ref``, local (``"#/definitions/x"``) or cross-file (``"score_envelope.schema.json"``), is
resolved at load time, so each compiled validator is self-contained and needs no URI resolution.
Validators come from fastjsonschema: the schema is compiled to Python code once, which makes
boundary validation cheap enough for the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from stream_app.config import REPO_ROOT
from stream_app.exceptions import SchemaError

Validator = Callable[[Any], Any]
ValidationError = fastjsonschema.JsonSchemaValueException

SCHEMA_NAMES = (
    "transaction",
    "label",
    "score_envelope",
    "shadow_score",
    "drift_record",
    "metrics_record",
    "dead_letter",
    "model_audit",
)


def schemas_dir() -> Path:
    """The directory holding the schemas: the repo's ``schemas/``, else the installed copy."""
    repo = REPO_ROOT / "schemas"
    if repo.is_dir():
        return repo
    installed = Path(str(resources.files("stream_app") / "_contract" / "schemas"))
    if installed.is_dir():
        return installed
    raise SchemaError(
        f"No schemas directory at {repo} or {installed}; reinstall stream_app or run from a clone."
    )


def _inline_refs(
    node: Any, root: dict[str, Any], directory: Path, seen: tuple[str, ...] = ()
) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in seen:
                raise SchemaError(f"Circular $ref {ref} in {directory}")
            if ref.startswith("#/"):
                target: Any = root
                for part in ref[2:].split("/"):
                    target = target[part]
                return _inline_refs(target, root, directory, (*seen, ref))
            other = _read(directory / ref)
            other = {k: v for k, v in other.items() if k not in ("$schema", "$id")}
            return _inline_refs(other, other, directory, (*seen, ref))
        return {k: _inline_refs(v, root, directory, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, root, directory, seen) for v in node]
    return node


def _read(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise SchemaError(f"Schema file {path} is missing.") from exc
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"Schema file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaError(f"Schema file {path} must hold a JSON object.")
    return data


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema ``schemas/<name>.schema.json`` with cross-file refs inlined."""
    directory = schemas_dir()
    schema = _read(directory / f"{name}.schema.json")
    return _inline_refs(schema, schema, directory)  # type: ignore[no-any-return]


@cache
def validator(name: str) -> Validator:
    """A compiled validator for one schema; raises ``ValidationError`` on invalid input."""
    try:
        return fastjsonschema.compile(load_schema(name))  # type: ignore[no-any-return]
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise SchemaError(f"Schema {name} does not compile: {exc}") from exc


@cache
def data_contract(name: str = "transaction") -> tuple[str, int]:
    """``($id, schema_version)`` of the input schema ``name``: the data contract a score
    envelope says its transaction was validated against. Read once per process."""
    schema = load_schema(name)
    version = schema.get("properties", {}).get("schema_version", {}).get("const")
    if not isinstance(schema.get("$id"), str) or not isinstance(version, int):
        raise SchemaError(
            f"schemas/{name}.schema.json needs an $id and a schema_version const to name the "
            "data contract in the score envelope; restore them from the repository."
        )
    return schema["$id"], version


def validate(name: str, obj: Any) -> None:
    """Validate ``obj`` against schema ``name`` (raises ``ValidationError``)."""
    validator(name)(obj)
