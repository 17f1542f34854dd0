"""Offline `bundle validate`: what the Databricks CLI would reject, without a workspace.

Two checks on top of loading: the merged configuration (databricks.yml + includes, before
resolution) against the CLI's own JSON schema, and every resolved resource parsed with the
`databricks-bundles` dataclasses (jobs, pipelines, schemas, volumes; other resource types are
checked against the schema's definition of that type). Errors name the file and the dotted key.
`bundle_json` gives the resolved bundle in the shape `databricks bundle validate -o json` prints.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import importlib
import json
import logging
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.validators
import regex
from jsonschema.exceptions import ValidationError

from mlops_laptop.bundle.loader import (
    BundleConfig,
    BundleError,
    PathKey,
    ResolvedBundle,
    ResourceId,
    dotted,
    read_config,
    resolve_bundle,
)

logger = logging.getLogger(__name__)

SCHEMA_ENV = "MLOPS_BUNDLE_SCHEMA"
# The Databricks CLI's bundle JSON schema (`databricks bundle schema`), vendored: `make schema` refreshes it.
SCHEMA_PATH = Path(__file__).with_name("bundle-jsonschema.json")
# Resource types parsed with databricks-bundles dataclasses: plural name -> (module, class).
DATACLASSES = {
    "jobs": ("databricks.bundles.jobs", "Job"),
    "pipelines": ("databricks.bundles.pipelines", "Pipeline"),
    "schemas": ("databricks.bundles.schemas", "Schema"),
    "volumes": ("databricks.bundles.volumes", "Volume"),
}
_TRUE_FALSE = frozenset({"true", "True", "TRUE", "false", "False", "FALSE"})
_INTEGER = re.compile(r"[-+]?\d+")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_VARIABLE = re.compile(r"\$\{[^{}]+\}")
# Rank of jsonschema errors at the same depth: the most telling first.
_VALIDATOR_RANK = {"additionalProperties": 0, "enum": 1, "const": 1, "required": 2, "type": 3, "pattern": 4}


def validate_bundle(
    root: Path, target: str | None = None, variables: Mapping[str, str] | None = None
) -> ResolvedBundle:
    """Load the bundle for `target` and check it as the CLI would; BundleError names the first problem."""
    config = read_config(root)
    validator = load_schema(find_schema())
    check_config(config, validator)
    bundle = resolve_bundle(config, target, variables)
    check_resources(bundle, validator)
    logger.debug("bundle %s is valid for target %s", bundle.name, bundle.target)
    return bundle


def bundle_json(bundle: ResolvedBundle) -> dict[str, Any]:
    """The resolved bundle in the shape `databricks bundle validate -o json` prints it
    (cmd/bundle/validate.go: the typed configuration after the initialize phase, without targets).

    Deploy-time ids stay as their `${resources...id}` reference, as the CLI shows them; paths inside
    resources are left as written (the CLI rewrites notebook and file paths to workspace paths).
    """
    document: dict[str, Any] = {
        "artifacts": {key: _artifact_json(bundle.root, spec) for key, spec in bundle.artifacts.items()},
        "bundle": bundle.bundle,
        "include": bundle.include,
        "permissions": bundle.permissions,
        "presets": bundle.presets,
        "resources": bundle.resources,
        "run_as": bundle.run_as,
        "sync": {"paths": ["."], **bundle.sync},
        "variables": bundle.declarations,
        "workspace": bundle.workspace,
    }
    return _json_ready({key: value for key, value in document.items() if value})


def _artifact_json(root: Path, spec: Mapping[str, Any]) -> dict[str, Any]:
    """An artifact with its `path` made absolute and, for a built wheel, the CLI's default
    `files` glob (`<path>/dist/*.whl`, bundle/artifacts/prepare.go)."""
    artifact = dict(spec)
    path = (root / str(artifact.get("path", "."))).resolve()
    artifact["path"] = str(path)
    if artifact.get("type") == "whl" and "files" not in artifact and artifact.get("build"):
        artifact["files"] = [{"source": str(path / "dist" / "*.whl")}]
    return artifact


def _json_ready(value: Any) -> Any:
    if isinstance(value, ResourceId):
        return value.reference
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def find_schema() -> Path:
    """The CLI's JSON schema: $MLOPS_BUNDLE_SCHEMA, else the one vendored beside this module."""
    configured = os.environ.get(SCHEMA_ENV)
    path = Path(configured).expanduser() if configured else SCHEMA_PATH
    if not path.is_file():
        origin = f"{SCHEMA_ENV} points to {path}" if configured else f"the bundle JSON schema {path}"
        raise BundleError(
            f"{origin} is not a file: restore it from git, or write it with `make schema` "
            "(`databricks bundle schema`)"
        )
    return path


# ----------------------------------------------------------------------------------------------
# JSON schema


@functools.cache
def load_schema(path: Path) -> jsonschema.protocols.Validator:
    """A validator for the CLI's schema; patterns run on the `regex` module, which knows `\\p{L}`.

    Scalars are checked the way the CLI normalizes them: "5" is an integer, "true" a boolean, 5 a string.
    """
    schema = json.loads(path.read_text(encoding="utf-8"))
    logger.debug("loaded bundle JSON schema %s", path)
    return _Validator(schema)


def _is_integer(checker: Any, instance: Any) -> bool:
    base = jsonschema.Draft202012Validator.TYPE_CHECKER
    return base.is_type(instance, "integer") or (
        isinstance(instance, str) and bool(_INTEGER.fullmatch(instance))
    )


def _is_number(checker: Any, instance: Any) -> bool:
    base = jsonschema.Draft202012Validator.TYPE_CHECKER
    return base.is_type(instance, "number") or (
        isinstance(instance, str) and bool(_NUMBER.fullmatch(instance))
    )


def _is_boolean(checker: Any, instance: Any) -> bool:
    return isinstance(instance, bool) or instance in _TRUE_FALSE


def _is_string(checker: Any, instance: Any) -> bool:
    return isinstance(instance, str | int | float)  # the CLI turns numbers and booleans into strings


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not isinstance(instance, str):
        yield ValidationError(f"{instance!r} is not a string matching {pattern!r}")
    elif not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _compiled(pattern: str) -> regex.Pattern[str]:
    """The schema's patterns are RE2 / ECMA-262 with Unicode classes (`\\p{L}`), which `re` lacks."""
    return regex.compile(pattern)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"pattern": _pattern},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number, "boolean": _is_boolean, "string": _is_string}
    ),
)


def check_config(config: BundleConfig, validator: jsonschema.protocols.Validator) -> None:
    """Check the merged, unresolved configuration against the CLI's JSON schema."""
    check_against_schema(validator, config.data, config.locate)


def check_against_schema(
    validator: jsonschema.protocols.Validator,
    instance: Mapping[str, Any],
    locate: typing.Callable[[PathKey], Path | None],
) -> None:
    """Raise BundleError for the first schema violation in `instance` (in key order), naming file and key."""
    problems = sorted({problem for error in validator.iter_errors(instance) for problem in _problems(error)})
    for _, _, path, message in problems[1:]:
        logger.error("%s: %s: %s", locate(path), dotted(path), message)
    if problems:
        _, _, path, message = problems[0]
        raise BundleError(message, file=locate(path), key=dotted(path))


_Problem = tuple[tuple[tuple[int, int, str], ...], int, PathKey, str]  # (order, rank, path, message)


def _problems(error: ValidationError) -> Iterator[_Problem]:
    """Each failure under `error`, following the oneOf / anyOf branch that fits, in a reporting order."""
    for leaf in _leaves(error):
        path = tuple(leaf.absolute_path)
        order, rank = _sort_key(path), _VALIDATOR_RANK.get(str(leaf.validator), 9)
        if leaf.validator == "additionalProperties" and isinstance(leaf.instance, dict):
            allowed = list(leaf.schema.get("properties", {}))
            for key in leaf.instance:
                if key not in allowed:
                    yield order, rank, (*path, key), _unknown_key(str(key), allowed)
        elif leaf.validator == "enum":
            yield (
                order,
                rank,
                path,
                f"{leaf.instance!r} is not one of {', '.join(map(str, leaf.validator_value))}",
            )
        elif leaf.validator == "type":
            yield order, rank, path, f"expected {leaf.validator_value}, got {leaf.instance!r}"
        else:
            yield order, rank, path, leaf.message


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    if not error.context:
        yield error
        return
    branches: dict[Any, list[ValidationError]] = {}
    for child in error.context:
        branches.setdefault(child.relative_schema_path[0], []).append(child)
    best = min(branches.values(), key=_branch_rank)
    for child in best:
        yield from _leaves(child)


def _branch_rank(errors: list[ValidationError]) -> tuple[int, int]:
    """The branch a value was meant for failed deepest, or with the most telling error."""
    deepest = max(len(e.absolute_path) for e in errors)
    return -deepest, min(_VALIDATOR_RANK.get(str(e.validator), 9) for e in errors)


def _sort_key(path: PathKey) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, part, "") if isinstance(part, int) else (1, 0, str(part)) for part in path)


def _unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(sorted(allowed))}"
    return f"unknown key '{key}' ({hint})"


# ----------------------------------------------------------------------------------------------
# Resolved resources


def check_resources(bundle: ResolvedBundle, validator: jsonschema.protocols.Validator) -> None:
    """Parse every resolved resource with its dataclass, or check it against the schema's definition."""
    schema_types = _schema_resource_types(validator)
    for kind, items in bundle.resources.items():
        cls = dataclass_for(kind)
        for key, resource in items.items():
            name = f"resources.{kind}.{key}"
            file = bundle.sources.get(name)
            if cls is not None:
                check_dataclass(cls, resource, ("resources", kind, key), file)
            elif kind in schema_types:
                check_against_schema(validator, {"resources": {kind: {key: resource}}}, lambda _p, f=file: f)
            else:
                raise BundleError(f"unknown resource type '{kind}'", file=file, key=f"resources.{kind}")


def _schema_resource_types(validator: jsonschema.protocols.Validator) -> set[str]:
    node: Any = validator.schema
    for part in validator.schema["properties"]["resources"]["$ref"].removeprefix("#/").split("/"):
        node = node[part]
    return {kind for branch in node.get("oneOf", [node]) for kind in branch.get("properties", {})}


def dataclass_for(kind: str) -> type | None:
    """The databricks-bundles dataclass of a resource type, if the installed version has one."""
    if kind not in DATACLASSES:
        return None
    module, name = DATACLASSES[kind]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        logger.warning(
            "databricks-bundles has no %s.%s: %s are checked by the JSON schema", module, name, kind
        )
        return None


class _Mismatch(Exception):
    def __init__(self, path: PathKey, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def check_dataclass(cls: type, value: Mapping[str, Any], path: PathKey, file: Path | None) -> None:
    """Check `value` field by field against dataclass `cls`, then parse it with `cls.from_dict`."""
    try:
        _check_type(cls, value, path)
    except _Mismatch as problem:
        raise BundleError(problem.message, file=file, key=dotted(problem.path)) from None
    try:
        cls.from_dict(_with_placeholder_ids(value))  # type: ignore[attr-defined]
    except (ValueError, TypeError, KeyError) as error:
        raise BundleError(
            f"{cls.__name__}.from_dict rejects it: {error}", file=file, key=dotted(path)
        ) from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_type(tp: Any, value: Any, path: PathKey) -> None:
    origin = typing.get_origin(tp)
    if tp is Any:
        return
    if origin in (typing.Union, types.UnionType):
        _check_union(tp, value, path)
    elif origin is list:
        if not isinstance(value, list):
            raise _Mismatch(path, f"expected a list, got {value!r}")
        for index, item in enumerate(value):
            _check_type(typing.get_args(tp)[0], item, (*path, index))
    elif origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(path, f"expected a mapping, got {value!r}")
        for key, item in value.items():
            _check_type(typing.get_args(tp)[1], item, (*path, key))
    elif dataclasses.is_dataclass(tp):
        _check_fields(tp, value, path)
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [str(member.value) for member in tp]
        if str(value) not in allowed:
            raise _Mismatch(path, f"{value!r} is not one of {', '.join(allowed)}")
    else:
        _check_scalar(tp, value, path)


def _check_union(tp: Any, value: Any, path: PathKey) -> None:
    arguments = typing.get_args(tp)
    if any(_is_variable(a) for a in arguments) and isinstance(value, str) and _VARIABLE.fullmatch(value):
        return
    if value is None:
        if type(None) in arguments or any(typing.get_origin(a) in (list, dict) for a in arguments):
            return
        raise _Mismatch(path, "a value is required, got null")
    concrete = [a for a in arguments if not _is_variable(a) and a is not type(None)]
    if not concrete:
        return
    problems: list[_Mismatch] = []
    for argument in concrete:
        try:
            _check_type(argument, value, path)
            return
        except _Mismatch as problem:
            problems.append(problem)
    raise max(problems, key=lambda p: len(p.path))


def _is_variable(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return getattr(origin, "__name__", "") == "Variable"


def _check_fields(cls: type, value: Any, path: PathKey) -> None:
    if not isinstance(value, dict):
        raise _Mismatch(path, f"expected a mapping ({cls.__name__}), got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            raise _Mismatch((*path, key), _unknown_key(str(key), list(fields)))
    for name, spec in fields.items():
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        if required and name not in value:
            raise _Mismatch((*path, name), f"missing required key '{name}' of {cls.__name__}")
    hints = _hints(cls)
    for key, item in value.items():
        _check_type(hints[key], item, (*path, key))


def _with_placeholder_ids(value: Any) -> Any:
    """A JSON copy of `value` with each deploy-time resource id as a placeholder number."""
    if isinstance(value, ResourceId):
        return 0
    if isinstance(value, dict):
        return {key: _with_placeholder_ids(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_placeholder_ids(item) for item in value]
    return json.loads(json.dumps(value, default=str))


def _check_scalar(tp: Any, value: Any, path: PathKey) -> None:
    ok = {
        str: lambda v: isinstance(v, str | int | float),
        bool: lambda v: isinstance(v, bool) or v in _TRUE_FALSE,
        int: lambda v: (
            (isinstance(v, int) and not isinstance(v, bool))
            or (isinstance(v, str) and _INTEGER.fullmatch(v))
            or isinstance(v, ResourceId)  # a deployed id, known only at deploy time
        ),
        float: lambda v: (
            (isinstance(v, int | float) and not isinstance(v, bool))
            or (isinstance(v, str) and _NUMBER.fullmatch(v))
        ),
    }
    check = ok.get(tp)
    if check is None:
        logger.debug("no offline check for %s at %s", tp, dotted(path))
    elif not check(value):
        raise _Mismatch(path, f"expected {tp.__name__}, got {value!r}")
