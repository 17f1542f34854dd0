"""Registry on the real local MLflow store: challenger / champion aliases, the gate, rollback, tasks.

The problem is the churn classifier of tests/churn: the gate compares ROC AUC (higher is better)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from typer.testing import CliRunner

from churn_example.spec import PROBLEM
from mlops_laptop.bundle.loader import find_bundle_root, load_bundle
from mlops_laptop.pipeline_names import pipeline_names
from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.registry.cli import model_app
from mlops_template.platform import MissingTableError
from mlops_template.problem_spec import PROBLEM_VARIABLE
from mlops_template.registry.experiment import EXPERIMENT as EXPERIMENT_OUTCOME
from mlops_template.registry.experiment import Experiment, running_experiment
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
    set_version_tags,
)
from mlops_template.tasks import train, validate_model
from mlops_template.training.config import TrainingConfig
from mlops_template.training.dataset import build_training_set
from mlops_template.training.model import train_model
from mlops_template.training.tracking import RunContext, TrainingRun, log_training_run


def config(**overrides: object) -> TrainingConfig:
    """The churn spec's training config with flat `overrides` (as the job parameter gives them)."""
    return TrainingConfig.from_overrides(overrides, PROBLEM)


# Thresholds nothing fails: only the comparison with the champion can reject.
LOOSE = config(gate_min_roc_auc=0.0, gate_max_brier=1.0)
DEFAULTS = config()
EXPERIMENT = "/Shared/test-registry"
CHURN_REFERENCE = "churn_example.spec:PROBLEM"  # for $MLOPS_PROBLEM
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frame(platform: LocalPlatform, churn_schema: str) -> DataFrame:
    """The churn training set (prepared events joined with their activity features), cached."""
    events = platform.read_table(PROBLEM.prepared_table_name(churn_schema))
    return build_training_set(platform, PROBLEM, events, churn_schema).cache()


def _log(platform: LocalPlatform, frame: DataFrame, training: TrainingConfig) -> TrainingRun:
    context = RunContext("test.churn.events", PROBLEM.feature_table_names("test.f"), "test", "run-1")
    return log_training_run(
        platform.experiment_id(EXPERIMENT), train_model(frame, training, PROBLEM), context
    )


@pytest.fixture(scope="module")
def good(platform: LocalPlatform, frame: DataFrame) -> Iterator[TrainingRun]:
    """A logged model, registered under a new name by each test that needs it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIT_SHA", "good-sha")
        yield _log(platform, frame, DEFAULTS)


@pytest.fixture(scope="module")
def worse(platform: LocalPlatform, frame: DataFrame) -> Iterator[TrainingRun]:
    """A model of the same spec trained on seeded coin-flip labels: no signal, ROC AUC near 0.5."""
    coin_flips = F.pmod(F.xxhash64(PROBLEM.row_id, F.lit(3)), F.lit(2)).cast("int")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIT_SHA", "worse-sha")
        yield _log(platform, frame.withColumn(PROBLEM.label, coin_flips), DEFAULTS)


@pytest.fixture
def name(platform: LocalPlatform) -> str:
    platform.configure_mlflow()
    return f"test.reg_{uuid.uuid4().hex[:10]}.model"


def test_first_challenger_becomes_champion(name: str, good: TrainingRun, frame: DataFrame) -> None:
    version = register_challenger(name, good)
    assert version == 1
    assert get_aliases(name) == {CHALLENGER: 1}

    result = validate_challenger(name, version, frame, DEFAULTS, PROBLEM)

    assert result.promoted and result.outcome == PROMOTED
    assert (result.compared_champion, result.champion_after) == (None, 1)
    assert get_aliases(name) == {CHALLENGER: 1, CHAMPION: 1}
    # The gate's own held-out rows are the training split's: the same metrics as at training.
    assert result.challenger["roc_auc"] == pytest.approx(good.metrics["roc_auc"])
    assert result.challenger.rows == good.metrics.rows
    tags = MlflowClient().get_model_version(name, "1").tags
    assert tags["gate_outcome"] == PROMOTED
    assert float(tags["gate_roc_auc"]) == pytest.approx(good.metrics["roc_auc"])
    assert float(tags["gate_min_roc_auc"]) == PROBLEM.gate_thresholds["min_roc_auc"]
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
    assert result.champion is not None
    assert result.champion["roc_auc"] == pytest.approx(good.metrics["roc_auc"])
    assert "margin" in result.reasons[0]
    assert get_aliases(name) == {CHALLENGER: 2, CHAMPION: 1}
    tags = MlflowClient().get_model_version(name, "2").tags
    assert tags["gate_outcome"] == REJECTED
    assert tags["gate_champion_version"] == "1"
    assert float(tags["gate_champion_roc_auc"]) == pytest.approx(good.metrics["roc_auc"])
    assert float(tags["gate_roc_auc"]) < float(tags["gate_champion_roc_auc"])  # higher is better


def test_threshold_failure_does_not_promote(name: str, good: TrainingRun, frame: DataFrame) -> None:
    version = register_challenger(name, good)

    strict = config(gate_min_roc_auc=0.999, gate_max_brier=0.001)
    result = validate_challenger(name, version, frame, strict, PROBLEM)

    assert not result.promoted
    assert result.champion_after is None
    assert [reason.split()[0] for reason in result.reasons] == ["roc_auc", "brier"]
    assert get_aliases(name) == {CHALLENGER: 1}
    assert "min_roc_auc 0.999" in MlflowClient().get_model_version(name, "1").tags["gate_reason"]


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


@pytest.mark.parametrize("rollout", ["canary", "ab_test"])
def test_a_challenger_not_clearly_better_is_an_experiment_under_a_live_policy(
    name: str, good: TrainingRun, frame: DataFrame, rollout: str
) -> None:
    """The same model registered twice: equal metrics, within the margin but not 1% better."""
    validate_challenger(name, register_challenger(name, good), frame, LOOSE, PROBLEM, rollout=rollout)
    version = register_challenger(name, good)

    result = validate_challenger(name, version, frame, LOOSE, PROBLEM, rollout=rollout)

    assert (result.outcome, result.promoted, result.champion_after) == (EXPERIMENT_OUTCOME, False, 1)
    assert get_aliases(name) == {CHALLENGER: 2, CHAMPION: 1}
    assert running_experiment(name) == Experiment(name, champion=1, challenger=2, started_at=None)
    version_2 = MlflowClient().get_model_version(name, "2")
    assert (version_2.tags["gate_outcome"], version_2.tags["gate_rollout"]) == (EXPERIMENT_OUTCOME, rollout)
    assert version_2.tags["gate_min_improvement"] == "0.01"
    assert version_2.description.startswith("Validation gate: experiment (passed the thresholds; roc_auc")
    assert f"rollout {rollout} tries it live beside the champion" in version_2.description


def test_under_replace_the_same_challenger_is_promoted(
    name: str, good: TrainingRun, frame: DataFrame
) -> None:
    validate_challenger(name, register_challenger(name, good), frame, LOOSE, PROBLEM, rollout="replace")

    result = validate_challenger(
        name, register_challenger(name, good), frame, LOOSE, PROBLEM, rollout="replace"
    )

    assert result.outcome == PROMOTED and "rollout replace promotes it" in result.reasons[0]
    assert get_aliases(name) == {CHALLENGER: 2, CHAMPION: 2, PREVIOUS_CHAMPION: 1}
    assert running_experiment(name) is None


@pytest.mark.parametrize("rollout", ["replace", "canary", "ab_test"])
def test_clearly_better_is_promoted_and_worse_rejected_under_every_policy(
    name: str, good: TrainingRun, worse: TrainingRun, frame: DataFrame, rollout: str
) -> None:
    validate_challenger(name, register_challenger(name, worse), frame, LOOSE, PROBLEM, rollout=rollout)
    better = validate_challenger(
        name, register_challenger(name, good), frame, LOOSE, PROBLEM, rollout=rollout
    )
    assert better.outcome == PROMOTED and "better by the 1.0% needed" in better.reasons[0]

    rejected = validate_challenger(
        name, register_challenger(name, worse), frame, LOOSE, PROBLEM, rollout=rollout
    )

    assert rejected.outcome == REJECTED
    assert get_aliases(name) == {CHALLENGER: 3, CHAMPION: 2, PREVIOUS_CHAMPION: 1}
    assert running_experiment(name) is None


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
    platform: LocalPlatform, name: str, good: TrainingRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PROBLEM_VARIABLE, CHURN_REFERENCE)
    register_challenger(name, good)
    task_config = validate_model.ValidateModelConfig.model_validate(
        {"model_name": name, "schema": "test.nowhere"}
    )
    with pytest.raises(MissingTableError, match=r"churn_events does not exist.*Run task prepare_data"):
        validate_model.run(platform, task_config)


def test_register_rejects_a_name_that_is_not_three_level(good: TrainingRun) -> None:
    with pytest.raises(ValueError, match=r"catalog\.schema\.model"):
        register_challenger("model", good)


def test_status_lists_versions_with_aliases_metrics_and_gate_outcome(
    name: str, good: TrainingRun, worse: TrainingRun, frame: DataFrame
) -> None:
    validate_challenger(name, register_challenger(name, good), frame, LOOSE, PROBLEM)
    register_challenger(name, worse)

    newest, oldest = model_status(name, spec=PROBLEM)

    assert (newest.version, newest.aliases, newest.gate_outcome) == (2, [CHALLENGER], None)
    assert (oldest.version, oldest.aliases, oldest.gate_outcome) == (1, [CHAMPION], PROMOTED)
    assert oldest.metrics["roc_auc"] == pytest.approx(good.metrics["roc_auc"])
    assert newest.metrics["roc_auc"] == pytest.approx(worse.metrics["roc_auc"])
    assert (oldest.primary_metric, oldest.primary_value) == ("roc_auc", oldest.metrics["roc_auc"])
    assert list(oldest.metrics) == ["roc_auc", "log_loss", "brier", "accuracy"]
    assert newest.run_id == worse.run_id


def test_train_and_validate_tasks_move_the_aliases(
    platform: LocalPlatform, churn_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The train and validate_model tasks over the prepared and feature tables of the pipeline."""
    monkeypatch.setenv(PROBLEM_VARIABLE, CHURN_REFERENCE)
    model_name = f"{churn_schema}.tasks_{uuid.uuid4().hex[:8]}"
    tables = {"schema": churn_schema}
    steps = [
        (
            train.run,
            train.TrainConfig,
            {
                **tables,
                "experiment_name": EXPERIMENT,
                "model_name": model_name,
                "bundle_target": "test",
                "job_run_id": "7",
                "training_params": '{"C": 0.5, "max_iter": 300}',
            },
        ),
        (validate_model.run, validate_model.ValidateModelConfig, {**tables, "model_name": model_name}),
    ]
    for run_task, config_type, parameters in steps:
        run_task(platform, config_type.model_validate(parameters))

    assert get_aliases(model_name) == {CHALLENGER: 1, CHAMPION: 1}
    run = MlflowClient().get_run(model_status(model_name, spec=PROBLEM)[0].run_id)
    assert run.data.tags["job_run_id"] == "7"
    assert run.data.params["C"] == "0.5"


def test_model_cli_status_shows_each_versions_gate_outcome_and_why(
    platform: LocalPlatform, frame: DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(`mlops model rollback` runs the rollout job: tests/test_rollout_job.py; `rollback` is above.)"""
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv(PROBLEM_VARIABLE, CHURN_REFERENCE)
    monkeypatch.setenv("COLUMNS", "160")  # the status table: four metric columns and the aliases
    bundle = load_bundle(find_bundle_root())
    name = pipeline_names(bundle).model_name
    cli = CliRunner()
    try:
        missing = cli.invoke(model_app, ["status", "-t", bundle.target])
        assert missing.exit_code == 2
        assert "is not registered" in missing.output

        target_store = LocalPlatform(bundle.target, tmp_path)
        context = RunContext("c.s.events", PROBLEM.feature_table_names("c.s"), bundle.target, "1")
        trained = train_model(frame, DEFAULTS, PROBLEM)
        logged = log_training_run(target_store.experiment_id(EXPERIMENT), trained, context)
        for rollout in ("replace", "replace", "canary"):
            validate_challenger(
                name, register_challenger(name, logged), frame, LOOSE, PROBLEM, rollout=rollout
            )

        set_version_tags(name, 3, {"rollout_outcome": "rolled_back", "rollout_reason": "worse: +1.3"})
        status = cli.invoke(model_app, ["status", "-t", bundle.target])
        assert status.exit_code == 0, status.output
        assert "version 3 rolled_back: worse: +1.3" in status.output  # how its live experiment ended
        assert name in status.output
        assert "roc_auc" in status.output  # the problem's metrics
        assert PREVIOUS_CHAMPION in status.output
        assert "version 2 promoted: passed the thresholds; roc_auc" in status.output
        assert "version 3 experiment: passed the thresholds; roc_auc" in status.output
        assert get_aliases(name) == {CHAMPION: 2, PREVIOUS_CHAMPION: 1, CHALLENGER: 3}
    finally:
        platform.configure_mlflow()
