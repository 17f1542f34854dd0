"""`mlops doctor`: the local checks on real state, the workspace checks against a loopback fake.

The fake answers the REST calls the workspace checks make (all GETs, so there are no request
bodies to parse) with the Databricks SDK's own dataclasses (`.as_dict()`), at the paths the
installed SDK uses (databricks/sdk/service/{iam,catalog,jobs,serving}.py); errors are shaped as
the workspace sends them, `{"error_code", "message"}`, which databricks/sdk/errors/platform.py maps
by status (401 Unauthenticated, 403 PermissionDenied, 404 NotFound).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from databricks.sdk.service.catalog import (
    CatalogInfo,
    EffectivePermissionsList,
    EffectivePrivilege,
    EffectivePrivilegeAssignment,
    Privilege,
    SchemaInfo,
    SecurableType,
    TableInfo,
)
from databricks.sdk.service.iam import ComplexValue, User
from databricks.sdk.service.jobs import ListJobsResponse
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayInferenceTableConfig,
    ListEndpointsResponse,
    ServingEndpoint,
    ServingEndpointDetailed,
)

from loopback import authenticate_to, loopback_workspace
from mlops_laptop.doctor import CheckResult, Status, failed
from mlops_laptop.doctor.local import (
    LocalContext,
    check_bundle_schema,
    check_bundle_valid,
    check_java,
    check_lock,
    check_port,
    local_checks,
)
from mlops_laptop.doctor.workspace import pinned_cli_version, workspace_checks
from mlops_laptop.platform.local import LocalPlatform

PROJECT_ROOT = Path(__file__).resolve().parents[1]
USER = "someone@example.com"
SHORT_NAME = "someone"
# The names the bundle's variables give the dev target, resolved as USER.
_CONFIG = yaml.safe_load((PROJECT_ROOT / "databricks.yml").read_text())
_DEV = {name: v.get("default") for name, v in _CONFIG["variables"].items()} | _CONFIG["targets"]["dev"][
    "variables"
]
SCHEMA = f"{_DEV['catalog']}.dev_{SHORT_NAME}_{_DEV['schema']}"  # development mode prefixes the short name
ENDPOINT = _DEV["endpoint_name"].replace("${workspace.current_user.short_name}", SHORT_NAME)
SOURCE_TABLE = _DEV["source_table"]
INFERENCE_PREFIX = _DEV["inference_table_prefix"]
WRITE_SCHEMA = (Privilege.USE_SCHEMA, Privilege.CREATE_TABLE, Privilege.CREATE_MODEL)
NOT_FOUND = {
    "catalogs": "CATALOG_DOES_NOT_EXIST",
    "schemas": "SCHEMA_DOES_NOT_EXIST",
    "tables": "TABLE_DOES_NOT_EXIST",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results}


# ----------------------------------------------------------------------------------------------
# Local


def test_doctor_passes_locally_once_the_session_platform_runs(platform: LocalPlatform) -> None:
    """Every local check passes on the session's real state, its lock held by this very process
    (`LocalPlatform._acquire_lock` writes the holder's pid into state.lock)."""
    platform.spark  # noqa: B018 - starts Spark: the state directory, metastore and lock now exist
    results = local_checks(LocalContext(PROJECT_ROOT, "dev", platform.state_dir, _free_port()))
    assert [r.name for r in results if r.status is not Status.OK] == [], results
    assert _by_name(results)["state lock"].detail == "held by this process"
    assert _by_name(results)["registry store"].detail.endswith("UnityCatalogLocalStore")
    assert not failed(results)


def test_a_busy_serving_port_is_named_with_another_port_to_use(tmp_path: Path) -> None:
    """A real listening socket on the port: `mlops serve` could not bind it."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = check_port(LocalContext(PROJECT_ROOT, "dev", tmp_path, port))
    assert result.status is Status.WARN
    assert f"127.0.0.1:{port} is in use" in result.detail
    assert f"mlops serve -t dev --port {port + 1}" in result.fix


def test_a_lock_held_by_another_process_names_that_process(tmp_path: Path) -> None:
    """A real second process takes the state lock with `LocalPlatform._acquire_lock` (`filelock`)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys
                from pathlib import Path
                from mlops_laptop.platform.local import LocalPlatform
                local = LocalPlatform("dev", Path({str(tmp_path)!r}))
                local._acquire_lock()  # held while `local` lives
                print("locked", flush=True)
                sys.stdin.read()
            """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = check_lock(LocalContext(PROJECT_ROOT, "dev", tmp_path / "dev"))
    finally:
        holder.communicate(timeout=30)  # closes its stdin: it exits and the lock is released
    assert result.status is Status.FAIL
    assert f"in use by process {holder.pid}" in result.detail
    assert result.fix == f"wait for it to finish, or kill {holder.pid}"
    assert check_lock(LocalContext(PROJECT_ROOT, "dev", tmp_path / "dev")).detail == "free"


def test_a_schema_variable_pointing_nowhere_fails_schema_and_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`find_schema` (bundle/validate.py) reads $MLOPS_BUNDLE_SCHEMA before the vendored file."""
    monkeypatch.setenv("MLOPS_BUNDLE_SCHEMA", str(tmp_path / "missing.json"))
    context = LocalContext(PROJECT_ROOT, "dev", tmp_path)
    schema, valid = check_bundle_schema(context), check_bundle_valid(context)
    assert schema.status is Status.FAIL and "missing.json is not a file" in schema.detail
    assert schema.fix == "unset MLOPS_BUNDLE_SCHEMA"
    assert valid.status is Status.FAIL and "mlops bundle validate -t dev" in valid.fix


def test_a_java_older_than_17_is_named_with_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$JAVA_HOME/bin/java comes first, as in `LocalPlatform`; this one reports Java 11."""
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    result = check_java(LocalContext(PROJECT_ROOT, "dev", tmp_path))
    assert result.status is Status.FAIL
    assert "Java 11.0.2" in result.detail and "openjdk-17" in result.fix


def test_the_command_prints_each_problem_with_its_fix_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlops doctor -t dev`: one line per check, the fix below a problem, exit code 1 on a FAIL."""
    from typer.testing import CliRunner

    from mlops_laptop.cli import app

    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_BUNDLE_SCHEMA", str(tmp_path / "missing.json"))
    answer = CliRunner().invoke(app, ["doctor", "-t", "dev", "--port", str(_free_port())])
    lines = answer.stdout.splitlines()
    assert answer.exit_code == 1, answer.stdout
    assert any(line.startswith("FAIL bundle schema") for line in lines)
    assert any(line.strip() == "fix: unset MLOPS_BUNDLE_SCHEMA" for line in lines)
    assert any(line.startswith("ok   java") for line in lines)
    assert lines[-1] == "5 ok, 0 warn, 2 FAIL"


# ----------------------------------------------------------------------------------------------
# Workspace: a loopback fake of the GETs the checks make


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error_code": code, "message": message}


def _granted(
    principal: str, *privileges: Privilege, inherited_from: str | None = None
) -> EffectivePrivilegeAssignment:
    return EffectivePrivilegeAssignment(
        principal=principal,
        privileges=[
            EffectivePrivilege(
                privilege=p,
                inherited_from_name=inherited_from,
                inherited_from_type=SecurableType.CATALOG if inherited_from else None,
            )
            for p in privileges
        ],
    )


@dataclass
class FakeWorkspace:
    """A workspace where the user may do everything through `account users` and a group."""

    catalogs: dict[str, CatalogInfo] = field(
        default_factory=lambda: {"workspace": CatalogInfo(name="workspace", owner="admins")}
    )
    schemas: dict[str, SchemaInfo] = field(
        default_factory=lambda: {SCHEMA: SchemaInfo(full_name=SCHEMA, owner="deployer-sp")}
    )
    effective: dict[str, EffectivePermissionsList] = field(
        default_factory=lambda: {
            "catalog/workspace": EffectivePermissionsList(
                privilege_assignments=[_granted("account users", Privilege.USE_CATALOG)]
            ),
            f"schema/{SCHEMA}": EffectivePermissionsList(
                privilege_assignments=[
                    _granted("account users", Privilege.USE_CATALOG, inherited_from="workspace"),
                    _granted("data-eng", *WRITE_SCHEMA),
                    _granted("someone-else@example.com", Privilege.ALL_PRIVILEGES),
                ]
            ),
        }
    )
    tables: dict[str, tuple[int, dict[str, Any]]] = field(
        default_factory=lambda: {
            name: (200, TableInfo(full_name=name).as_dict())
            for name in (SOURCE_TABLE, "system.serving.served_entities")
        }
    )
    serving: tuple[int, dict[str, Any]] = (
        200,
        ListEndpointsResponse(endpoints=[ServingEndpoint(name=ENDPOINT)]).as_dict(),
    )
    endpoint: tuple[int, dict[str, Any]] = (
        200,
        ServingEndpointDetailed(
            name=ENDPOINT,
            ai_gateway=AiGatewayConfig(
                inference_table_config=AiGatewayInferenceTableConfig(
                    enabled=True, table_name_prefix=INFERENCE_PREFIX
                )
            ),
        ).as_dict(),
    )
    requests: list[tuple[str, str]] = field(default_factory=list)

    def handle(self, method: str, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, url))
        path, query = urlsplit(url).path, parse_qs(urlsplit(url).query)
        uc = "/api/2.1/unity-catalog/"
        if path == "/api/2.0/preview/scim/v2/Me":
            return 200, User(user_name=USER, groups=[ComplexValue(display="data-eng")]).as_dict()
        kind, _, name = path.removeprefix(uc).partition("/")
        if kind in ("catalogs", "schemas"):
            found = (self.catalogs if kind == "catalogs" else self.schemas).get(name)
            return (200, found.as_dict()) if found else _error(404, NOT_FOUND[kind], f"no such {kind[:-1]}")
        if kind == "effective-permissions":
            assert query == {"max_results": ["0"]}  # the paginated form the SDK docstring recommends
            return 200, self.effective[name].as_dict()
        if kind == "tables":
            return self.tables.get(name, _error(404, NOT_FOUND[kind], f"no such table {name}"))
        if path == "/api/2.2/jobs/list":
            return 200, ListJobsResponse(jobs=[]).as_dict()
        if path == "/api/2.0/serving-endpoints":
            return self.serving
        if path == f"/api/2.0/serving-endpoints/{ENDPOINT}":
            return self.endpoint
        return _error(404, "ENDPOINT_NOT_FOUND", f"no fake for {method} {path}")


@pytest.fixture
def cli_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `databricks` executable on PATH printing the version the workflows pin."""
    pinned = pinned_cli_version(PROJECT_ROOT / ".github" / "workflows")
    assert pinned is not None
    cli = tmp_path / "bin" / "databricks"
    cli.parent.mkdir()
    cli.write_text(f"#!/bin/sh\necho 'Databricks CLI v{pinned}'\n")
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", str(cli.parent))
    return cli


def _check(fake: FakeWorkspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, CheckResult]:
    with loopback_workspace(fake.handle) as host:
        authenticate_to(monkeypatch, host, tmp_path)
        return _by_name(workspace_checks(PROJECT_ROOT, "dev"))


def test_a_ready_workspace_passes_every_check_with_only_reads(
    cli_on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Privileges count through groups (User.groups of SCIM Me), `account users` and inheritance
    (EffectivePrivilege.inherited_from_*, GET /api/2.1/unity-catalog/effective-permissions;
    docs.databricks.com/api/uc-grants/v1/get-effective-permissions); names resolve as the
    workspace user, so the dev schema carries that user's short name."""
    fake = FakeWorkspace()
    results = _check(fake, monkeypatch, tmp_path)
    assert {name: r.status for name, r in results.items() if r.status is not Status.OK} == {}
    assert results["authentication"].detail.startswith(USER)
    assert results["schema"].detail == f"{SCHEMA} exists"
    assert "CREATE_MODEL on schema" in results["privileges"].detail
    assert results["inference tables"].detail == f"{ENDPOINT} logs to {SCHEMA}.{INFERENCE_PREFIX}_payload"
    assert {method for method, _ in fake.requests} == {"GET"}


def test_a_missing_privilege_fails_with_the_grant_that_fixes_it(
    cli_on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The registry needs CREATE MODEL on the schema (UC privileges: docs.databricks.com/
    data-governance/unity-catalog/manage-privileges/privileges); a grant to another user is not ours."""
    fake = FakeWorkspace()
    fake.effective[f"schema/{SCHEMA}"] = EffectivePermissionsList(
        privilege_assignments=[
            _granted("data-eng", Privilege.USE_SCHEMA, Privilege.CREATE_TABLE),
            _granted("someone-else@example.com", Privilege.CREATE_MODEL),
        ]
    )
    results = _check(fake, monkeypatch, tmp_path)
    privileges = results["privileges"]
    assert privileges.status is Status.FAIL
    assert privileges.detail == f"{USER} lacks CREATE_MODEL on schema {SCHEMA}"
    assert privileges.fix == f"an owner or admin runs: GRANT CREATE MODEL ON SCHEMA {SCHEMA} TO `{USER}`"


def test_a_schema_to_be_created_needs_create_schema_on_the_catalog_unless_owned(
    cli_on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The bundle's schema resource creates the schema (resources/schema.yml); its creator owns it
    (owners hold ALL PRIVILEGES), so only USE CATALOG and CREATE SCHEMA on the catalog count."""
    fake = FakeWorkspace(schemas={})
    results = _check(fake, monkeypatch, tmp_path)
    assert results["schema"].status is Status.OK and "creates it" in results["schema"].detail
    assert results["privileges"].detail == f"{USER} lacks CREATE_SCHEMA on catalog workspace"
    fake = FakeWorkspace(schemas={}, catalogs={"workspace": CatalogInfo(name="workspace", owner="data-eng")})
    assert _check(fake, monkeypatch, tmp_path)["privileges"].status is Status.OK


def test_a_missing_catalog_fails_and_skips_the_privileges(
    cli_on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """GET /api/2.1/unity-catalog/catalogs/{name} answers 404 (NotFound, sdk/errors/platform.py)."""
    results = _check(FakeWorkspace(catalogs={}, schemas={}), monkeypatch, tmp_path)
    assert results["catalog"].status is Status.FAIL
    assert results["catalog"].detail == "workspace: CATALOG_DOES_NOT_EXIST: no such catalog"
    assert "targets.dev.variables.catalog" in results["catalog"].fix
    assert "privileges" not in results


def test_an_unreadable_sample_table_fails_the_source_table(
    cli_on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """GET /api/2.1/unity-catalog/tables/{full_name} refused with 403 PERMISSION_DENIED."""
    fake = FakeWorkspace()
    fake.tables[SOURCE_TABLE] = _error(403, "PERMISSION_DENIED", "User does not have SELECT")
    result = _check(fake, monkeypatch, tmp_path)["source table"]
    assert result.status is Status.FAIL
    assert result.detail == f"{SOURCE_TABLE}: PERMISSION_DENIED: User does not have SELECT"
    assert "targets.dev.variables.source_table" in result.fix


@pytest.mark.parametrize("status", [403, 404])
def test_serving_unavailable_fails_serving_and_inference_tables(
    status: int, cli_on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Listing endpoints (GET /api/2.0/serving-endpoints, sdk/service/serving.py) answers
    FEATURE_DISABLED where the workspace has no Model Serving."""
    fake = FakeWorkspace(serving=_error(status, "FEATURE_DISABLED", "Model serving is not enabled"))
    results = _check(fake, monkeypatch, tmp_path)
    assert results["model serving"].status is Status.FAIL
    assert results["model serving"].detail == "unavailable: FEATURE_DISABLED: Model serving is not enabled"
    assert results["inference tables"].status is Status.FAIL


def test_an_unreadable_served_entities_table_only_warns(
    cli_on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Only account admins may read system.serving until they enable the schema and grant it
    (README, "On Databricks"); monitoring then leaves model_version empty, so this warns."""
    fake = FakeWorkspace()
    del fake.tables["system.serving.served_entities"]
    results = list(_check(fake, monkeypatch, tmp_path).values())
    served = _by_name(results)["served entities"]
    assert served.status is Status.WARN and "system-schemas enable" in served.fix
    assert not failed(results)


def test_failed_authentication_stops_before_any_workspace_call(
    cli_on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SCIM Me (GET /api/2.0/preview/scim/v2/Me, sdk/service/iam.py) answers 401."""
    calls: list[str] = []

    def refuse(method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        calls.append(path)
        return _error(401, "UNAUTHENTICATED", "Invalid access token")

    with loopback_workspace(refuse) as host:
        authenticate_to(monkeypatch, host, tmp_path)
        results = workspace_checks(PROJECT_ROOT, "dev")
    assert [(r.name, r.status) for r in results] == [
        ("authentication", Status.FAIL),
        ("databricks cli", Status.OK),
    ]
    assert "databricks auth login" in results[0].fix
    assert [call for call in calls if call.startswith("/api/")] == ["/api/2.0/preview/scim/v2/Me"]


def test_an_old_or_missing_cli_warns_with_the_pinned_install(
    cli_on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The workflows pin `databricks/setup-cli@vX.Y.Z`, whose tags are CLI versions
    (github.com/databricks/setup-cli README: "use the action from a release tag")."""
    cli_on_path.write_text("#!/bin/sh\necho 'Databricks CLI v0.200.0'\n")
    old = _check(FakeWorkspace(), monkeypatch, tmp_path)["databricks cli"]
    assert old.status is Status.WARN and "v0.200.0 is older than" in old.detail
    assert "setup-cli/v" in old.fix
    cli_on_path.unlink()
    missing = _check(FakeWorkspace(), monkeypatch, tmp_path)["databricks cli"]
    assert missing.status is Status.WARN and missing.detail.startswith("not installed")
