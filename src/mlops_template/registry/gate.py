"""The validation gate: promote the challenger to champion only if it is good enough.

The challenger must pass the absolute thresholds (`min_<metric>` / `max_<metric>` over the task
type's metrics, e.g. `max_rmse`) and, when there is a champion, have a primary metric at most
`gate_promotion_margin` (relative) worse than the champion's: above it for a lower-is-better
metric (RMSE, log loss), below it for a higher-is-better one (R², ROC AUC). Both models are
loaded from the registry and evaluated here on the same held-out rows, which the gate builds
itself with the training split (a hash of the row id): neither was trained on them, whatever run
trained the champion, as long as `test_size` is unchanged.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow import MlflowClient
from pyspark.sql import DataFrame

from mlops_template.problem_spec import HIGHER_IS_BETTER, ProblemSpec
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
class GateResult:
    """The gate's decision on one challenger version and the metrics it compared."""

    model_name: str
    version: int
    promoted: bool
    reasons: tuple[str, ...]
    challenger: Metrics
    compared_champion: int | None  # the champion it was compared with; None when there was none
    champion: Metrics | None
    champion_after: int | None  # the champion once the gate has run

    @property
    def outcome(self) -> str:
        return PROMOTED if self.promoted else REJECTED


def gate_failures(
    challenger: Metrics, champion: Metrics | None, config: TrainingConfig, primary_metric: str
) -> list[str]:
    """Why the challenger may not be promoted; empty when it may."""
    failures = []
    for name, bound in config.gate_thresholds.items():
        kind, metric = name.split("_", 1)
        value = challenger[metric]
        if (kind == "max" and value > bound) or (kind == "min" and value < bound):
            failures.append(f"{metric} {value:.3f} {'above' if kind == 'max' else 'below'} {name} {bound:g}")
    if champion is not None:
        margin = config.gate_promotion_margin
        best, value = champion[primary_metric], challenger[primary_metric]
        higher_is_better = primary_metric in HIGHER_IS_BETTER
        allowed = best - margin * abs(best) if higher_is_better else best + margin * abs(best)
        if (value < allowed) if higher_is_better else (value > allowed):
            failures.append(
                f"{primary_metric} {value:.3f} worse than the champion's {best:.3f} by more than the "
                f"{margin:.1%} margin (at {'least' if higher_is_better else 'most'} {allowed:.3f})"
            )
    return failures


def evaluation_frame(training_set: DataFrame, spec: ProblemSpec, test_size: float) -> pd.DataFrame:
    """The held-out rows of the training set, as model inputs and label."""
    return to_model_frame(training_set.where(is_holdout(test_size, spec.row_id)), spec)


def evaluate_version(model_name: str, version: int, frame: pd.DataFrame, spec: ProblemSpec) -> Metrics:
    """Metrics of a registered version on `frame`, loaded and run as serving would (pyfunc)."""
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    predicted = predictions(spec, model.predict(frame[spec.input_names]))
    return evaluate(spec, frame[spec.label].to_numpy(), predicted)


def validate_challenger(
    model_name: str, version: int, training_set: DataFrame, config: TrainingConfig, spec: ProblemSpec
) -> GateResult:
    """Evaluate `version` (and the champion) on held-out rows; promote `version` if it passes."""
    get_version(model_name, version)
    champion_version = get_aliases(model_name).get(CHAMPION)
    compared = None if champion_version == version else champion_version
    frame = evaluation_frame(training_set, spec, config.test_size)
    challenger = evaluate_version(model_name, version, frame, spec)
    champion = evaluate_version(model_name, compared, frame, spec) if compared is not None else None
    failures = gate_failures(challenger, champion, config, spec.primary_metric)
    if not failures:
        promote(model_name, version)
    result = GateResult(
        model_name=model_name,
        version=version,
        promoted=not failures,
        reasons=tuple(failures) or (_pass_reason(compared),),
        challenger=challenger,
        compared_champion=compared,
        champion=champion,
        champion_after=version if not failures else champion_version,
    )
    _record(result, config)
    log.info("gate %s version %d of %s: %s", result.outcome, version, model_name, "; ".join(result.reasons))
    return result


def _pass_reason(compared: int | None) -> str:
    if compared is None:
        return "passed the thresholds; no other champion to compare with"
    return f"passed the thresholds and is no worse than champion version {compared} within the margin"


def _record(result: GateResult, config: TrainingConfig) -> None:
    """Write the outcome, thresholds and compared metrics on the challenger version."""
    tags: dict[str, object] = {
        GATE_OUTCOME_TAG: result.outcome,
        "gate_reason": "; ".join(result.reasons),
        "gate_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **{GATE_PREFIX + name: bound for name, bound in config.gate_thresholds.items()},
        "gate_promotion_margin": config.gate_promotion_margin,
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
