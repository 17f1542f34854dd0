"""Registry on the real local MLflow store: challenger / champion aliases, the gate, rollback, tasks."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from typer.testing import CliRunner

from mlops_laptop.bundle.loader import find_bundle_root, load_bundle
from mlops_laptop.pipeline_names import pipeline_names
from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.registry.cli import model_app
from mlops_template.platform import MissingTableError
from mlops_template.problem.spec import PROBLEM
from mlops_template.registry.gate import PROMOTED, REJECTED, validate_challenger
from mlops_template.registry.versions import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    ROLLED_BACK,
    RegistryError,
    RollbackError,
    get_aliases,
    model_status,
    register_challenger,
    rollback,
)
from mlops_template.tasks import features, prepare_data, train, validate_model
from mlops_template.training.config import TrainingConfig
from mlops_template.training.model import train_model
from mlops_template.training.tracking import RunContext, TrainingRun, log_training_run
from problem.frames import FAST, config, training_frame

# Thresholds nothing fails: only the comparison with the champion can reject.
LOOSE = config(gate_max_rmse=1_000, gate_min_r2=-1_000)
DEFAULTS = config()
EXPERIMENT = "/Shared/test-registry"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frame(spark: SparkSession) -> DataFrame:
    return training_frame(spark, seed=11)


def _log(platform: LocalPlatform, frame: DataFrame, training: TrainingConfig) -> TrainingRun:
    context = RunContext("test.trips.clean", PROBLEM.feature_table_names("test.f"), "test", "run-1")
    return log_training_run(
        platform.experiment_id(EXPERIMENT), train_model(frame, training, PROBLEM), context
    )


@pytest.fixture(scope="module")
def good(platform: LocalPlatform, frame: DataFrame) -> Iterator[TrainingRun]:
    """A logged model, registered under a new name by each test that needs it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIT_SHA", "good-sha")
        yield _log(platform, frame, config(**FAST))


@pytest.fixture(scope="module")
def worse(platform: LocalPlatform, frame: DataFrame) -> Iterator[TrainingRun]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIT_SHA", "worse-sha")
        yield _log(platform, frame, config(n_estimators=1, num_leaves=2))


@pytest.fixture
def name(platform: LocalPlatform) -> str:
    platform.configure_mlflow()
    return f"test.reg_{uuid.uuid4().hex[:10]}.fare_model"


def test_first_challenger_becomes_champion(name: str, good: TrainingRun, frame: DataFrame) -> None:
    version = register_challenger(name, good)
    assert version == 1
    assert get_aliases(name) == {CHALLENGER: 1}

    result = validate_challenger(name, version, frame, DEFAULTS, PROBLEM)

    assert result.promoted and result.outcome == PROMOTED
    assert (result.compared_champion, result.champion_after) == (None, 1)
    assert get_aliases(name) == {CHALLENGER: 1, CHAMPION: 1}
    # The gate's own held-out rows are the training split's: the same metrics as at training.
    assert result.challenger["rmse"] == pytest.approx(good.metrics["rmse"])
    assert result.challenger.rows == good.metrics.rows
    tags = MlflowClient().get_model_version(name, "1").tags
    assert tags["gate_outcome"] == PROMOTED
    assert float(tags["gate_rmse"]) == pytest.approx(good.metrics["rmse"])
    assert float(tags["gate_max_rmse"]) == PROBLEM.gate_thresholds["max_rmse"]
    assert tags["git_sha"] == "good-sha"
    assert tags["run_id"] == good.run_id
    assert "promoted" in MlflowClient().get_model_version(name, "1").description


def test_worse_challenger_is_registered_but_champion_stays(
    name: str, good: TrainingRun, worse: TrainingRun, frame: DataFrame
) -> None:
    validate_challenger(name, register_challenger(name, good), frame, LOOSE, PROBLEM)
    version = register_challenger(name, worse)

    result = validate_challenger(name, version, frame, LOOSE, PROBLEM)

    assert not result.promoted and result.outcome == REJECTED
    assert (result.compared_champion, result.champion_after) == (1, 1)
    assert result.champion is not None and result.champion["rmse"] == pytest.approx(good.metrics["rmse"])
    assert "margin" in result.reasons[0]
    assert get_aliases(name) == {CHALLENGER: 2, CHAMPION: 1}
    tags = MlflowClient().get_model_version(name, "2").tags
    assert tags["gate_outcome"] == REJECTED
    assert tags["gate_champion_version"] == "1"
    assert float(tags["gate_champion_rmse"]) == pytest.approx(good.metrics["rmse"])
    assert float(tags["gate_rmse"]) > float(tags["gate_champion_rmse"])


def test_threshold_failure_does_not_promote(name: str, good: TrainingRun, frame: DataFrame) -> None:
    version = register_challenger(name, good)

    result = validate_challenger(name, version, frame, config(gate_max_rmse=0.5, gate_min_r2=0.999), PROBLEM)

    assert not result.promoted
    assert result.champion_after is None
    assert [reason.split()[0] for reason in result.reasons] == ["rmse", "r2"]
    assert get_aliases(name) == {CHALLENGER: 1}
    assert "max_rmse 0.5" in MlflowClient().get_model_version(name, "1").tags["gate_reason"]


def test_second_promotion_keeps_previous_champion_and_rollback_restores_it(
    name: str, good: TrainingRun, worse: TrainingRun, frame: DataFrame
) -> None:
    validate_challenger(name, register_challenger(name, worse), frame, LOOSE, PROBLEM)
    result = validate_challenger(name, register_challenger(name, good), frame, LOOSE, PROBLEM)
    assert result.promoted and result.compared_champion == 1
    assert get_aliases(name) == {CHALLENGER: 2, CHAMPION: 2, PREVIOUS_CHAMPION: 1}

    done = rollback(name)

    assert (done.champion, done.rolled_back) == (1, 2)
    assert get_aliases(name) == {CHAMPION: 1, ROLLED_BACK: 2}
    assert MlflowClient().get_model_version(name, "2").tags["rolled_back_to"] == "1"
    with pytest.raises(RollbackError, match="no previous_champion"):
        rollback(name)


def test_revalidating_the_champion_keeps_aliases(name: str, good: TrainingRun, frame: DataFrame) -> None:
    version = register_challenger(name, good)
    validate_challenger(name, version, frame, LOOSE, PROBLEM)

    again = validate_challenger(name, version, frame, LOOSE, PROBLEM)

    assert again.promoted and again.compared_champion is None
    assert get_aliases(name) == {CHALLENGER: 1, CHAMPION: 1}


def test_rollback_with_nothing_to_roll_back_to_is_a_clear_error(
    name: str, good: TrainingRun, frame: DataFrame
) -> None:
    with pytest.raises(RegistryError, match="is not registered"):
        rollback(name)
    version = register_challenger(name, good)
    with pytest.raises(RollbackError, match="has no champion"):
        rollback(name)
    validate_challenger(name, version, frame, LOOSE, PROBLEM)
    with pytest.raises(RollbackError, match="version 1 is the first champion"):
        rollback(name)
    assert get_aliases(name) == {CHALLENGER: 1, CHAMPION: 1}


def test_gate_on_a_missing_version_is_a_clear_error(name: str, good: TrainingRun, frame: DataFrame) -> None:
    register_challenger(name, good)
    with pytest.raises(RegistryError, match=re.escape(f"version 9 of model {name} does not exist")):
        validate_challenger(name, 9, frame, LOOSE, PROBLEM)


def test_validate_task_on_missing_tables_is_a_clear_error(
    platform: LocalPlatform, name: str, good: TrainingRun
) -> None:
    register_challenger(name, good)
    task_config = validate_model.ValidateModelConfig.model_validate(
        {"model_name": name, "schema": "test.nowhere"}
    )
    with pytest.raises(MissingTableError, match=r"trips_clean does not exist.*Run task prepare_data"):
        validate_model.run(platform, task_config)


def test_register_rejects_a_name_that_is_not_three_level(good: TrainingRun) -> None:
    with pytest.raises(ValueError, match=r"catalog\.schema\.model"):
        register_challenger("fare_model", good)


def test_status_lists_versions_with_aliases_metrics_and_gate_outcome(
    name: str, good: TrainingRun, worse: TrainingRun, frame: DataFrame
) -> None:
    validate_challenger(name, register_challenger(name, good), frame, LOOSE, PROBLEM)
    register_challenger(name, worse)

    newest, oldest = model_status(name)

    assert (newest.version, newest.aliases, newest.gate_outcome) == (2, [CHALLENGER], None)
    assert (oldest.version, oldest.aliases, oldest.gate_outcome) == (1, [CHAMPION], PROMOTED)
    assert oldest.metrics["rmse"] == pytest.approx(good.metrics["rmse"])
    assert newest.metrics["rmse"] == pytest.approx(worse.metrics["rmse"])
    assert (oldest.primary_metric, oldest.primary_value) == ("rmse", oldest.metrics["rmse"])
    assert list(oldest.metrics) == ["rmse", "mae", "r2"]
    assert newest.run_id == worse.run_id


def test_train_and_validate_tasks_move_the_aliases(platform: LocalPlatform) -> None:
    schema = f"test.tasks_{uuid.uuid4().hex[:8]}"
    tables = {"schema": schema}
    model_name = f"{schema}.fare_model"
    steps = [
        (
            "prepare_data",
            prepare_data.run,
            prepare_data.PrepareDataConfig,
            {"source_table": "samples.nyctaxi.trips", **tables},
        ),
        ("features", features.run, features.FeaturesConfig, tables),
        (
            "train",
            train.run,
            train.TrainConfig,
            {
                **tables,
                "experiment_name": EXPERIMENT,
                "model_name": model_name,
                "bundle_target": "test",
                "job_run_id": "7",
                "training_params": '{"n_estimators": 30, "num_leaves": 15, "learning_rate": 0.2}',
            },
        ),
        (
            "validate",
            validate_model.run,
            validate_model.ValidateModelConfig,
            {**tables, "model_name": model_name},
        ),
    ]
    for _, run_task, config_type, parameters in steps:
        run_task(platform, config_type.model_validate(parameters))

    assert get_aliases(model_name) == {CHALLENGER: 1, CHAMPION: 1}
    run = MlflowClient().get_run(model_status(model_name)[0].run_id)
    assert run.data.tags["job_run_id"] == "7"


def test_model_cli_status_and_rollback(
    platform: LocalPlatform, frame: DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    bundle = load_bundle(find_bundle_root())
    name = pipeline_names(bundle).model_name
    cli = CliRunner()
    try:
        missing = cli.invoke(model_app, ["status", "-t", bundle.target])
        assert missing.exit_code == 2
        assert "is not registered" in missing.output

        target_store = LocalPlatform(bundle.target, tmp_path)
        context = RunContext("c.s.trips", PROBLEM.feature_table_names("c.s"), bundle.target, "1")
        trained = train_model(frame, config(**FAST), PROBLEM)
        logged = log_training_run(target_store.experiment_id(EXPERIMENT), trained, context)
        for _ in range(2):
            validate_challenger(name, register_challenger(name, logged), frame, LOOSE, PROBLEM)

        status = cli.invoke(model_app, ["status", "-t", bundle.target])
        assert status.exit_code == 0, status.output
        assert name in status.output
        assert PREVIOUS_CHAMPION in status.output
        assert "version 2 promoted: passed the thresholds and is no worse than champion" in status.output

        rolled = cli.invoke(model_app, ["rollback", "-t", bundle.target])
        assert rolled.exit_code == 0, rolled.output
        assert "champion is version 1 again" in rolled.output
        assert get_aliases(name) == {CHAMPION: 1, ROLLED_BACK: 2}

        again = cli.invoke(model_app, ["rollback", "-t", bundle.target])
        assert again.exit_code == 2
        assert "no previous_champion" in again.output
    finally:
        platform.configure_mlflow()
