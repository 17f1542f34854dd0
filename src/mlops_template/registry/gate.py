"""The validation gate: promote the challenger to champion only if it is good enough.

The challenger must pass the absolute thresholds (`max_rmse`, `min_r2`) and, when there is a
champion, have an RMSE at most `promotion_margin` (relative) above the champion's. Both models
are loaded from the registry and evaluated here on the same held-out rows, which the gate builds
itself with the training split (a hash of trip_id): neither was trained on them, whatever run
trained the champion, as long as `test_size` is unchanged.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from pyspark.sql import DataFrame

from mlops_template.features.columns import LABEL, MODEL_INPUT_COLUMNS
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
from mlops_template.training.config import TrainingConfig
from mlops_template.training.evaluate import RegressionMetrics, is_holdout, regression_metrics
from mlops_template.training.model import to_model_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateResult:
    """The gate's decision on one challenger version and the metrics it compared."""

    model_name: str
    version: int
    promoted: bool
    reasons: tuple[str, ...]
    challenger: RegressionMetrics
    compared_champion: int | None  # the champion it was compared with; None when there was none
    champion: RegressionMetrics | None
    champion_after: int | None  # the champion once the gate has run

    @property
    def outcome(self) -> str:
        return PROMOTED if self.promoted else REJECTED


def gate_failures(
    challenger: RegressionMetrics, champion: RegressionMetrics | None, config: TrainingConfig
) -> list[str]:
    """Why the challenger may not be promoted; empty when it may."""
    failures = []
    if challenger.rmse > config.max_rmse:
        failures.append(f"RMSE {challenger.rmse:.3f} above max_rmse {config.max_rmse:g}")
    if challenger.r2 < config.min_r2:
        failures.append(f"R2 {challenger.r2:.3f} below min_r2 {config.min_r2:g}")
    if champion is not None:
        allowed = champion.rmse * (1 + config.promotion_margin)
        if challenger.rmse > allowed:
            failures.append(
                f"RMSE {challenger.rmse:.3f} worse than the champion's {champion.rmse:.3f} by more than "
                f"the {config.promotion_margin:.1%} margin (at most {allowed:.3f})"
            )
    return failures


def evaluation_frame(training_set: DataFrame, test_size: float) -> pd.DataFrame:
    """The held-out rows of the training set, as model inputs and label."""
    return to_model_frame(training_set.where(is_holdout(test_size)))


def evaluate_version(model_name: str, version: int, frame: pd.DataFrame) -> RegressionMetrics:
    """Metrics of a registered version on `frame`, loaded and run as serving would (pyfunc)."""
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    predicted = np.asarray(model.predict(frame[MODEL_INPUT_COLUMNS]), dtype=float)
    return regression_metrics(frame[LABEL].to_numpy(), predicted)


def validate_challenger(
    model_name: str, version: int, training_set: DataFrame, config: TrainingConfig
) -> GateResult:
    """Evaluate `version` (and the champion) on held-out rows; promote `version` if it passes."""
    get_version(model_name, version)
    champion_version = get_aliases(model_name).get(CHAMPION)
    compared = None if champion_version == version else champion_version
    frame = evaluation_frame(training_set, config.test_size)
    challenger = evaluate_version(model_name, version, frame)
    champion = evaluate_version(model_name, compared, frame) if compared is not None else None
    failures = gate_failures(challenger, champion, config)
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
        "gate_max_rmse": config.max_rmse,
        "gate_min_r2": config.min_r2,
        "gate_promotion_margin": config.promotion_margin,
        **result.challenger.as_dict("gate_"),
    }
    if result.champion is not None:
        tags["gate_champion_version"] = result.compared_champion
        tags.update(result.champion.as_dict("gate_champion_"))
    set_version_tags(result.model_name, result.version, tags)
    compared = (
        f" Champion version {result.compared_champion}: RMSE {result.champion.rmse:.3f}, "
        f"R2 {result.champion.r2:.3f}."
        if result.champion is not None
        else ""
    )
    description = (
        f"Validation gate: {result.outcome} ({'; '.join(result.reasons)}). "
        f"On {result.challenger.rows} held-out trips: RMSE {result.challenger.rmse:.3f}, "
        f"MAE {result.challenger.mae:.3f}, R2 {result.challenger.r2:.3f}.{compared}"
    )
    MlflowClient().update_model_version(result.model_name, str(result.version), description=description)
