"""Offline validation: the CLI's JSON schema and the databricks-bundles dataclasses, as the CLI would."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_laptop.bundle.loader import BundleError, read_config
from mlops_laptop.bundle.validate import (
    SCHEMA_ENV,
    check_config,
    find_schema,
    load_schema,
    validate_bundle,
)
from test_bundle_loader import copy_bundle, edit_yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = PROJECT_ROOT / "laptop" / "src" / "mlops_laptop" / "bundle" / "bundle-jsonschema.json"
# A schema that accepts every configuration and names no resource type: the dataclasses alone check.
ACCEPT_ALL_SCHEMA = {"properties": {"resources": {"$ref": "#/$defs/resources"}}, "$defs": {"resources": {}}}
JOB_FILE = Path("resources/pipeline.job.yml")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("BUNDLE_VAR_")] + [SCHEMA_ENV]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["schema", "dataclasses"])
def broken_bundle(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A copy of the real bundle, checked with the vendored JSON schema or with the dataclasses
    alone (MLOPS_BUNDLE_SCHEMA pointing at a schema that accepts everything)."""
    if request.param == "dataclasses":
        accept_all = tmp_path / "accept-all.json"
        accept_all.write_text(json.dumps(ACCEPT_ALL_SCHEMA))
        monkeypatch.setenv(SCHEMA_ENV, str(accept_all))
    yield copy_bundle(tmp_path)


def first_task(data: dict[str, Any]) -> dict[str, Any]:
    return data["resources"]["jobs"]["pipeline"]["tasks"][0]


# --- the real bundle ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_real_bundle_validates(target: str) -> None:
    bundle = validate_bundle(PROJECT_ROOT, target)
    assert bundle.target == target
    assert bundle.resources["jobs"]


def test_real_bundle_default_target_and_override() -> None:
    bundle = validate_bundle(PROJECT_ROOT, None, {"catalog": "mine"})
    assert bundle.target == "dev"
    assert bundle.variables["catalog"] == "mine"


def test_real_config_matches_the_cli_json_schema() -> None:
    """databricks.yml + includes, unresolved, against the CLI's own schema, vendored in the package."""
    assert find_schema() == SCHEMA
    config = read_config(PROJECT_ROOT)
    assert len(config.files) > 1  # includes were read
    check_config(config, load_schema(SCHEMA))


# --- what the CLI would reject -----------------------------------------------------------------


def test_misspelled_task_key_names_key_and_file(broken_bundle: Path) -> None:
    def misspell(data: dict[str, Any]) -> None:
        wheel = first_task(data)["python_wheel_task"]
        wheel["entry_pont"] = wheel.pop("entry_point")

    edit_yaml(broken_bundle / JOB_FILE, misspell)
    with pytest.raises(
        BundleError, match=r"unknown key 'entry_pont' \(did you mean 'entry_point'\?\)"
    ) as error:
        validate_bundle(broken_bundle)
    assert error.value.file == JOB_FILE
    assert error.value.key == "resources.jobs.pipeline.tasks[0].python_wheel_task.entry_pont"
    assert str(error.value).startswith(
        f"{JOB_FILE}: resources.jobs.pipeline.tasks[0].python_wheel_task.entry_pont: "
    )


def test_misspelled_task_key_field(broken_bundle: Path) -> None:
    edit_yaml(
        broken_bundle / JOB_FILE, lambda d: first_task(d).update(task_kye=first_task(d).pop("task_key"))
    )
    with pytest.raises(BundleError, match="unknown key 'task_kye'") as error:
        validate_bundle(broken_bundle)
    assert (error.value.file, error.value.key) == (JOB_FILE, "resources.jobs.pipeline.tasks[0].task_kye")


def test_bad_enum(broken_bundle: Path) -> None:
    edit_yaml(broken_bundle / JOB_FILE, lambda d: first_task(d).update(run_if="SOMETIMES"))
    with pytest.raises(BundleError, match=r"'SOMETIMES' is not one of .*ALL_SUCCESS") as error:
        validate_bundle(broken_bundle)
    assert (error.value.file, error.value.key) == (JOB_FILE, "resources.jobs.pipeline.tasks[0].run_if")


def test_bad_enum_through_a_variable(broken_bundle: Path) -> None:
    """Only the resolved value is wrong: the dataclass check of the resolved job catches it."""
    with pytest.raises(BundleError, match="'HALTED' is not one of") as error:
        validate_bundle(broken_bundle, "prod", {"schedule_pause_status": "HALTED"})
    # Every job's schedule uses the variable: the first job checked is named.
    assert error.value.key.endswith(".schedule.pause_status")
    assert error.value.file.parent.name == "resources"


def test_wrong_type(broken_bundle: Path) -> None:
    edit_yaml(
        broken_bundle / JOB_FILE,
        lambda d: d["resources"]["jobs"]["pipeline"].update(max_concurrent_runs="lots"),
    )
    with pytest.raises(BundleError, match=r"expected int.*'lots'") as error:
        validate_bundle(broken_bundle)
    assert error.value.key == "resources.jobs.pipeline.max_concurrent_runs"


def test_misspelled_schema_field(broken_bundle: Path) -> None:
    schema_file = broken_bundle / "resources" / "schema.yml"
    edit_yaml(
        schema_file,
        lambda d: d["resources"]["schemas"]["pipeline_schema"].update(
            catalog=d["resources"]["schemas"]["pipeline_schema"].pop("catalog_name")
        ),
    )
    with pytest.raises(BundleError, match="unknown key 'catalog'") as error:
        validate_bundle(broken_bundle)
    assert (error.value.file, error.value.key) == (
        Path("resources/schema.yml"),
        "resources.schemas.pipeline_schema.catalog",
    )


def test_unresolvable_reference(broken_bundle: Path) -> None:
    edit_yaml(broken_bundle / JOB_FILE, lambda d: first_task(d).update(description="${var.nope}"))
    with pytest.raises(BundleError, match=r"cannot resolve \$\{var.nope\}") as error:
        validate_bundle(broken_bundle)
    assert (error.value.file, error.value.key) == (JOB_FILE, "resources.jobs.pipeline.tasks[0].description")


def test_unknown_target(broken_bundle: Path) -> None:
    with pytest.raises(BundleError, match="unknown target 'qa'"):
        validate_bundle(broken_bundle, "qa")


def test_duplicate_resource_key(broken_bundle: Path) -> None:
    (broken_bundle / "resources" / "copy.yml").write_text((broken_bundle / JOB_FILE).read_text())
    with pytest.raises(BundleError, match="'pipeline' is defined twice"):
        validate_bundle(broken_bundle)


def test_misspelled_workspace_key_in_target(broken_bundle: Path) -> None:
    edit_yaml(
        broken_bundle / "databricks.yml", lambda d: d["targets"]["prod"]["workspace"].update(root_pth="/x")
    )
    with pytest.raises(BundleError, match="unknown key 'root_pth'") as error:
        validate_bundle(broken_bundle, "prod")
    assert (error.value.file, error.value.key) == (Path("databricks.yml"), "targets.prod.workspace.root_pth")


def test_unknown_resource_type(broken_bundle: Path) -> None:
    (broken_bundle / "resources" / "odd.yml").write_text("resources:\n  jobz:\n    x:\n      name: x\n")
    with pytest.raises(BundleError, match="jobz") as error:
        validate_bundle(broken_bundle)
    assert error.value.file == Path("resources/odd.yml")


def test_resource_type_without_dataclass_uses_the_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """registered_models have no dataclass here: the schema's definition of the type checks them."""
    shutil.copy(PROJECT_ROOT / "databricks.yml", tmp_path)
    shutil.copytree(PROJECT_ROOT / "resources", tmp_path / "resources")
    model = "resources:\n  registered_models:\n    scorer:\n      catalog_name: ${var.catalog}\n"
    model += "      schema_name: ${var.schema}\n      name: ${var.model_name}\n"
    (tmp_path / "resources" / "model.yml").write_text(model)
    bundle = validate_bundle(tmp_path, "prod")
    declared = yaml.safe_load((PROJECT_ROOT / "databricks.yml").read_text())["variables"]
    assert bundle.resources["registered_models"]["scorer"]["name"] == declared["model_name"]["default"]
    (tmp_path / "resources" / "model.yml").write_text(model + "      comentt: typo\n")
    with pytest.raises(BundleError, match="unknown key 'comentt'") as error:
        validate_bundle(tmp_path, "prod")
    assert (error.value.file, error.value.key) == (
        Path("resources/model.yml"),
        "resources.registered_models.scorer.comentt",
    )


def test_a_copy_of_the_bundle_elsewhere_is_still_checked_with_the_schema(tmp_path: Path) -> None:
    """The schema travels with the package, not with a folder beside the project: an unknown key
    under `bundle:` is refused in any clone (the CLI's schema has no such key)."""
    root = copy_bundle(tmp_path)
    edit_yaml(root / "databricks.yml", lambda d: d["bundle"].update(nmae="typo"))
    with pytest.raises(BundleError, match="unknown key 'nmae'") as error:
        validate_bundle(root)
    assert error.value.key == "bundle.nmae"


def test_schema_env_pointing_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCHEMA_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(BundleError, match=SCHEMA_ENV):
        validate_bundle(PROJECT_ROOT)


def test_schema_patterns_match_unicode_letters_as_the_cli_does(tmp_path: Path) -> None:
    """The CLI's patterns use `\\p{L}` / `\\p{N}` (RE2), which Python's `re` cannot compile."""
    pattern = r"\$\{(var(\.\p{L}+([-_]*[\p{L}\p{N}]+)*(\[[0-9]+\])*)+)\}"
    assert json.dumps(pattern) in SCHEMA.read_text(encoding="utf-8")
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"pattern": f"^{pattern}$"}))
    validator = load_schema(path)
    for valid in ("${var.catalog}", "${var.my-var_2.x[0]}", "${var.größe}"):
        assert validator.is_valid(valid), valid
    assert not validator.is_valid("${var.2x}")
    assert not validator.is_valid("${var." + "a" * 1000 + "!")  # nested quantifiers: no exponential time


# --- `mlops bundle validate -o json` ------------------------------------------------------------


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_validate_json_prints_the_resolved_bundle_like_the_cli(target: str) -> None:
    """cmd/bundle/validate.go renderJsonOutput (databricks/cli): the typed configuration after
    initialize, e.g. acceptance/bundle/templates/default-python/integration_classic/out.validate.dev.json:
    top-level bundle, variables (with value), artifacts, resources, workspace, sync, and, when set,
    presets, run_as, permissions; no targets."""
    from databricks.bundles.jobs import Job
    from typer.testing import CliRunner

    from mlops_laptop.cli import app

    result = CliRunner().invoke(
        app, ["bundle", "validate", "-t", target, "-o", "json", "--var", "catalog=from_cli"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {"bundle", "variables", "artifacts", "resources", "workspace", "sync"} <= set(document)
    assert "targets" not in document
    assert document["bundle"]["name"] == "mlops_bundle"
    assert document["bundle"]["target"] == target
    assert document["bundle"]["mode"] == ("development" if target == "dev" else "production")
    catalog = document["variables"]["catalog"]
    assert catalog["value"] == "from_cli" and catalog["default"] == {"dev": "workspace"}.get(target, target)
    assert all("value" in spec for spec in document["variables"].values())
    assert document["artifacts"]["python_artifact"]["dynamic_version"] is True
    assert document["artifacts"]["python_artifact"]["files"][0]["source"].endswith("/dist/*.whl")
    assert document["workspace"]["file_path"] == document["workspace"]["root_path"] + "/files"
    assert document["sync"]["paths"] == ["."]
    assert ("run_as" in document) == (target != "dev")
    assert ("permissions" in document) == (target != "dev")
    jobs = document["resources"]["jobs"]
    assert "${" not in json.dumps(jobs).replace("${resources.jobs.pipeline.id}", "")
    retrain = next(t for t in jobs["monitoring"]["tasks"] if "run_job_task" in t)
    assert retrain["run_job_task"]["job_id"] == "${resources.jobs.pipeline.id}"  # known at deploy time
    for key, job in jobs.items():
        retrain_free = json.loads(json.dumps(job).replace('"${resources.jobs.pipeline.id}"', "0"))
        parsed = Job.from_dict(retrain_free)
        assert parsed.name == job["name"], key
        assert any("from_cli." in json.dumps(t) for t in job["tasks"]), key


def test_validate_json_refuses_what_text_refuses(
    broken_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mlops_laptop.cli import app

    edit_yaml(broken_bundle / JOB_FILE, lambda d: first_task(d).update(task_kee="x"))
    monkeypatch.chdir(broken_bundle)
    result = CliRunner().invoke(app, ["bundle", "validate", "-o", "json"])
    assert result.exit_code == 2
    assert not result.stdout.lstrip().startswith("{")
