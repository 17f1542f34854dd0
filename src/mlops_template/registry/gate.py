"""The validation gate: decide whether the challenger replaces the champion, is tried live, or not.

Three outcomes, recorded on the version as tag `gate_outcome` (and in its description, with why):

- `rejected`: it fails an absolute threshold (`min_<metric>` / `max_<metric>` over the task type's
  metrics, e.g. `max_rmse`), or its primary metric is worse than the champion's by more than
  `gate_promotion_margin` (relative);
- `promoted` (it becomes `champion`): there is no champion yet, or its primary metric is better
  than the champion's by at least `gate_min_improvement` (relative);
- in between (within the margin, not clearly better): `experiment` under the rollout policies
  `canary` and `ab_test` (it keeps `challenger` and the deploy task serves it beside the champion
  until the rollout job decides), `promoted` under `replace`.

"Better" follows the metric's direction: lower for RMSE or log loss, higher for R² or ROC AUC.
Both models are loaded from the registry and evaluated here on the same held-out rows, which the
gate builds itself with the training split (a hash of the row id): neither was trained on them,
whatever run trained the champion, as long as `test_size` is unchanged.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import pandas as pd
from mlflow import MlflowClient
from pyspark.sql import DataFrame

from mlops_template.platform.feature_store import load_model_over_features
from mlops_template.problem_spec import HIGHER_IS_BETTER, ProblemSpec
from mlops_template.registry.experiment import EXPERIMENT, RolloutPolicy
from mlops_template.registry.versions import (
    CHAMPION,
    GATE_OUTCOME_TAG,
    PROMOTED,
    REJECTED,
    get_aliases,
    get_version,
    promote,
    set_version_tags,
)
from mlops_template.training.config import GATE_PREFIX, TrainingConfig
from mlops_template.training.evaluate import Metrics, evaluate, is_holdout, predictions
from mlops_template.training.model import to_model_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    """An outcome (`promoted`, `rejected` or `experiment`) and why."""

    outcome: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class GateResult:
    """The gate's decision on one challenger version and the metrics it compared."""

    model_name: str
    version: int
    outcome: str  # PROMOTED, REJECTED or EXPERIMENT
    reasons: tuple[str, ...]
    rollout: RolloutPolicy
    challenger: Metrics
    compared_champion: int | None  # the champion it was compared with; None when there was none
    champion: Metrics | None
    champion_after: int | None  # the champion once the gate has run

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTED


def threshold_failures(challenger: Metrics, config: TrainingConfig) -> list[str]:
    """Each absolute threshold the challenger fails, said with its value and bound."""
    failures = []
    for name, bound in config.gate_thresholds.items():
        kind, metric = name.split("_", 1)
        value = challenger[metric]
        if (kind == "max" and value > bound) or (kind == "min" and value < bound):
            failures.append(f"{metric} {value:.3f} {'above' if kind == 'max' else 'below'} {name} {bound:g}")
    return failures


def gate_decision(
    challenger: Metrics,
    champion: Metrics | None,
    config: TrainingConfig,
    primary_metric: str,
    rollout: RolloutPolicy,
) -> GateDecision:
    """The gate's rule (see the module docstring) on the challenger's and the champion's metrics."""
    failures = threshold_failures(challenger, config)
    if failures:
        return GateDecision(REJECTED, tuple(failures))
    if champion is None:
        return GateDecision(PROMOTED, ("passed the thresholds; no other champion to compare with",))
    best, value = champion[primary_metric], challenger[primary_metric]
    sign = 1.0 if primary_metric in HIGHER_IS_BETTER else -1.0  # +1: higher is better
    margin, improvement = config.gate_promotion_margin, config.gate_min_improvement
    allowed = best - sign * margin * abs(best)  # the worst value that still passes
    needed = best + sign * improvement * abs(best)  # the value that is clearly better
    side = "at least" if sign > 0 else "at most"
    compared = f"{primary_metric} {value:.3f} against the champion's {best:.3f}"
    if sign * (value - allowed) < 0:
        worse = f"{compared}: worse by more than the {margin:.1%} margin ({side} {allowed:.3f} passes)"
        return GateDecision(REJECTED, (worse,))
    passed = f"passed the thresholds; {compared}"
    if sign * (value - needed) >= 0:
        better = f"{passed}: better by the {improvement:.1%} needed ({side} {needed:.3f})"
        return GateDecision(PROMOTED, (better,))
    within = (
        f"{passed}: within the {margin:.1%} margin but not better by the {improvement:.1%} "
        f"needed to promote outright ({side} {needed:.3f})"
    )
    if rollout == "replace":
        return GateDecision(PROMOTED, (f"{within}; rollout replace promotes it",))
    return GateDecision(EXPERIMENT, (f"{within}; rollout {rollout} tries it live beside the champion",))


def evaluation_frame(training_set: DataFrame, spec: ProblemSpec, test_size: float) -> pd.DataFrame:
    """The held-out rows of the training set, as model inputs and label."""
    return to_model_frame(training_set.where(is_holdout(test_size, spec.row_id)), spec)


def evaluate_version(model_name: str, version: int, frame: pd.DataFrame, spec: ProblemSpec) -> Metrics:
    """Metrics of a registered version on `frame`, loaded and run as serving would (pyfunc)."""
    model = load_model_over_features(f"models:/{model_name}/{version}")
    predicted = predictions(spec, model.predict(frame[spec.input_names]))
    return evaluate(spec, frame[spec.label].to_numpy(), predicted)


def validate_challenger(
    model_name: str,
    version: int,
    training_set: DataFrame,
    config: TrainingConfig,
    spec: ProblemSpec,
    rollout: RolloutPolicy = "replace",
) -> GateResult:
    """Evaluate `version` (and the champion) on held-out rows; promote `version` if the gate says so."""
    get_version(model_name, version)
    champion_version = get_aliases(model_name).get(CHAMPION)
    compared = None if champion_version == version else champion_version
    frame = evaluation_frame(training_set, spec, config.test_size)
    challenger = evaluate_version(model_name, version, frame, spec)
    champion = evaluate_version(model_name, compared, frame, spec) if compared is not None else None
    decision = gate_decision(challenger, champion, config, spec.primary_metric, rollout)
    if decision.outcome == PROMOTED:
        promote(model_name, version)
    result = GateResult(
        model_name=model_name,
        version=version,
        outcome=decision.outcome,
        reasons=decision.reasons,
        rollout=rollout,
        challenger=challenger,
        compared_champion=compared,
        champion=champion,
        champion_after=version if decision.outcome == PROMOTED else champion_version,
    )
    _record(result, config)
    log.info("gate %s version %d of %s: %s", result.outcome, version, model_name, "; ".join(result.reasons))
    return result


def _record(result: GateResult, config: TrainingConfig) -> None:
    """Write the outcome, thresholds and compared metrics on the challenger version."""
    tags: dict[str, object] = {
        GATE_OUTCOME_TAG: result.outcome,
        "gate_reason": "; ".join(result.reasons),
        "gate_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **{GATE_PREFIX + name: bound for name, bound in config.gate_thresholds.items()},
        "gate_promotion_margin": config.gate_promotion_margin,
        "gate_min_improvement": config.gate_min_improvement,
        "gate_rollout": result.rollout,
        **result.challenger.as_dict(GATE_PREFIX),
    }
    if result.champion is not None:
        tags["gate_champion_version"] = result.compared_champion
        tags.update(result.champion.as_dict("gate_champion_"))
    set_version_tags(result.model_name, result.version, tags)
    compared = (
        f" Champion version {result.compared_champion}: {result.champion.describe()}."
        if result.champion is not None
        else ""
    )
    description = (
        f"Validation gate: {result.outcome} ({'; '.join(result.reasons)}). "
        f"On {result.challenger.rows} held-out rows: {result.challenger.describe()}.{compared}"
    )
    MlflowClient().update_model_version(result.model_name, str(result.version), description=description)
