"""Load `databricks.yml` and its includes, select a target and resolve it, as the Databricks CLI does.

What is read: `include` globs; `variables` (default, description, type `complex`, lookup) with
per-target overrides, `--var`-style overrides, `BUNDLE_VAR_<name>` environment variables and
`.databricks/bundle/<target>/variable-overrides.json`; `targets` (`default`, `mode`, `bundle`,
`workspace`, `presets`, `resources`, `variables`, `run_as`, `permissions`, `sync`, `artifacts`);
`${...}` references to `var`, `bundle`, `workspace` and `resources`; development mode's name
prefix and paused triggers (the CLI's presets); `run_as` and top-level `permissions` applied to
jobs with the CLI's checks. Runtime references such as `{{job.parameters.x}}` are left alone.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlops_template.platform import current_user_name

logger = logging.getLogger(__name__)

CONFIG_FILE_NAMES = ("databricks.yml", "databricks.yaml")
TOP_LEVEL_KEYS = frozenset(
    {
        "artifacts", "bundle", "environments", "experimental", "include", "permissions", "presets",
        "python", "resources", "run_as", "scripts", "sync", "targets", "variables", "workspace",
    }
)  # fmt: skip
TARGET_KEYS = frozenset(
    {
        "artifacts", "bundle", "cluster_id", "compute_id", "default", "git", "mode", "permissions",
        "presets", "resources", "run_as", "sync", "variables", "workspace",
    }
)  # fmt: skip
VARIABLE_KEYS = frozenset({"default", "description", "lookup", "type"})
WORKSPACE_KEYS = frozenset(
    {
        "account_id", "artifact_path", "auth_type", "azure_client_id", "azure_environment",
        "azure_login_app_id", "azure_tenant_id", "azure_use_msi", "azure_workspace_resource_id",
        "client_id", "experimental_is_unified_host", "file_path", "google_service_account", "host",
        "profile", "resource_path", "root_path", "state_path", "workspace_id",
    }
)  # fmt: skip
MODES = ("development", "production")
# Lists the CLI merges element by element (by this key) when a target overrides a resource.
KEYED_LISTS = {
    ("jobs", "tasks"): "task_key",
    ("jobs", "job_clusters"): "job_cluster_key",
    ("jobs", "parameters"): "name",
    ("pipelines", "clusters"): "label",
}
# Workspace paths derived from root_path unless configured (the CLI's defaults).
WORKSPACE_PATH_DEFAULTS = {
    "file_path": "${workspace.root_path}/files",
    "artifact_path": "${workspace.root_path}/artifacts",
    "state_path": "${workspace.root_path}/state",
    "resource_path": "${workspace.root_path}/resources",
}
DEFAULT_ROOT_PATH = (
    "/Workspace/Users/${workspace.current_user.userName}/.bundle/${bundle.name}/${bundle.target}"
)
RESOLVABLE_ROOTS = frozenset({"var", "variables", "bundle", "workspace", "resources", "artifacts"})
# Top-level `permissions` levels and what each becomes on a job
# (bundle/config/mutator/resourcemutator/apply_bundle_permissions.go).
BUNDLE_PERMISSION_LEVELS = {"CAN_MANAGE": "CAN_MANAGE", "CAN_VIEW": "CAN_VIEW", "CAN_RUN": "CAN_MANAGE_RUN"}
PRINCIPAL_KEYS = ("user_name", "group_name", "service_principal_name")
# Resource types the API cannot create with a run_as identity other than the deploying one
# (bundle/config/mutator/resourcemutator/run_as.go).
RUN_AS_UNSUPPORTED = ("model_serving_endpoints", "quality_monitors", "apps")

# The CLI's reference grammar (libs/dyn/dynvar/ref.go); a leading "$" escapes the reference.
# Written without nested quantifiers (Python's re backtracks; the CLI's RE2 does not).
_SEGMENT = r"_*[^\W\d_][^\W_]*(?:[-_]+[^\W_]+)*"
_REFERENCE = re.compile(rf"(\$?)\$\{{({_SEGMENT}(?:\.{_SEGMENT}(?:\[[0-9]+\])*)*(?:\[[0-9]+\])*)\}}")
REFERENCE_PATTERN = _REFERENCE  # groups: 1 the escaping "$", 2 the reference inside ${...}
_PATH_TOKEN = re.compile(r"[^.\[\]]+|\[(\d+)\]")

PathKey = tuple[str | int, ...]


class BundleError(Exception):
    """Bad bundle configuration; str() reads "FILE: KEY: message"."""

    def __init__(self, message: str, *, file: Path | None = None, key: str | None = None) -> None:
        self.message = message
        self.file = file
        self.key = key
        super().__init__(": ".join(str(part) for part in (file, key, message) if part is not None))


@dataclass(frozen=True)
class ResolvedBundle:
    """One target of the bundle with every `${...}` resolved: plain dicts, as the CLI would deploy them."""

    root: Path
    name: str
    target: str
    mode: str | None
    variables: dict[str, Any]
    resources: dict[str, dict[str, dict[str, Any]]]
    sources: dict[str, Path]
    workspace: dict[str, Any] = field(default_factory=dict)
    bundle: dict[str, Any] = field(default_factory=dict)  # the resolved `bundle` section
    declarations: dict[str, dict[str, Any]] = field(default_factory=dict)  # description, default per variable
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    presets: dict[str, Any] = field(default_factory=dict)
    run_as: dict[str, Any] | None = None
    permissions: list[dict[str, Any]] = field(default_factory=list)
    sync: dict[str, Any] = field(default_factory=dict)
    include: list[str] = field(default_factory=list)

    def job(self, key: str) -> dict[str, Any]:
        """The resolved job `key`."""
        jobs = self.resources.get("jobs", {})
        if key not in jobs:
            raise BundleError(
                f"unknown job '{key}': target {self.target} defines {sorted(jobs) or 'no jobs'}",
                key=f"resources.jobs.{key}",
            )
        return jobs[key]


def dotted(path: PathKey) -> str:
    """("resources", "jobs", "a", "tasks", 0) -> "resources.jobs.a.tasks[0]"."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text and ("." in part or " " in part):
            text += f'["{part}"]'
        else:
            text += f".{part}" if text else part
    return text


def find_bundle_root(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` (default: the working directory) holding databricks.yml."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if any((directory / name).is_file() for name in CONFIG_FILE_NAMES):
            return directory
    raise BundleError(f"no {CONFIG_FILE_NAMES[0]} found in {here} or any parent directory")


class ResourceId(str):
    """`${resources.<type>.<key>.id}` resolved offline: the resource key, standing for the id
    Databricks assigns at deploy time (so the local runner can find the job it names)."""

    reference: str  # the reference as written, which `bundle validate -o json` shows unresolved

    def __new__(cls, key: str, reference: str = "") -> ResourceId:
        value = super().__new__(cls, key)
        value.reference = reference or key
        return value


def current_user() -> tuple[str, str]:
    """`${workspace.current_user.userName}` and `.short_name` (the login name off Databricks)."""
    user_name = current_user_name()
    return user_name, short_name_of(user_name) or "user"


def short_name_of(user_name: str) -> str:
    """The CLI's short name: the part before '@', lower case, every run of characters other than
    letters and digits as one '_', no leading or trailing '_' (libs/iamutil/user.go, libs/textutil)."""
    local = user_name.split("@", 1)[0].lower()
    return re.sub(r"[\W_]+", "_", local).strip("_")


# ----------------------------------------------------------------------------------------------
# Reading: YAML files, includes, merged (unresolved) configuration


class _StrictLoader(yaml.SafeLoader):
    """YAML as the CLI reads it: only true/false are booleans, no timestamps, no duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class BundleConfig:
    """databricks.yml merged with its includes, before target selection and resolution."""

    root: Path
    main_file: Path  # relative to root, like every path here
    data: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    resource_files: dict[str, Path] = field(default_factory=dict)  # "resources.jobs.x" -> file
    _owners: dict[PathKey, Path] = field(default_factory=dict)

    def locate(self, path: PathKey) -> Path:
        """The file that defined `path` (or its nearest defined parent)."""
        for end in range(len(path), 0, -1):
            if path[:end] in self._owners:
                return self._owners[path[:end]]
        return self.main_file

    def record(self, document: Mapping[str, Any], file: Path, prefix: PathKey = (), depth: int = 6) -> None:
        """Remember which file first defined each mapping key (to `depth` levels)."""
        for key, value in document.items():
            path = (*prefix, key)
            self._owners.setdefault(path, file)
            if isinstance(value, Mapping) and depth > 1:
                self.record(value, file, path, depth - 1)


def read_config(root: Path) -> BundleConfig:
    """Read databricks.yml and every file its `include` globs match, merged like the CLI."""
    root = root.resolve()
    main = next((Path(n) for n in CONFIG_FILE_NAMES if (root / n).is_file()), None)
    if main is None:
        raise BundleError(f"no {CONFIG_FILE_NAMES[0]} in {root}")
    config = BundleConfig(root=root, main_file=main)
    document = _read_yaml(root, main)
    includes = _included_files(root, main, document.get("include"))
    _add_document(config, document, main)
    for file in includes:
        included = _read_yaml(root, file)
        if "include" in included:
            raise BundleError(
                "'include' is only allowed in the root configuration file", file=file, key="include"
            )
        _add_document(config, included, file)
    logger.debug("bundle config read from %s", [str(f) for f in config.files])
    return config


def _read_yaml(root: Path, file: Path) -> dict[str, Any]:
    try:
        data = yaml.load((root / file).read_text(encoding="utf-8"), Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise BundleError(f"invalid YAML: {where}{error.problem or error.context}", file=file) from None
    except (OSError, yaml.YAMLError) as error:
        raise BundleError(f"cannot read: {error}", file=file) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BundleError(f"expected a mapping at the top level, got {type(data).__name__}", file=file)
    return data


def _included_files(root: Path, main: Path, patterns: Any) -> list[Path]:
    if patterns is None:
        return []
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise BundleError("expected a list of glob patterns", file=main, key="include")
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(p.relative_to(root) for p in root.glob(pattern) if p.is_file())
        if not matches:
            if not any(ch in pattern for ch in "*?["):
                raise BundleError(f"included file '{pattern}' does not exist", file=main, key="include")
            logger.warning("include pattern '%s' matches no file", pattern)
        files += [m for m in matches if m != main and m not in files]
    return files


def _add_document(config: BundleConfig, document: dict[str, Any], file: Path) -> None:
    check_keys(document, TOP_LEVEL_KEYS, file, ())
    check_keys(document.get("workspace"), WORKSPACE_KEYS, file, ("workspace",))
    _check_resources_shape(document.get("resources"), file, ("resources",))
    for type_name, items in (document.get("resources") or {}).items():
        for key in items or {}:
            name = f"resources.{type_name}.{key}"
            other = next((n for n in config.resource_files if n.split(".", 2)[2] == str(key)), None)
            if other is not None:
                raise BundleError(
                    f"resource key '{key}' is defined twice: {other} in {config.resource_files[other]} "
                    f"and {name} in {file}",
                    file=file,
                    key=name,
                )
            config.resource_files[name] = file
    config.record(document, file)
    config.files.append(file)
    config.data = merge(config.data, document, (), file)


def check_keys(mapping: Any, allowed: frozenset[str], file: Path | None, path: PathKey) -> None:
    """BundleError naming the first key of `mapping` not in `allowed` (with the closest allowed one)."""
    if not isinstance(mapping, dict):
        if mapping is not None and not (isinstance(mapping, str) and _REFERENCE.fullmatch(mapping)):
            raise BundleError(f"expected a mapping, got {_kind(mapping)}", file=file, key=dotted(path))
        return
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(sorted(allowed))}"
            raise BundleError(f"unknown key '{key}' ({hint})", file=file, key=dotted((*path, key)))


def _check_resources_shape(resources: Any, file: Path, path: PathKey) -> None:
    if resources is None:
        return
    if not isinstance(resources, dict):
        raise BundleError("expected a mapping of resource types", file=file, key=dotted(path))
    for type_name, items in resources.items():
        if items is None:
            continue
        if not isinstance(items, dict):
            raise BundleError(
                "expected a mapping of resource keys", file=file, key=dotted((*path, type_name))
            )
        for key, value in items.items():
            if not isinstance(value, dict):
                raise BundleError(
                    f"expected a mapping, got {_kind(value)}", file=file, key=dotted((*path, type_name, key))
                )


def merge(base: Any, override: Any, path: PathKey, file: Path | None = None) -> Any:
    """The CLI's merge: mappings merge, lists concatenate (keyed lists merge by key), scalars override."""
    if base is None:
        return override
    if override is None:
        return base
    if isinstance(base, dict) or isinstance(override, dict):
        if not (isinstance(base, dict) and isinstance(override, dict)):
            raise BundleError(
                f"cannot merge {_kind(base)} with {_kind(override)}", file=file, key=dotted(path)
            )
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(merged.get(key), value, (*path, key), file)
        return merged
    if isinstance(base, list) or isinstance(override, list):
        if not (isinstance(base, list) and isinstance(override, list)):
            raise BundleError(
                f"cannot merge {_kind(base)} with {_kind(override)}", file=file, key=dotted(path)
            )
        key_name = _list_key(path)
        return _merge_by_key(base, override, key_name, path, file) if key_name else [*base, *override]
    return override


def _list_key(path: PathKey) -> str | None:
    if len(path) >= 4 and path[-4] == "resources":
        return KEYED_LISTS.get((str(path[-3]), str(path[-1])))
    return None


def _merge_by_key(
    base: list[Any], override: list[Any], key_name: str, path: PathKey, file: Path | None
) -> list[Any]:
    merged = list(base)
    for item in override:
        key = item.get(key_name) if isinstance(item, dict) else None
        index = next(
            (
                i
                for i, old in enumerate(merged)
                if key is not None and isinstance(old, dict) and old.get(key_name) == key
            ),
            None,
        )
        if index is None:
            merged.append(item)
        else:
            merged[index] = merge(merged[index], item, (*path, index), file)
    return merged


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else f"a {type(value).__name__} ({value!r})"


# ----------------------------------------------------------------------------------------------
# Targets and variables


@dataclass(frozen=True)
class _Value:
    """A variable's chosen value and where it came from (for error messages)."""

    value: Any
    file: Path | None
    key: str


def load_bundle(
    root: Path,
    target: str | None = None,
    variables: Mapping[str, str] | None = None,
    *,
    user_name: str | None = None,
) -> ResolvedBundle:
    """Read, merge and resolve the bundle at `root` for `target` (None: the default target).

    `user_name`: the workspace user to resolve `${workspace.current_user.*}` for (default: `current_user()`).
    """
    return resolve_bundle(read_config(root), target, variables, user_name=user_name)


def resolve_bundle(
    config: BundleConfig,
    target: str | None = None,
    variables: Mapping[str, str] | None = None,
    *,
    user_name: str | None = None,
) -> ResolvedBundle:
    """Select `target` of an already read configuration and resolve every reference."""
    name, definition = select_target(config, target)
    data = config.data
    mode = definition.get("mode")
    if mode is not None and mode not in MODES:
        raise BundleError(
            f"mode '{mode}' is not one of {', '.join(MODES)}",
            file=config.locate(("targets", name, "mode")),
            key=f"targets.{name}.mode",
        )
    values = variable_values(config, name, definition, variables or {})
    sections = {
        section: merge(
            data.get(section), definition.get(section), (section,), config.locate(("targets", name))
        )
        for section in ("bundle", "workspace", "presets", "artifacts", "resources", "permissions", "sync")
    }
    run_as = definition.get("run_as", data.get("run_as"))
    sources = _resource_sources(config, name, sections["resources"] or {})
    if not isinstance((sections["bundle"] or {}).get("name"), str):
        raise BundleError("the bundle needs a name", file=config.main_file, key="bundle.name")
    tree = _reference_tree(sections, values, name, user_name)
    resolver = _Resolver(tree, _origin_finder(config, name, definition, values, sources))
    resolved_values = {var: resolver.reference(f"var.{var}", ("var", var)) for var in values}
    bundle = resolver.resolve(tree["bundle"], ("bundle",))
    workspace = resolver.resolve(tree["workspace"], ("workspace",))
    presets = _presets(resolver.resolve(tree["presets"], ("presets",)), mode, workspace)
    _apply_presets(tree["resources"], presets)
    resolved_resources = resolver.resolve(tree["resources"], ("resources",))
    resources = {kind: dict(items) for kind, items in resolved_resources.items()}
    origin = _origin_finder(config, name, definition, values, sources)
    identity = _run_as(resolver.resolve(run_as, ("run_as",)), workspace, resources, origin)
    permissions = _permissions(resolver.resolve(sections["permissions"] or [], ("permissions",)), origin)
    _apply_identity(resources, identity, permissions)
    logger.debug("resolved bundle %s for target %s", bundle["name"], name)
    return ResolvedBundle(
        root=config.root,
        name=bundle["name"],
        target=name,
        mode=mode,
        variables=resolved_values,
        resources=resources,
        sources=sources,
        workspace=workspace,
        bundle={**bundle, **({"mode": mode} if mode else {})},
        declarations=_declarations(config, definition, values, resolved_values, resolver),
        artifacts=resolver.resolve(tree["artifacts"], ("artifacts",)),
        presets=presets,
        run_as=identity,
        permissions=permissions,
        sync=dict(sections["sync"] or {}),
        include=[str(file) for file in config.files if file != config.main_file],
    )


def _declarations(
    config: BundleConfig,
    definition: Mapping[str, Any],
    values: Mapping[str, _Value],
    resolved: Mapping[str, Any],
    resolver: _Resolver,
) -> dict[str, dict[str, Any]]:
    """Each variable as `bundle validate -o json` shows it: description, default (a target's value
    replaces the declared one), value."""
    declared = config.data.get("variables") or {}
    in_target = definition.get("variables") or {}
    shown: dict[str, dict[str, Any]] = {}
    for var, chosen in values.items():
        spec = {key: declared[var][key] for key in ("description", "type", "lookup") if key in declared[var]}
        default = declared[var].get("default")
        if in_target.get(var) is not None:
            default = _target_variable(in_target[var], declared[var].get("type") == "complex")[0]
        if chosen.key.endswith(".default") or chosen.key.startswith("targets."):
            spec["default"] = resolved[var]
        elif default is not None:
            spec["default"] = resolver.resolve(default, ("variables", var, "default"))
        shown[var] = {**spec, "value": resolved[var]}
    return shown


def _run_as(
    run_as: Any,
    workspace: Mapping[str, Any],
    resources: Mapping[str, Mapping[str, Any]],
    origin: Callable[[PathKey], tuple[Path | None, str]],
) -> dict[str, Any] | None:
    """The `run_as` identity, checked as the CLI checks it (resourcemutator/run_as.go)."""
    if run_as is None:
        return None
    file, key = origin(("run_as",))
    if not isinstance(run_as, dict):
        raise BundleError(f"expected a mapping, got {_kind(run_as)}", file=file, key=key)
    check_keys(run_as, frozenset({"service_principal_name", "user_name"}), file, ("run_as",))
    given = {k: v for k, v in run_as.items() if v not in (None, "")}
    if not given:
        raise BundleError(
            "run_as section must specify exactly one identity. Neither service_principal_name nor "
            "user_name is specified",
            file=file,
            key=key,
        )
    if len(given) > 1:
        raise BundleError(
            "run_as section cannot specify both user_name and service_principal_name", file=file, key=key
        )
    identity, me = str(next(iter(given.values()))), workspace["current_user"]["userName"]
    for kind in RUN_AS_UNSUPPORTED:
        if resources.get(kind) and identity != me:
            raise BundleError(
                f"{kind} do not support a setting a run_as user that is different from the owner. "
                f"Current identity: {me}. Run as identity: {identity}. Deploy as {identity} "
                "(e.g. with its OAuth credentials in CI).",
                file=file,
                key=key,
            )
    return given


def _permissions(
    permissions: Any, origin: Callable[[PathKey], tuple[Path | None, str]]
) -> list[dict[str, Any]]:
    """Top-level `permissions`: levels CAN_MANAGE / CAN_VIEW / CAN_RUN, one principal each."""
    if not isinstance(permissions, list):
        file, key = origin(("permissions",))
        raise BundleError(f"expected a list, got {_kind(permissions)}", file=file, key=key)
    for index, permission in enumerate(permissions):
        file, key = origin(("permissions", index))
        if not isinstance(permission, dict):
            raise BundleError(f"expected a mapping, got {_kind(permission)}", file=file, key=key)
        check_keys(permission, frozenset({"level", *PRINCIPAL_KEYS}), file, ("permissions", index))
        if permission.get("level") not in BUNDLE_PERMISSION_LEVELS:
            raise BundleError(
                f"invalid permission level: {permission.get('level')}, allowed values: "
                f"[{', '.join(BUNDLE_PERMISSION_LEVELS)}]",
                file=file,
                key=key,
            )
        principals = [k for k in PRINCIPAL_KEYS if permission.get(k) not in (None, "")]
        if len(principals) != 1:
            raise BundleError(
                f"a permission needs exactly one of {', '.join(PRINCIPAL_KEYS)}, got {principals or 'none'}",
                file=file,
                key=key,
            )
    return [dict(p) for p in permissions]


def _apply_identity(
    resources: dict[str, dict[str, Any]], run_as: dict[str, Any] | None, permissions: list[dict[str, Any]]
) -> None:
    """The CLI's SetRunAs and ApplyBundlePermissions for jobs: run_as where a job sets none, and each
    top-level permission at the job's level unless the job already names that principal."""
    for key, job in resources.get("jobs", {}).items():
        job = dict(job)
        if run_as and not job.get("run_as"):
            job["run_as"] = dict(run_as)
        own = list(job.get("permissions") or [])
        added = [
            {**{k: p[k] for k in PRINCIPAL_KEYS if p.get(k)}, "level": BUNDLE_PERMISSION_LEVELS[p["level"]]}
            for p in permissions
            if not any(o.get(k) and o.get(k) == p.get(k) for o in own for k in PRINCIPAL_KEYS)
        ]
        if own or added:
            job["permissions"] = own + added
        resources["jobs"][key] = job


def select_target(config: BundleConfig, target: str | None) -> tuple[str, dict[str, Any]]:
    """The chosen target's name and definition; None picks the one marked `default: true`."""
    targets = config.data.get("targets") or {}
    if not isinstance(targets, dict):
        raise BundleError("expected a mapping of targets", file=config.locate(("targets",)), key="targets")
    if not targets:
        if target not in (None, "default"):
            raise BundleError(
                f"unknown target '{target}': the bundle defines no targets", file=config.main_file
            )
        return "default", {}
    if target is None:
        target = _default_target(config, targets)
    if target not in targets:
        raise BundleError(
            f"unknown target '{target}': the bundle defines {', '.join(sorted(targets))}",
            file=config.locate(("targets",)),
            key="targets",
        )
    definition = targets[target] or {}
    file = config.locate(("targets", target))
    if not isinstance(definition, dict):
        raise BundleError(f"expected a mapping, got {_kind(definition)}", file=file, key=f"targets.{target}")
    check_keys(definition, TARGET_KEYS, file, ("targets", target))
    check_keys(definition.get("workspace"), WORKSPACE_KEYS, file, ("targets", target, "workspace"))
    _check_resources_shape(definition.get("resources"), file, ("targets", target, "resources"))
    return target, definition


def _default_target(config: BundleConfig, targets: dict[str, Any]) -> str:
    defaults = [
        name for name, body in targets.items() if isinstance(body, dict) and body.get("default") is True
    ]
    if len(defaults) > 1:
        raise BundleError(
            f"targets {', '.join(defaults)} are all marked default: true", file=config.locate(("targets",))
        )
    if defaults:
        return defaults[0]
    if len(targets) == 1:
        return next(iter(targets))
    raise BundleError(
        f"no target is marked default: true; choose one of {', '.join(sorted(targets))}",
        file=config.locate(("targets",)),
        key="targets",
    )


@dataclass(frozen=True)
class _Assignments:
    """Values given to variables outside their declarations."""

    target: str
    cli: Mapping[str, str]
    target_values: Mapping[str, Any]
    overrides_file: Path
    file_values: Mapping[str, Any]


def variable_values(
    config: BundleConfig, target: str, definition: Mapping[str, Any], overrides: Mapping[str, str]
) -> dict[str, _Value]:
    """Each declared variable's value, by the CLI's precedence.

    --var, then BUNDLE_VAR_<name>, then .databricks/bundle/<target>/variable-overrides.json, then the
    target's value, then the default.
    """
    declared = _declared_variables(config)
    given = _Assignments(
        target, overrides, definition.get("variables") or {}, *_overrides_file(config.root, target)
    )
    for source, names, file, prefix in (
        ("--var", given.cli, None, "--var "),
        ("target", given.target_values, config.locate(("targets", target)), f"targets.{target}.variables."),
        ("overrides file", given.file_values, given.overrides_file, ""),
    ):
        for var in names:
            if var not in declared:
                raise BundleError(
                    f"variable '{var}' is given a value ({source}) but not declared in 'variables'",
                    file=file,
                    key=f"{prefix}{var}",
                )
    return {var: _choose_value(config, var, spec, given) for var, spec in declared.items()}


def _declared_variables(config: BundleConfig) -> dict[str, dict[str, Any]]:
    declared = config.data.get("variables") or {}
    if not isinstance(declared, dict):
        raise BundleError(
            "expected a mapping of variables", file=config.locate(("variables",)), key="variables"
        )
    for var, spec in declared.items():
        file = config.locate(("variables", var))
        if not isinstance(spec, dict):
            raise BundleError(
                f"expected a mapping with 'default' and 'description', got {_kind(spec)}",
                file=file,
                key=f"variables.{var}",
            )
        check_keys(spec, VARIABLE_KEYS, file, ("variables", var))
        if spec.get("type") not in (None, "complex"):
            raise BundleError("the only variable type is 'complex'", file=file, key=f"variables.{var}.type")
    return {str(var): spec or {} for var, spec in declared.items()}


def _overrides_file(root: Path, target: str) -> tuple[Path, dict[str, Any]]:
    file = Path(".databricks", "bundle", target, "variable-overrides.json")
    if not (root / file).is_file():
        return file, {}
    try:
        values = json.loads((root / file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BundleError(f"cannot read variable overrides: {error}", file=file) from None
    if not isinstance(values, dict):
        raise BundleError("expected a JSON object of variable values", file=file)
    return file, values


def _choose_value(config: BundleConfig, var: str, spec: Mapping[str, Any], given: _Assignments) -> _Value:
    complex_type = spec.get("type") == "complex"
    env_name = f"BUNDLE_VAR_{var}"
    if var in given.cli or env_name in os.environ:
        value, key = (
            (given.cli[var], f"--var {var}") if var in given.cli else (os.environ[env_name], env_name)
        )
        if complex_type:
            raise BundleError("a complex variable cannot be set on the command line or environment", key=key)
        return _Value(value, None, key)
    if var in given.file_values:
        return _checked(_Value(given.file_values[var], given.overrides_file, var), complex_type)
    default, lookup = spec.get("default"), spec.get("lookup")
    file, default_key, lookup_key = (
        config.locate(("variables", var)),
        f"variables.{var}.default",
        f"variables.{var}.lookup",
    )
    if given.target_values.get(var) is not None:
        default, lookup = _target_variable(given.target_values[var], complex_type)
        file = config.locate(("targets", given.target, "variables", var))
        default_key = lookup_key = f"targets.{given.target}.variables.{var}"
    if default is not None:
        return _checked(_Value(default, file, default_key), complex_type)
    if lookup is not None:
        raise BundleError(
            f"variable '{var}' is a lookup ({lookup}), which needs a workspace: give it a value offline "
            f"with --var {var}=VALUE or {env_name}",
            file=file,
            key=lookup_key,
        )
    raise BundleError(
        f"no value for variable '{var}': give it a default, a target value, --var {var}=VALUE or {env_name}",
        file=config.locate(("variables", var)),
        key=f"variables.{var}",
    )


def _target_variable(value: Any, complex_type: bool) -> tuple[Any, Any]:
    """(default, lookup) of a target's override: `name: value` or `{default: ...}` / `{lookup: ...}`."""
    long_form = isinstance(value, dict) and value and set(value) <= VARIABLE_KEYS
    if long_form and (not complex_type or "default" in value or "lookup" in value):
        return value.get("default"), value.get("lookup")
    return value, None


def _checked(value: _Value, complex_type: bool) -> _Value:
    if isinstance(value.value, dict | list) and not complex_type:
        raise BundleError(
            "has a mapping or list value: declare the variable with type: complex",
            file=value.file,
            key=value.key,
        )
    return value


def _resource_sources(config: BundleConfig, target: str, resources: Mapping[str, Any]) -> dict[str, Path]:
    sources = dict(config.resource_files)
    for type_name, items in resources.items():
        for key in items or {}:
            sources.setdefault(
                f"resources.{type_name}.{key}",
                config.locate(("targets", target, "resources", type_name, key)),
            )
    return sources


# ----------------------------------------------------------------------------------------------
# References


def _reference_tree(
    sections: Mapping[str, Any], values: Mapping[str, _Value], target: str, user_name: str | None
) -> dict[str, Any]:
    user_name, short_name = (user_name, short_name_of(user_name) or "user") if user_name else current_user()
    workspace = dict(sections["workspace"] or {})
    workspace["current_user"] = {"userName": user_name, "short_name": short_name}
    workspace.setdefault("root_path", DEFAULT_ROOT_PATH)
    for key, default in WORKSPACE_PATH_DEFAULTS.items():
        workspace.setdefault(key, default)
    for key in ("root_path", *WORKSPACE_PATH_DEFAULTS):
        workspace[key] = _workspace_path(workspace[key], user_name)
    return {
        "bundle": {**(sections["bundle"] or {}), "target": target, "environment": target},
        "workspace": workspace,
        "var": {var: value.value for var, value in values.items()},
        "variables": {var: {"value": value.value} for var, value in values.items()},
        "presets": sections["presets"] or {},
        "artifacts": sections["artifacts"] or {},
        "resources": {kind: dict(items or {}) for kind, items in (sections["resources"] or {}).items()},
    }


def _workspace_path(path: Any, user_name: str) -> Any:
    """`~/x` -> /Workspace/Users/<user>/x and /Users/... -> /Workspace/Users/..., as the CLI expands them."""
    if not isinstance(path, str):
        return path
    if path.startswith("~/"):
        return f"/Workspace/Users/{user_name}/{path[2:]}"
    if path.startswith("/") and not path.startswith(("/Workspace/", "/Volumes/", "/dbfs/")):
        return f"/Workspace{path}"
    return path


def _origin_finder(
    config: BundleConfig,
    target: str,
    definition: Mapping[str, Any],
    values: Mapping[str, _Value],
    sources: Mapping[str, Path],
) -> Callable[[PathKey], tuple[Path | None, str]]:
    """Where a path of the reference tree was written: (file, dotted key)."""

    def origin(path: PathKey) -> tuple[Path | None, str]:
        if path[0] in ("var", "variables") and len(path) > 1 and str(path[1]) in values:
            value = values[str(path[1])]
            rest = path[3:] if path[0] == "variables" else path[2:]
            return value.file, value.key + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest)
        if path[0] == "resources" and len(path) > 2:
            return sources.get(dotted(path[:3]), config.main_file), dotted(path)
        if _contains(definition, path):
            return config.locate(("targets", target, *path)), dotted(("targets", target, *path))
        return config.locate(path), dotted(path)

    return origin


def _contains(tree: Any, path: PathKey) -> bool:
    for part in path:
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        else:
            return False
    return True


class _Resolver:
    """Resolves `${...}` references lazily over the reference tree, detecting cycles."""

    def __init__(self, tree: dict[str, Any], origin: Callable[[PathKey], tuple[Path | None, str]]) -> None:
        self.tree = tree
        self.origin = origin
        self.done: dict[PathKey, Any] = {}
        self.active: list[PathKey] = []

    def resolve(self, value: Any, path: PathKey) -> Any:
        """A resolved copy of `value`, found in the tree at `path`."""
        if isinstance(value, dict):
            return {key: self.resolve(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item, (*path, i)) for i, item in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return self._string(value, path)
        return value

    def reference(self, reference: str, at: PathKey) -> Any:
        """The resolved value of `${reference}`, written at tree path `at`."""
        path = tuple(int(m.group(1)) if m.group(1) else m.group(0) for m in _PATH_TOKEN.finditer(reference))
        if path[0] == "resources" and len(path) == 4 and path[3] == "id" and _contains(self.tree, path[:3]):
            return ResourceId(str(path[2]), "${" + reference + "}")  # stand-in for the deployed id
        if path in self.done:
            return self.done[path]
        if path in self.active:
            chain = [*self.active[self.active.index(path) :], path]
            self._fail(at, "reference cycle: " + " -> ".join("${" + dotted(p) + "}" for p in chain))
        raw = self._lookup(path, reference, at)
        self.active.append(path)
        try:
            value = self.resolve(raw, path)
        finally:
            self.active.pop()
        self.done[path] = value
        return value

    def _string(self, text: str, path: PathKey) -> Any:
        whole = _REFERENCE.fullmatch(text)
        if whole and not whole.group(1) and _root(whole.group(2)) in RESOLVABLE_ROOTS:
            return self.reference(whole.group(2), path)
        return _REFERENCE.sub(lambda match: self._embedded(match, path), text)

    def _embedded(self, match: re.Match[str], path: PathKey) -> str:
        if match.group(1):  # "$${x}" is the literal "${x}"
            return match.group(0)[1:]
        if _root(match.group(2)) not in RESOLVABLE_ROOTS:
            return match.group(0)
        value = self.reference(match.group(2), path)
        if isinstance(value, dict | list):
            self._fail(path, f"${{{match.group(2)}}} is a mapping or list and cannot be part of a string")
        return _scalar_text(value)

    def _lookup(self, path: PathKey, reference: str, at: PathKey) -> Any:
        node: Any = self.tree
        for depth, part in enumerate(path):
            in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
            if in_list or (isinstance(node, dict) and part in node):
                node = node[part]
            else:
                self._fail(at, f"cannot resolve ${{{reference}}}: {_missing(path, depth, node)}")
        return node

    def _fail(self, at: PathKey, message: str) -> None:
        file, key = self.origin(at)
        raise BundleError(message, file=file, key=key)


def _root(reference: str) -> str:
    return reference.split(".", 1)[0].split("[", 1)[0]


def _missing(path: PathKey, depth: int, node: Any) -> str:
    part, parent = path[depth], dotted(path[:depth])
    if depth == 0:
        return f"unknown root '{part}'"
    if path[0] == "var" and depth == 1:
        known = ", ".join(sorted(node)) if isinstance(node, dict) else ""
        return f"variable '{part}' is not declared (declared: {known or 'none'})"
    if isinstance(node, dict):
        return f"{parent} has no '{part}' (it has: {', '.join(map(str, node)) or 'nothing'})"
    return f"{parent} is {_kind(node)}, not something with '{part}'"


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


# ----------------------------------------------------------------------------------------------
# Presets (development mode)


def _presets(presets: Mapping[str, Any], mode: str | None, workspace: Mapping[str, Any]) -> dict[str, Any]:
    """The CLI's presets, with development mode's defaults filled in."""
    result = dict(presets)
    if mode == "development":
        short_name = workspace["current_user"]["short_name"]
        result.setdefault("name_prefix", f"[dev {short_name}] ")
        result.setdefault("trigger_pause_status", "PAUSED")
        result.setdefault("jobs_max_concurrent_runs", 4)
        result["tags"] = {"dev": short_name, **(result.get("tags") or {})}
    return result


def _apply_presets(resources: dict[str, dict[str, Any]], presets: Mapping[str, Any]) -> None:
    """Name prefixes, job tags, concurrency and paused triggers, as the CLI applies them before deploying."""
    prefix = str(presets.get("name_prefix") or "")
    pause = presets.get("trigger_pause_status")
    for kind, items in resources.items():
        for key, resource in items.items():
            items[key] = _prefixed(kind, dict(resource), prefix)
            if kind == "jobs":
                items[key] = _job_presets(items[key], presets, pause)


def _prefixed(kind: str, resource: dict[str, Any], prefix: str) -> dict[str, Any]:
    name_field = {"clusters": "cluster_name", "dashboards": "display_name"}.get(kind, "name")
    name = resource.get(name_field)
    if not prefix or not isinstance(name, str):
        return resource
    if kind in ("jobs", "pipelines", "models", "clusters", "dashboards"):
        resource[name_field] = prefix + name
    elif kind == "experiments":
        head, _, base = name.rpartition("/")
        resource[name_field] = f"{head}/{prefix}{base}" if head else prefix + base
    elif kind in ("model_serving_endpoints", "registered_models", "schemas"):
        resource[name_field] = _normalized_prefix(prefix) + name
    return resource


def _normalized_prefix(prefix: str) -> str:
    """'[dev jane] ' -> 'dev_jane_': a prefix usable in Unity Catalog and endpoint names."""
    core = re.sub(r"[^\w]|_", "_", prefix.lower()).strip("_")
    return f"{core}_" if core else ""


def _job_presets(job: dict[str, Any], presets: Mapping[str, Any], pause: Any) -> dict[str, Any]:
    tags = presets.get("tags") or {}
    if tags:
        job["tags"] = {**tags, **(job.get("tags") or {})}
    if not job.get("max_concurrent_runs") and presets.get("jobs_max_concurrent_runs"):
        job["max_concurrent_runs"] = presets["jobs_max_concurrent_runs"]
    if pause:
        for trigger in ("schedule", "trigger", "continuous"):
            if isinstance(job.get(trigger), dict) and not job[trigger].get("pause_status"):
                job[trigger] = {**job[trigger], "pause_status": pause}
    return job
