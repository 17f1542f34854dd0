"""Workspace checks: what `databricks bundle deploy -t T` and the bundle's jobs need there.

Against the workspace the Databricks SDK's default authentication selects (`WorkspaceClient()`:
DATABRICKS_HOST / _TOKEN, OAuth, or a ~/.databrickscfg profile), with the target's names resolved
from the bundle as that workspace's user. Read-only: every call is a GET.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_laptop.bundle.loader import BundleError, ResolvedBundle, load_bundle
from mlops_laptop.doctor import CheckResult, Status, fail, ok, warn
from mlops_laptop.pipeline_names import pipeline_names
from mlops_template.pipeline_names import PipelineNames

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.errors import DatabricksError
    from databricks.sdk.service.iam import User

CLI_INSTALL = "https://docs.databricks.com/dev-tools/cli/install.html"
SERVED_ENTITIES = "system.serving.served_entities"
# Every workspace user is in `account users`; UC grants to it apply to all (UC privileges docs).
ALL_USERS_GROUP = "account users"
_SETUP_CLI = re.compile(r"databricks/setup-cli@v(\d+\.\d+\.\d+)")
_CLI_VERSION = re.compile(r"v?(\d+\.\d+\.\d+)")


@dataclass(frozen=True)
class Principal:
    """The authenticated user (or service principal) and the groups UC grants may name."""

    user_name: str
    names: frozenset[str]

    @classmethod
    def of(cls, me: User) -> Principal:
        groups = {group.display for group in me.groups or [] if group.display}
        return cls(str(me.user_name), frozenset({str(me.user_name), ALL_USERS_GROUP, *groups}))


def workspace_checks(root: Path, target: str, client: WorkspaceClient | None = None) -> list[CheckResult]:
    """Authenticate, resolve the target's names as that user, then check each thing the jobs need."""
    result, w, me = check_authentication(client)
    if w is None or me is None:
        return [result, check_cli(root)]
    principal = Principal.of(me)
    try:
        bundle = load_bundle(root, target, user_name=principal.user_name)
        names = pipeline_names(bundle)
    except (BundleError, ValueError) as error:  # ValueError: the deploy task's parameters do not parse
        return [
            result,
            fail("bundle", str(error), f"fix it, then `mlops bundle validate -t {target}`"),
            check_cli(root),
        ]
    catalog = check_catalog(w, names, target)
    schema, schema_exists = check_schema(w, names)
    results = [result, catalog, schema]
    if catalog.status is Status.OK:
        results.append(check_privileges(w, names, principal, schema_exists))
    serving = check_serving(w)
    return [
        *results,
        check_jobs(w, target),
        serving,
        check_inference_tables(w, bundle, names, serving.status is Status.OK),
        check_source_table(w, str(bundle.variables["source_table"]), target),
        check_served_entities(w, principal),
        check_cli(root),
    ]


def check_authentication(
    client: WorkspaceClient | None,
) -> tuple[CheckResult, WorkspaceClient | None, User | None]:
    """`current_user.me()` (GET /api/2.0/preview/scim/v2/Me) answers for the configured credentials."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.errors import DatabricksError

    fix = (
        "databricks auth login --host https://<workspace-host> (or set DATABRICKS_HOST and DATABRICKS_TOKEN)"
    )
    try:
        w = client or WorkspaceClient()
        me = w.current_user.me()
    except (DatabricksError, ValueError) as error:
        return fail("authentication", _first_line(error), fix), None, None
    return ok("authentication", f"{me.user_name} on {w.config.host}"), w, me


def check_catalog(w: WorkspaceClient, names: PipelineNames, target: str) -> CheckResult:
    """The target's catalog exists (GET /api/2.1/unity-catalog/catalogs/{name})."""
    from databricks.sdk.errors import DatabricksError

    try:
        w.catalogs.get(names.catalog)
    except DatabricksError as error:
        return fail(
            "catalog",
            f"{names.catalog}: {_describe(error)}",
            f"a metastore admin creates it (CREATE CATALOG {names.catalog}), or set "
            f"targets.{target}.variables.catalog to a catalog you can use",
        )
    return ok("catalog", f"{names.catalog} exists")


def check_schema(w: WorkspaceClient, names: PipelineNames) -> tuple[CheckResult, bool]:
    """The schema exists, or the bundle's schema resource creates it on deploy (GET .../schemas/{name})."""
    from databricks.sdk.errors import DatabricksError, NotFound

    full_name = f"{names.catalog}.{names.schema}"
    try:
        w.schemas.get(full_name)
    except NotFound:
        return ok("schema", f"{full_name} not there yet: `databricks bundle deploy` creates it"), False
    except DatabricksError as error:
        return fail(
            "schema", f"{full_name}: {_describe(error)}", f"ask its owner for USE SCHEMA on {full_name}"
        ), True
    return ok("schema", f"{full_name} exists"), True


def check_privileges(
    w: WorkspaceClient, names: PipelineNames, principal: Principal, schema_exists: bool
) -> CheckResult:
    """The principal holds what the jobs need, directly, through a group, inherited, or as owner.

    Effective permissions: GET /api/2.1/unity-catalog/effective-permissions/{type}/{name}. A schema
    the deploy creates is owned by the deployer, so then only USE CATALOG and CREATE SCHEMA count.
    """
    from databricks.sdk.errors import DatabricksError

    schema = f"{names.catalog}.{names.schema}"
    needed = {("catalog", names.catalog): ["USE_CATALOG"] + ([] if schema_exists else ["CREATE_SCHEMA"])}
    if schema_exists:
        needed[("schema", schema)] = ["USE_SCHEMA", "CREATE_TABLE", "CREATE_MODEL"]
    try:
        held = {securable: _held(w, *securable, principal) for securable in needed}
    except DatabricksError as error:
        return warn(
            "privileges",
            f"cannot read effective permissions: {_describe(error)}",
            f"check them yourself: databricks grants get-effective schema {schema}",
        )
    missing = [
        (kind, name, privilege)
        for (kind, name), privileges in needed.items()
        for privilege in privileges
        if not held[kind, name] & {privilege, "ALL_PRIVILEGES"}
    ]
    if not missing:
        listed = "; ".join(f"{', '.join(p)} on {kind} {name}" for (kind, name), p in needed.items())
        return ok("privileges", listed)
    grants = "; ".join(
        f"GRANT {privilege.replace('_', ' ')} ON {kind.upper()} {name} TO `{principal.user_name}`"
        for kind, name, privilege in missing
    )
    lacking = ", ".join(f"{privilege} on {kind} {name}" for kind, name, privilege in missing)
    return fail("privileges", f"{principal.user_name} lacks {lacking}", f"an owner or admin runs: {grants}")


def _held(w: WorkspaceClient, kind: str, name: str, principal: Principal) -> set[str]:
    """Privileges any of the principal's names holds on the securable; all of them for its owner."""
    owner = (w.catalogs.get(name) if kind == "catalog" else w.schemas.get(name)).owner
    if owner in principal.names:
        return {"ALL_PRIVILEGES"}
    held: set[str] = set()
    token: str | None = None
    while True:
        page = w.grants.get_effective(kind, name, max_results=0, page_token=token)
        for assignment in page.privilege_assignments or []:
            if assignment.principal in principal.names:
                held.update(p.privilege.value for p in assignment.privileges or [] if p.privilege)
        token = page.next_page_token
        if not token:
            return held


def check_jobs(w: WorkspaceClient, target: str) -> CheckResult:
    """The Jobs API answers (GET /api/2.2/jobs/list); only a run proves serverless compute."""
    from databricks.sdk.errors import DatabricksError

    try:
        next(iter(w.jobs.list(limit=1)), None)
    except DatabricksError as error:
        return fail("jobs", _first_line(error), "use a workspace where you may create jobs")
    return ok(
        "jobs", f"Jobs API answers; `databricks bundle run smoke -t {target}` proves serverless compute"
    )


def check_serving(w: WorkspaceClient) -> CheckResult:
    """Model Serving is available: listing endpoints (GET /api/2.0/serving-endpoints) works."""
    from databricks.sdk.errors import DatabricksError

    try:
        endpoints = w.serving_endpoints.list()
    except DatabricksError as error:
        return fail(
            "model serving",
            f"unavailable: {_describe(error)}",
            "enable Model Serving for the workspace (account console), or deploy to one that has it",
        )
    return ok("model serving", f"available: listing endpoints works ({len(endpoints)} found)")


def check_inference_tables(
    w: WorkspaceClient, bundle: ResolvedBundle, names: PipelineNames, serving: bool
) -> CheckResult:
    """AI-Gateway inference tables: on where the target wants them, on the endpoint if it exists."""
    from databricks.sdk.errors import DatabricksError, NotFound

    if str(bundle.variables.get("inference_table_enabled")) != "true":
        return ok("inference tables", f"off for target {bundle.target} (inference_table_enabled)")
    if not serving:
        return fail("inference tables", "need Model Serving", "see `model serving` above")
    table = names.table(f"{bundle.variables['inference_table_prefix']}_payload")
    try:
        endpoint = w.serving_endpoints.get(names.endpoint)
    except NotFound:
        return ok("inference tables", f"the deploy task creates {names.endpoint} logging to {table}")
    except DatabricksError as error:
        return warn(
            "inference tables",
            f"cannot read endpoint {names.endpoint}: {_describe(error)}",
            f"ask its owner for CAN_VIEW on {names.endpoint}",
        )
    config = endpoint.ai_gateway.inference_table_config if endpoint.ai_gateway else None
    if config is None or not config.enabled:
        return warn(
            "inference tables",
            f"endpoint {names.endpoint} has no AI-Gateway inference table",
            f"databricks bundle run pipeline -t {bundle.target} (its deploy task turns it on)",
        )
    return ok("inference tables", f"{names.endpoint} logs to {table}")


def check_source_table(w: WorkspaceClient, table: str, target: str) -> CheckResult:
    """The pipeline's source table is readable (GET /api/2.1/unity-catalog/tables/{name})."""
    problem = _table_problem(w, table)
    if problem is None:
        return ok("source table", f"{table} readable")
    return fail(
        "source table",
        f"{table}: {problem}",
        f"ask its owner for SELECT on {table}, or set targets.{target}.variables.source_table "
        "to a table you can read",
    )


def check_served_entities(w: WorkspaceClient, principal: Principal) -> CheckResult:
    """`system.serving.served_entities` readable; without it the unpack task leaves model versions empty."""
    problem = _table_problem(w, SERVED_ENTITIES)
    if problem is None:
        return ok("served entities", f"{SERVED_ENTITIES} readable")
    return warn(
        "served entities",
        f"{SERVED_ENTITIES}: {problem}; monitoring leaves model_version empty",
        "an account admin runs `databricks system-schemas enable <metastore-id> serving` "
        "(`databricks metastores current` shows the id), then "
        f"GRANT USE SCHEMA, SELECT ON SCHEMA system.serving TO `{principal.user_name}`",
    )


def _table_problem(w: WorkspaceClient, table: str) -> str | None:
    from databricks.sdk.errors import DatabricksError

    try:
        w.tables.get(table)
    except DatabricksError as error:
        return _describe(error)
    return None


def check_cli(root: Path) -> CheckResult:
    """`databricks --version` is at least the version the workflows pin (`databricks/setup-cli@vX`)."""
    pinned = pinned_cli_version(root / ".github" / "workflows")
    install = f"install it: {CLI_INSTALL}" + (
        f" (curl -fsSL https://raw.githubusercontent.com/databricks/setup-cli/v{pinned}/install.sh | sh)"
        if pinned
        else ""
    )
    cli = shutil.which("databricks")
    if cli is None:
        return warn("databricks cli", "not installed (deploys need it)", install)
    answer = subprocess.run([cli, "--version"], capture_output=True, text=True, check=False)
    match = _CLI_VERSION.search(answer.stdout)
    if match is None:
        return warn("databricks cli", f"{cli} --version printed no version", install)
    version = match.group(1)
    if pinned and _version(version) < _version(pinned):
        return warn("databricks cli", f"v{version} is older than v{pinned}, which the workflows pin", install)
    return ok("databricks cli", f"v{version}" + (f" (workflows pin v{pinned})" if pinned else ""))


def pinned_cli_version(workflows: Path) -> str | None:
    """The newest CLI version pinned by `databricks/setup-cli@vX.Y.Z` (its tags are CLI versions)."""
    found = [m for file in sorted(workflows.glob("*.y*ml")) for m in _SETUP_CLI.findall(file.read_text())]
    return max(found, key=_version, default=None)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _describe(error: DatabricksError) -> str:
    """Error code and message, without the config the SDK appends (sdk/config.py wrap_debug_info)."""
    message = _first_line(error).split(". Config: ", 1)[0]
    code = getattr(error, "error_code", None)
    return f"{code}: {message}" if code else message


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
