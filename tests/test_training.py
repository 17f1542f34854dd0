"""The generic training side, problem-independent: training parameters, task arguments, metrics and
the gate's decision rule. The problem here is the churn classifier of tests/churn."""

from __future__ import annotations

import numpy as np
import pytest

from churn_example.spec import PROBLEM as CHURN
from mlops_template.problem_spec import PROBLEM_VARIABLE, ProblemSpecError, TaskType
from mlops_template.registry.experiment import EXPERIMENT
from mlops_template.registry.gate import gate_decision
from mlops_template.registry.versions import PROMOTED, REJECTED
from mlops_template.tasks.common import TaskArgumentError, build_config
from mlops_template.tasks.train import TrainConfig
from mlops_template.training.config import TrainingConfig, TrainingConfigError
from mlops_template.training.evaluate import Metrics, evaluate

CHURN_REFERENCE = "churn_example.spec:PROBLEM"


def test_overrides_are_flat_keys_over_the_problems_defaults() -> None:
    config = TrainingConfig.from_json('{"C": 0.5, "gate_min_roc_auc": 0.7, "test_size": 0.3}', CHURN)
    assert (config.model_params.C, config.model_params.max_iter) == (0.5, 200)
    assert config.gate_thresholds == {"min_roc_auc": 0.7, "max_brier": 0.3}
    assert config.test_size == 0.3
    assert TrainingConfig.from_json("", CHURN) == TrainingConfig.from_json("{}", CHURN)
    assert TrainingConfig.defaults(CHURN).gate_thresholds == dict(CHURN.gate_thresholds)
    assert config.as_parameters()["gate_min_roc_auc"] == 0.7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"c": 5}', r"unknown training parameter\(s\) \['c'\] \(known: test_size, .*gate_min_roc_auc"),
        ('{"gate_max_rmse": 5}', r"unknown .*'gate_max_rmse'"),  # not a metric of classification
        ('{"max_iter": 0}', "max_iter: Input should be greater than or equal to 1"),
        ('{"gate_min_accuracy": "high"}', "gate_min_accuracy: Input should be a valid number"),
        ('{"test_size": 1}', "test_size"),
        ("[1, 2]", "must be a JSON object"),
        ("{C: 5}", "not valid JSON"),
    ],
)
def test_bad_training_params_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(TrainingConfigError, match=message):
        TrainingConfig.from_json(text, CHURN)


def test_task_parameters_parse_training_params_for_the_problem_in_mlops_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROBLEM_VARIABLE, CHURN_REFERENCE)
    args = [
        "--schema=c.s",
        "--experiment-name=/Shared/x",
        "--model-name=c.s.churn_model",
        "--bundle-target=dev",
        "--job-run-id=42",
    ]
    config = build_config(TrainConfig, [*args, '--training-params={"C": 2}'])
    assert config.training_params.model_params.C == 2
    assert build_config(TrainConfig, args).training_params == TrainingConfig.defaults(CHURN)
    with pytest.raises(
        TaskArgumentError, match=r"--training-params.*unknown training parameter\(s\) \['Cee'\]"
    ):
        build_config(TrainConfig, [*args, '--training-params={"Cee": 7}'])
    with pytest.raises(TaskArgumentError, match=r"--model-name.*three-level"):
        build_config(TrainConfig, [*args[:2], "--model-name=churn_model", *args[3:]])


def test_a_spec_with_a_metric_of_another_task_type_is_refused() -> None:
    with pytest.raises(ProblemSpecError, match=r"primary_metric 'rmse' is not one of .*roc_auc.*max_r2"):
        CHURN.__class__(**{**vars(CHURN), "primary_metric": "rmse", "gate_thresholds": {"max_r2": 1.0}})
    assert CHURN.task_type == TaskType.BINARY_CLASSIFICATION


def test_classification_metrics_score_probabilities_and_accuracy_at_the_threshold() -> None:
    actual = np.array([0, 0, 1, 1])
    metrics = evaluate(CHURN, actual, np.array([0.1, 0.6, 0.4, 0.9]))
    assert list(metrics.values) == ["roc_auc", "log_loss", "brier", "accuracy"]
    assert metrics["roc_auc"] == 0.75
    assert metrics["accuracy"] == 0.5  # 0.6 and 0.4 fall on the wrong side of 0.5
    assert metrics["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    with pytest.raises(ValueError, match="both classes"):
        evaluate(CHURN, np.array([1, 1]), np.array([0.2, 0.9]))


def _metrics(**values: float) -> Metrics:
    return Metrics(values, rows=100)


# Margin 10%, clearly better from 5%: against a champion's 0.80, a higher-is-better metric
# (ROC AUC) is rejected below 0.72 and promoted from 0.84; a lower-is-better one (Brier 0.20) is
# rejected above 0.22 and promoted from 0.19. In between: an experiment, unless the policy is replace.
BANDS = {"gate_promotion_margin": 0.1, "gate_min_improvement": 0.05, "gate_max_brier": 1.0}
CHAMPION_METRICS = {"roc_auc": 0.8, "brier": 0.2}


@pytest.mark.parametrize(
    ("metric", "value", "replace", "live"),
    [
        ("roc_auc", 0.71, REJECTED, REJECTED),
        ("roc_auc", 0.73, PROMOTED, EXPERIMENT),
        ("roc_auc", 0.83, PROMOTED, EXPERIMENT),
        ("roc_auc", 0.85, PROMOTED, PROMOTED),
        ("brier", 0.23, REJECTED, REJECTED),
        ("brier", 0.21, PROMOTED, EXPERIMENT),
        ("brier", 0.195, PROMOTED, EXPERIMENT),
        ("brier", 0.18, PROMOTED, PROMOTED),
    ],
)
def test_the_gate_has_three_outcomes_in_the_metrics_direction(
    metric: str, value: float, replace: str, live: str
) -> None:
    """Would catch a flipped direction (a lower ROC AUC promoted), an experiment under replace, or
    a clearly better challenger held back in a live experiment."""
    config = TrainingConfig.from_overrides(BANDS, CHURN)
    champion = _metrics(**CHAMPION_METRICS)
    challenger = _metrics(**{**CHAMPION_METRICS, metric: value})
    outcomes = {
        policy: gate_decision(challenger, champion, config, metric, policy).outcome
        for policy in ("replace", "canary", "ab_test")
    }
    assert outcomes == {"replace": replace, "canary": live, "ab_test": live}


def test_the_gate_says_why() -> None:
    config = TrainingConfig.from_overrides(BANDS, CHURN)
    champion = _metrics(**CHAMPION_METRICS)

    (worse,) = gate_decision(_metrics(roc_auc=0.71, brier=0.2), champion, config, "roc_auc", "canary").reasons
    assert "roc_auc 0.710 against the champion's 0.800: worse by more than the 10.0% margin" in worse
    assert "at least 0.720 passes" in worse
    (within,) = gate_decision(_metrics(roc_auc=0.8, brier=0.21), champion, config, "brier", "ab_test").reasons
    assert "within the 10.0% margin but not better by the 5.0% needed" in within and "at most 0.190" in within
    assert within.endswith("rollout ab_test tries it live beside the champion")
    (replaced,) = gate_decision(
        _metrics(roc_auc=0.8, brier=0.21), champion, config, "brier", "replace"
    ).reasons
    assert replaced.endswith("rollout replace promotes it")
    first = gate_decision(_metrics(roc_auc=0.6, brier=0.2), None, config, "roc_auc", "canary")
    assert (first.outcome, first.reasons) == (
        PROMOTED,
        ("passed the thresholds; no other champion to compare with",),
    )


def test_the_gate_rejects_on_each_threshold_it_fails_whatever_the_policy() -> None:
    config = TrainingConfig.from_overrides({"gate_min_roc_auc": 0.9, "gate_max_brier": 0.1}, CHURN)
    for policy in ("replace", "canary", "ab_test"):
        decision = gate_decision(_metrics(roc_auc=0.85, brier=0.2), None, config, "roc_auc", policy)
        assert decision.outcome == REJECTED
        assert decision.reasons == ("roc_auc 0.850 below min_roc_auc 0.9", "brier 0.200 above max_brier 0.1")


def test_the_clearly_better_bound_is_a_training_parameter() -> None:
    assert TrainingConfig.defaults(CHURN).gate_min_improvement == 0.01
    config = TrainingConfig.from_json('{"gate_min_improvement": 0.2}', CHURN)
    assert config.as_parameters()["gate_min_improvement"] == 0.2
    with pytest.raises(
        TrainingConfigError, match="gate_min_improvement: Input should be greater than or equal to 0"
    ):
        TrainingConfig.from_json('{"gate_min_improvement": -0.1}', CHURN)
