"""The bundle loader: the real databricks.yml per target, and what the CLI would make of small variations."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_laptop.bundle import loader
from mlops_laptop.bundle.loader import (
    BundleError,
    current_user,
    find_bundle_root,
    load_bundle,
    short_name_of,
)
from mlops_template.tasks.common import TaskArgumentError, TaskConfig, build_config
from mlops_template.tasks.deploy import DeployConfig
from mlops_template.tasks.publish_features import PublishFeaturesConfig
from mlops_template.tasks.train import TrainConfig
from mlops_template.tasks.validate_model import ValidateModelConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The project's own bundle: names a team changes when it adopts the template are read from it.
DECLARED = yaml.safe_load((PROJECT_ROOT / "databricks.yml").read_text())
SCHEMA = DECLARED["variables"]["schema"]["default"]


def declared_endpoint(target: str, short_name: str) -> str:
    """The endpoint name databricks.yml declares for `target`, its references filled in."""
    overrides = DECLARED["targets"][target].get("variables") or {}
    template = overrides.get("endpoint_name", DECLARED["variables"]["endpoint_name"]["default"])
    return template.replace("${bundle.target}", target).replace(
        "${workspace.current_user.short_name}", short_name
    )


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BUNDLE_VAR_* from the caller's shell leaks into these tests."""
    for name in [n for n in os.environ if n.startswith("BUNDLE_VAR_")]:
        monkeypatch.delenv(name)


def copy_bundle(tmp_path: Path) -> Path:
    """A copy of the project's bundle (databricks.yml + resources/) to break in a test."""
    root = tmp_path / "bundle"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "databricks.yml", root)
    shutil.copytree(PROJECT_ROOT / "resources", root / "resources")
    return root


def edit_yaml(file: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(file.read_text())
    change(data)
    file.write_text(yaml.safe_dump(data, sort_keys=False))


def write_bundle(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


MINIMAL = """
bundle:
  name: mini
include:
  - resources/*.yml
variables:
  catalog:
    default: main
targets:
  dev:
    default: true
    mode: development
  prod:
    mode: production
"""


# --- the real bundle ---------------------------------------------------------------------------


def test_real_bundle_default_target_is_dev() -> None:
    bundle = load_bundle(PROJECT_ROOT)
    assert bundle.target == "dev"
    assert bundle.mode == "development"
    assert bundle.name == "mlops_bundle"
    assert "pipeline" in bundle.resources["jobs"]


@pytest.mark.parametrize(
    ("target", "catalog", "inference", "pause"),
    [
        ("dev", "workspace", "true", "PAUSED"),
        ("staging", "staging", "true", "PAUSED"),
        ("prod", "prod", "true", "UNPAUSED"),
    ],
)
def test_real_bundle_variables_per_target(target: str, catalog: str, inference: str, pause: str) -> None:
    bundle = load_bundle(PROJECT_ROOT, target)
    assert bundle.target == target
    assert bundle.variables["catalog"] == catalog
    assert bundle.variables["inference_table_enabled"] == inference
    assert bundle.variables["schedule_pause_status"] == pause
    assert bundle.variables["endpoint_name"] == declared_endpoint(target, current_user()[1])
    assert bundle.resources["jobs"]["pipeline"]["schedule"]["pause_status"] == pause
    assert bundle.resources["schemas"]["pipeline_schema"]["catalog_name"] == catalog


def _pipeline_task_config(target: str, task_key: str, variables: dict[str, str]) -> TaskConfig:
    """The config a pipeline task builds from its bundle parameters (job parameters at their defaults)."""
    job = load_bundle(PROJECT_ROOT, target, variables).job("pipeline")
    [task] = [task for task in job["tasks"] if task["task_key"] == task_key]
    defaults = {f"{{{{job.parameters.{p['name']}}}}}": p["default"] for p in job["parameters"]}
    parameters = task["python_wheel_task"]["parameters"]
    for reference, value in defaults.items():
        parameters = [parameter.replace(reference, value) for parameter in parameters]
    config_type = {
        "validate_model": ValidateModelConfig,
        "deploy": DeployConfig,
        "train": TrainConfig,
        "publish_features": PublishFeaturesConfig,
    }[task_key]
    return build_config(config_type, parameters)


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_the_rollout_policy_reaches_the_gate_and_the_deploy_task(target: str) -> None:
    """One variable sets the policy both tasks apply (default replace); the share and the A/B key
    reach the deploy task; ab_test without a key column is refused by the task's parameters."""
    for variables, rollout in (({}, "replace"), ({"rollout": "canary"}, "canary")):
        assert _pipeline_task_config(target, "validate_model", variables).rollout == rollout
        deploy = _pipeline_task_config(target, "deploy", variables)
        assert (deploy.rollout, deploy.challenger_percent, deploy.ab_key_column) == (rollout, 10, "")
    ab_test = {"rollout": "ab_test", "ab_key_column": "rider_id", "challenger_percent": "30"}
    deploy = _pipeline_task_config(target, "deploy", ab_test)
    assert (deploy.rollout, deploy.challenger_percent, deploy.ab_key_column) == ("ab_test", 30, "rider_id")
    with pytest.raises(TaskArgumentError, match="--rollout=ab_test needs --ab-key-column"):
        _pipeline_task_config(target, "deploy", {"rollout": "ab_test"})
    assert not {"challenger_traffic_percent", "ab_challenger_share"} & set(DECLARED["variables"])
    assert json.loads(DECLARED["variables"]["rollout_params"]["default"]) == {}


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_serving_features_reach_publish_train_and_deploy(target: str) -> None:
    """One variable decides how the served model gets its features (default lookup; request where no
    online store exists); publish_features runs after features and before deploy. The online store
    name fits `fe.create_online_store` ("Maximum of 63 bytes", databricks/feature_engineering/client.py)
    and uses lowercase letters, digits and '-' like the docs' example "my-online-store"."""
    tasks = {task["task_key"]: task for task in load_bundle(PROJECT_ROOT, target).job("pipeline")["tasks"]}
    assert tasks["publish_features"]["depends_on"] == [{"task_key": "features"}]
    assert {"validate_model", "publish_features"} == {d["task_key"] for d in tasks["deploy"]["depends_on"]}
    for variables, serving in (({}, "lookup"), ({"serving_features": "request"}, "request")):
        for task_key in ("publish_features", "train", "deploy"):
            assert _pipeline_task_config(target, task_key, variables).serving_features == serving
    store = _pipeline_task_config(target, "publish_features", {}).online_store
    assert re.fullmatch(r"[a-z][a-z0-9-]*", store) and len(store.encode()) <= 63
    with pytest.raises(TaskArgumentError, match="--serving-features"):
        _pipeline_task_config(target, "train", {"serving_features": "online"})


def test_real_bundle_resolves_every_reference() -> None:
    for target in ("dev", "staging", "prod"):
        text = json.dumps(load_bundle(PROJECT_ROOT, target).resources)
        assert "${" not in text, f"unresolved reference in target {target}"


def test_real_bundle_keeps_runtime_references() -> None:
    _, short_name = current_user()
    job = load_bundle(PROJECT_ROOT, "dev").job("pipeline")
    arguments = [a for t in job["tasks"] for a in t.get("python_wheel_task", {}).get("parameters", [])]
    assert any("{{job.parameters." in a for a in arguments)
    # Tables live in the schema resource, which development mode prefixes per user.
    assert f"--schema=workspace.dev_{short_name}_{SCHEMA}" in arguments


def test_every_pipeline_task_names_the_schema_one_way_as_catalog_dot_schema() -> None:
    """One spelling across tasks (the deploy task once took `--catalog` and a bare `--schema`)."""
    bundle = load_bundle(PROJECT_ROOT, "staging")
    schema = f"{bundle.variables['catalog']}.{bundle.resources['schemas']['pipeline_schema']['name']}"
    tasks = {
        task["task_key"]: task["python_wheel_task"]["parameters"]
        for task in bundle.job("pipeline")["tasks"]
        if "python_wheel_task" in task
    }
    assert "deploy" in tasks
    assert {
        key: [p for p in parameters if p.startswith(("--schema=", "--catalog="))]
        for key, parameters in tasks.items()
    } == {key: [f"--schema={schema}"] for key in tasks}


def test_development_mode_prefixes_names_like_the_cli() -> None:
    _, short_name = current_user()
    dev = load_bundle(PROJECT_ROOT, "dev")
    prod = load_bundle(PROJECT_ROOT, "prod")
    assert dev.job("pipeline")["name"] == f"[dev {short_name}] mlops_bundle-pipeline-dev"
    assert dev.job("pipeline")["tags"]["dev"] == short_name
    assert dev.resources["schemas"]["pipeline_schema"]["name"] == f"dev_{short_name}_{SCHEMA}"
    assert prod.job("pipeline")["name"] == "mlops_bundle-pipeline-prod"
    assert prod.resources["schemas"]["pipeline_schema"]["name"] == SCHEMA


def test_workspace_paths() -> None:
    user_name, _ = current_user()
    dev = load_bundle(PROJECT_ROOT, "dev")
    staging = load_bundle(PROJECT_ROOT, "staging")
    assert dev.workspace["root_path"] == f"/Workspace/Users/{user_name}/.bundle/mlops_bundle/dev"
    # staging deploys into the principal's home folder (the deploying identity by default).
    assert staging.workspace["root_path"] == f"/Workspace/Users/{user_name}/.bundle/mlops_bundle/staging"
    assert staging.workspace["file_path"] == f"{staging.workspace['root_path']}/files"
    assert dev.variables["experiment_name"] == f"/Users/{user_name}/mlops_bundle-dev"


def test_command_line_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUNDLE_VAR_catalog", "from_env")
    assert load_bundle(PROJECT_ROOT, "prod").variables["catalog"] == "from_env"  # env beats the target
    bundle = load_bundle(PROJECT_ROOT, "prod", {"catalog": "mine"})
    assert bundle.variables["catalog"] == "mine"
    assert bundle.resources["schemas"]["pipeline_schema"]["catalog_name"] == "mine"


def test_sources_name_the_defining_files() -> None:
    bundle = load_bundle(PROJECT_ROOT)
    assert bundle.sources["resources.jobs.pipeline"] == Path("resources/pipeline.job.yml")
    assert bundle.sources["resources.schemas.pipeline_schema"] == Path("resources/schema.yml")
    for name, file in bundle.sources.items():
        assert (PROJECT_ROOT / file).is_file(), name


def test_unknown_job_lists_the_jobs() -> None:
    with pytest.raises(BundleError, match=r"unknown job 'nope'.*pipeline") as error:
        load_bundle(PROJECT_ROOT).job("nope")
    assert error.value.key == "resources.jobs.nope"


def test_find_bundle_root(tmp_path: Path) -> None:
    assert find_bundle_root(PROJECT_ROOT / "src" / "mlops_template") == PROJECT_ROOT
    with pytest.raises(BundleError, match=r"no databricks\.yml"):
        find_bundle_root(tmp_path)


def test_current_user_short_name_is_sanitized() -> None:
    user_name, short_name = current_user()
    assert user_name
    assert re.fullmatch(r"[a-z0-9_]+", short_name)


# --- errors, on a copy of the real bundle ------------------------------------------------------


def test_unknown_target_lists_the_targets() -> None:
    with pytest.raises(BundleError, match=r"unknown target 'qa'.*dev, prod, staging") as error:
        load_bundle(PROJECT_ROOT, "qa")
    assert error.value.file == Path("databricks.yml")


def test_undeclared_variable_names_file_and_key(tmp_path: Path) -> None:
    root = copy_bundle(tmp_path)
    job_file = root / load_bundle(root).sources["resources.jobs.pipeline"]
    edit_yaml(job_file, lambda d: d["resources"]["jobs"]["pipeline"].update(description="${var.nope}"))
    with pytest.raises(BundleError, match=r"\$\{var.nope\}.*variable 'nope' is not declared") as error:
        load_bundle(root)
    assert error.value.file == job_file.relative_to(root)
    assert error.value.key == "resources.jobs.pipeline.description"
    assert str(error.value).startswith(f"{job_file.relative_to(root)}: resources.jobs.pipeline.description: ")


def test_unresolvable_bundle_reference(tmp_path: Path) -> None:
    root = copy_bundle(tmp_path)
    job_file = root / "resources" / "pipeline.job.yml"
    edit_yaml(job_file, lambda d: d["resources"]["jobs"]["pipeline"].update(name="x-${bundle.nope}"))
    with pytest.raises(BundleError, match=r"\$\{bundle.nope\}.*bundle has no 'nope'") as error:
        load_bundle(root)
    assert error.value.key == "resources.jobs.pipeline.name"


def test_variable_without_value(tmp_path: Path) -> None:
    root = copy_bundle(tmp_path)
    edit_yaml(root / "databricks.yml", lambda d: d["variables"]["source_table"].pop("default"))
    with pytest.raises(BundleError, match="no value for variable 'source_table'") as error:
        load_bundle(root)
    assert error.value.file == Path("databricks.yml")
    assert error.value.key == "variables.source_table"
    assert load_bundle(root, variables={"source_table": "a.b.c"}).variables["source_table"] == "a.b.c"


def test_variable_cycle(tmp_path: Path) -> None:
    root = copy_bundle(tmp_path)

    def cycle(data: dict[str, Any]) -> None:
        data["variables"]["schema"]["default"] = "s_${var.model_name}"
        data["variables"]["model_name"]["default"] = "m_${var.schema}"

    edit_yaml(root / "databricks.yml", cycle)
    with pytest.raises(BundleError, match=r"reference cycle: \$\{var\.\w+\} -> .* -> \$\{var\.\w+\}"):
        load_bundle(root)


def test_duplicate_resource_key_names_both_files(tmp_path: Path) -> None:
    root = copy_bundle(tmp_path)
    (root / "resources" / "other.yml").write_text("resources:\n  jobs:\n    pipeline:\n      name: again\n")
    with pytest.raises(BundleError, match="defined twice") as error:
        load_bundle(root)
    assert "resources/other.yml" in str(error.value)
    assert "resources/pipeline.job.yml" in str(error.value)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    root = copy_bundle(tmp_path)
    edit_yaml(root / "databricks.yml", lambda d: d.update(varables={}))
    with pytest.raises(BundleError, match=r"unknown key 'varables' .*'variables'") as error:
        load_bundle(root)
    assert error.value.key == "varables"


def test_target_variable_for_undeclared_variable(tmp_path: Path) -> None:
    root = copy_bundle(tmp_path)
    edit_yaml(root / "databricks.yml", lambda d: d["targets"]["prod"]["variables"].update(catalgo="x"))
    with pytest.raises(BundleError, match="'catalgo' is given a value") as error:
        load_bundle(root, "prod")
    assert error.value.key == "targets.prod.variables.catalgo"


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    write_bundle(tmp_path, {"databricks.yml": "bundle:\n  name: a\nbundle:\n  name: b\n"})
    with pytest.raises(BundleError, match=r"invalid YAML: line 3.*duplicate key 'bundle'"):
        load_bundle(tmp_path)


# --- semantics, on small bundles ----------------------------------------------------------------


def test_variable_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_bundle(
        tmp_path,
        {
            "databricks.yml": MINIMAL + "    variables:\n      catalog: prod_cat\n",
        },
    )
    assert load_bundle(tmp_path, "dev").variables["catalog"] == "main"
    assert load_bundle(tmp_path, "prod").variables["catalog"] == "prod_cat"
    overrides = tmp_path / ".databricks" / "bundle" / "prod" / "variable-overrides.json"
    overrides.parent.mkdir(parents=True)
    overrides.write_text('{"catalog": "from_file"}')
    assert load_bundle(tmp_path, "prod").variables["catalog"] == "from_file"
    monkeypatch.setenv("BUNDLE_VAR_catalog", "from_env")
    assert load_bundle(tmp_path, "prod").variables["catalog"] == "from_env"
    assert load_bundle(tmp_path, "prod", {"catalog": "from_cli"}).variables["catalog"] == "from_cli"


def test_target_variable_long_form_and_lookup(tmp_path: Path) -> None:
    text = MINIMAL + "    variables:\n      catalog:\n        default: long_form\n"
    text = text.replace(
        "  catalog:\n    default: main\n",
        "  catalog:\n    default: main\n  warehouse:\n    lookup:\n      warehouse: Starter\n",
    )
    write_bundle(tmp_path, {"databricks.yml": text})
    with pytest.raises(BundleError, match=r"'warehouse' is a lookup.*--var warehouse=") as error:
        load_bundle(tmp_path, "prod")
    assert error.value.key == "variables.warehouse.lookup"
    bundle = load_bundle(tmp_path, "prod", {"warehouse": "abc123"})
    assert bundle.variables == {"catalog": "long_form", "warehouse": "abc123"}


def test_target_resources_merge_tasks_by_key(tmp_path: Path) -> None:
    resources = """
resources:
  jobs:
    etl:
      name: etl-${bundle.target}
      tags: {team: data}
      email_notifications: {on_failure: [team@example.com]}
      parameters:
        - {name: day, default: today}
      tasks:
        - task_key: a
          python_wheel_task: {package_name: p, entry_point: a, parameters: ["--x=1"]}
        - task_key: b
          depends_on: [{task_key: a}]
          python_wheel_task: {package_name: p, entry_point: b}
"""
    override = """
    resources:
      jobs:
        etl:
          tags: {env: prod}
          email_notifications: {on_failure: [oncall@example.com]}
          parameters:
            - {name: day, default: yesterday}
          tasks:
            - task_key: b
              python_wheel_task: {entry_point: b2}
            - task_key: c
              python_wheel_task: {package_name: p, entry_point: c}
"""
    write_bundle(tmp_path, {"databricks.yml": MINIMAL + override, "resources/etl.yml": resources})
    job = load_bundle(tmp_path, "prod").job("etl")
    assert [t["task_key"] for t in job["tasks"]] == ["a", "b", "c"]
    assert job["tasks"][1]["python_wheel_task"] == {"package_name": "p", "entry_point": "b2"}
    assert job["tasks"][1]["depends_on"] == [{"task_key": "a"}]
    assert job["tags"] == {"team": "data", "env": "prod"}
    assert job["parameters"] == [{"name": "day", "default": "yesterday"}]  # merged by name
    assert job["email_notifications"]["on_failure"] == [
        "team@example.com",
        "oncall@example.com",
    ]  # concatenated
    dev_job = load_bundle(tmp_path, "dev").job("etl")
    assert [t["task_key"] for t in dev_job["tasks"]] == ["a", "b"]


def test_references_between_resources_and_escapes(tmp_path: Path) -> None:
    resources = """
resources:
  schemas:
    main_schema:
      catalog_name: ${var.catalog}
      name: features
  jobs:
    parent:
      name: parent
      tasks:
        - task_key: run_child
          run_job_task:
            job_id: ${resources.jobs.child.id}
            job_parameters:
              schema: ${resources.schemas.main_schema.catalog_name}.${resources.schemas.main_schema.name}
              literal: $${var.catalog}
              runtime: "{{job.run_id}}"
              files: ${workspace.file_path}
    child:
      name: child
      parameters:
        - name: schema
          default: x
"""
    write_bundle(tmp_path, {"databricks.yml": MINIMAL, "resources/jobs.yml": resources})
    bundle = load_bundle(tmp_path, "prod")
    task = bundle.job("parent")["tasks"][0]["run_job_task"]
    assert task["job_id"] == "child"
    assert task["job_parameters"] == {
        "schema": "main.features",
        "literal": "${var.catalog}",
        "runtime": "{{job.run_id}}",
        "files": f"/Workspace/Users/{current_user()[0]}/.bundle/mini/prod/files",
    }
    assert bundle.sources["resources.schemas.main_schema"] == Path("resources/jobs.yml")


def test_development_mode_pauses_unset_schedules(tmp_path: Path) -> None:
    resources = """
resources:
  jobs:
    nightly:
      name: nightly
      schedule: {quartz_cron_expression: "0 0 1 * * ?", timezone_id: UTC}
      tasks:
        - task_key: a
          python_wheel_task: {package_name: p, entry_point: a}
"""
    write_bundle(tmp_path, {"databricks.yml": MINIMAL, "resources/jobs.yml": resources})
    dev = load_bundle(tmp_path, "dev").job("nightly")
    assert dev["schedule"]["pause_status"] == "PAUSED"
    assert dev["name"].startswith("[dev ") and dev["name"].endswith("] nightly")
    prod = load_bundle(tmp_path, "prod").job("nightly")
    assert "pause_status" not in prod["schedule"]
    assert prod["name"] == "nightly"


def test_complex_variable(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "  catalog:\n    default: main\n",
        "  catalog:\n    default: main\n  cluster:\n    type: complex\n    default:\n      num_workers: 1\n",
    )
    resources = """
resources:
  jobs:
    j:
      name: j
      job_clusters:
        - job_cluster_key: c
          new_cluster: ${var.cluster}
      tasks:
        - task_key: a
          job_cluster_key: c
          python_wheel_task: {package_name: p, entry_point: a}
"""
    write_bundle(tmp_path, {"databricks.yml": text, "resources/j.yml": resources})
    assert load_bundle(tmp_path, "prod").job("j")["job_clusters"][0]["new_cluster"] == {"num_workers": 1}
    with pytest.raises(BundleError, match="complex variable cannot be set"):
        load_bundle(tmp_path, "prod", {"cluster": "x"})


def test_no_targets_means_target_default(tmp_path: Path) -> None:
    write_bundle(tmp_path, {"databricks.yml": "bundle:\n  name: solo\n"})
    bundle = load_bundle(tmp_path)
    assert (bundle.target, bundle.mode, bundle.resources) == ("default", None, {})


# --- identity, permissions, per-user names (issue 11) -------------------------------------------

# The characters Model Serving accepts in an endpoint name (databricks-sdk serving.py,
# CreateServingEndpoint.name: "alphanumeric characters, dashes, and underscores"), at most 63.
ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")


@pytest.mark.parametrize(
    ("user_name", "short_name"),
    [
        ("jane.doe@example.com", "jane_doe"),
        ("Jane--Doe+ml@example.com", "jane_doe_ml"),
        ("__x..y__", "x_y"),
        ("zoë.müller@example.com", "zoë_müller"),
    ],
)
def test_short_name_is_the_clis(user_name: str, short_name: str) -> None:
    """libs/iamutil/user.go GetShortUserName + libs/textutil NormalizeString (databricks/cli): the part
    before '@', lower case, each run of non-letters/digits one '_', trimmed; letters stay Unicode."""
    assert short_name_of(user_name) == short_name


@pytest.mark.parametrize("user_name", ["jane.doe@example.com", "a-very-long.first.and.last-name@example.com"])
def test_dev_endpoint_is_per_user_and_a_valid_endpoint_name(
    monkeypatch: pytest.MonkeyPatch, user_name: str
) -> None:
    """Development mode prefixes bundle resources per user, but the endpoint is created by a task:
    its dev name carries ${workspace.current_user.short_name}, so two developers never share it."""
    monkeypatch.setattr(loader, "current_user_name", lambda: user_name)
    endpoint = load_bundle(PROJECT_ROOT, "dev").variables["endpoint_name"]
    assert endpoint == declared_endpoint("dev", short_name_of(user_name))
    assert short_name_of(user_name) in endpoint
    assert ENDPOINT_NAME.fullmatch(endpoint), endpoint
    monkeypatch.setattr(loader, "current_user_name", lambda: "someone.else@example.com")
    assert load_bundle(PROJECT_ROOT, "dev").variables["endpoint_name"] != endpoint


def test_dev_names_the_tasks_create_are_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything the tasks create outside bundle resources: endpoint (per-user name), experiment
    (user's home), models, feature and inference tables (the per-user schema resource)."""
    names = {}
    for user in ("ann@example.com", "bob@example.com"):
        monkeypatch.setattr(loader, "current_user_name", lambda user=user: user)
        bundle = load_bundle(PROJECT_ROOT, "dev")
        names[user] = {
            "endpoint": bundle.variables["endpoint_name"],
            "experiment": bundle.variables["experiment_name"],
            "schema": bundle.resources["schemas"]["pipeline_schema"]["name"],
        }
    for key in ("endpoint", "experiment", "schema"):
        assert names["ann@example.com"][key] != names["bob@example.com"][key], key


@pytest.mark.parametrize("target", ["staging", "prod"])
def test_production_runs_as_the_principal_with_group_permissions(target: str) -> None:
    """run_as (bundle/config/mutator/resourcemutator/run_as.go: copied onto every job without one) and
    top-level permissions (apply_bundle_permissions.go: CAN_RUN becomes CAN_MANAGE_RUN on jobs)."""
    bundle = load_bundle(
        PROJECT_ROOT,
        target,
        {
            "service_principal_id": current_user()[0],
            "viewers_group": "ml-readers",
            "operators_group": "ml-ops",
        },
    )
    principal = {"service_principal_name": current_user()[0]}
    assert bundle.run_as == principal
    for job in bundle.resources["jobs"].values():
        assert job["run_as"] == principal
        assert {"group_name": "ml-readers", "level": "CAN_VIEW"} in job["permissions"]
        assert {"group_name": "ml-ops", "level": "CAN_MANAGE_RUN"} in job["permissions"]
    root = bundle.workspace["root_path"]
    assert root == f"/Workspace/Users/{current_user()[0]}/.bundle/mlops_bundle/{target}"
    assert not root.startswith("/Workspace/Shared")  # every workspace user can write there


def test_dev_runs_as_the_developer_without_extra_permissions() -> None:
    bundle = load_bundle(PROJECT_ROOT, "dev")
    assert bundle.run_as is None
    assert all("run_as" not in job and "permissions" not in job for job in bundle.resources["jobs"].values())


def identity_bundle(tmp_path: Path, principal: str, level: str = "CAN_VIEW", monitor: bool = False) -> Path:
    """A minimal bundle whose prod target runs as `principal` and grants `level` to a group."""
    root = tmp_path / f"identity-{principal or 'none'}-{level}-{monitor}"
    config = MINIMAL.replace(
        "variables:\n",
        f"variables:\n  principal:\n    default: '{principal}'\n  level:\n    default: {level}\n",
    )
    config += (
        "run_as:\n  service_principal_name: ${var.principal}\n"
        "permissions:\n  - level: ${var.level}\n    group_name: readers\n"
    )
    resources = "resources:\n  jobs:\n    job:\n      name: j\n"
    if monitor:
        resources += "  quality_monitors:\n    m:\n      table_name: a.b.c\n"
    root.mkdir()
    return write_bundle(root, {"databricks.yml": config, "resources/r.yml": resources})


def test_run_as_without_identity_is_refused(tmp_path: Path) -> None:
    """run_as.go: "run_as section must specify exactly one identity"."""
    with pytest.raises(BundleError, match="run_as section must specify exactly one identity"):
        load_bundle(identity_bundle(tmp_path, ""), "prod")


def test_permission_level_outside_the_bundle_levels_is_refused(tmp_path: Path) -> None:
    """apply_bundle_permissions.go validatePermissions: only CAN_MANAGE, CAN_VIEW, CAN_RUN."""
    with pytest.raises(BundleError, match="invalid permission level: CAN_MANAGE_RUN"):
        load_bundle(identity_bundle(tmp_path, current_user()[0], "CAN_MANAGE_RUN"), "prod")


def test_quality_monitor_with_another_run_as_identity_is_refused(tmp_path: Path) -> None:
    """run_as.go: quality monitors (and serving endpoints, apps) cannot be deployed with a run_as
    identity other than the deploying one: production is deployed by the principal itself."""
    with pytest.raises(BundleError, match="quality_monitors do not support a setting a run_as user"):
        load_bundle(identity_bundle(tmp_path, "another-principal", monitor=True), "prod")
    assert load_bundle(identity_bundle(tmp_path, current_user()[0], monitor=True), "prod").run_as


def test_the_wheel_artifact_uses_a_dynamic_version() -> None:
    """bundle/artifacts/build.go: with dynamic_version the CLI uploads the wheel patched to
    <version>+<timestamp>, so a redeploy never installs a cached wheel of the same version."""
    for target in ("dev", "staging", "prod"):
        artifact = load_bundle(PROJECT_ROOT, target).artifacts["python_artifact"]
        assert artifact["type"] == "whl"
        assert artifact["dynamic_version"] is True
