"""Training parameters: LightGBM hyper-parameters, the held-out split and the validation gate."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mlops_template.tasks.common import parse_json_object


class TrainingConfigError(ValueError):
    """The training parameters are not a JSON object of known, valid parameters."""


class TrainingConfig(BaseModel):
    """Training parameters; a job overrides any of them with `--training-params`.

    The gate's defaults are sanity floors, not targets: on 20k generated trips the default model
    scores a held-out RMSE of about 1.9 dollars and R2 0.96, a one-split model 9.4 and 0.06.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # LightGBM (names as in lightgbm.LGBMRegressor).
    n_estimators: int = Field(default=300, ge=1)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    num_leaves: int = Field(default=31, ge=2)
    max_depth: int = Field(default=-1, ge=-1, description="-1: no limit")
    min_child_samples: int = Field(default=20, ge=1)
    subsample: float = Field(default=0.8, gt=0, le=1)
    # LightGBM ignores `subsample` unless bagging runs every `subsample_freq` iterations.
    subsample_freq: int = Field(default=1, ge=0)
    colsample_bytree: float = Field(default=0.9, gt=0, le=1)
    random_state: int = 42

    # Share of trips (by a hash of trip_id) held out from training for evaluation and the gate.
    test_size: float = Field(default=0.2, gt=0, lt=1)

    # Validation gate: absolute floors, then the comparison with the champion.
    max_rmse: float = Field(default=8.0, gt=0, description="dollars")
    min_r2: float = Field(default=0.6, le=1)
    promotion_margin: float = Field(
        default=0.02, ge=0, description="the challenger's RMSE may exceed the champion's by this fraction"
    )

    @classmethod
    def from_json(cls, text: str) -> TrainingConfig:
        """Defaults overridden by a JSON object such as `{"n_estimators": 50}`."""
        return cls.from_overrides(parse_json_object(text, "training parameters", TrainingConfigError))

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any]) -> TrainingConfig:
        """Defaults overridden by `overrides`; an unknown or invalid key is an error naming it."""
        try:
            return cls.model_validate(overrides)
        except ValidationError as error:
            problems = "; ".join(_describe(e) for e in error.errors())
            raise TrainingConfigError(f"bad training parameters: {problems}") from None

    def lgbm_params(self) -> dict[str, Any]:
        """Keyword arguments of `lightgbm.LGBMRegressor`."""
        return self.model_dump(include=_LGBM_FIELDS)


_LGBM_FIELDS = {
    "n_estimators",
    "learning_rate",
    "num_leaves",
    "max_depth",
    "min_child_samples",
    "subsample",
    "subsample_freq",
    "colsample_bytree",
    "random_state",
}


def _describe(error: Any) -> str:
    name = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = ", ".join(TrainingConfig.model_fields)
        return f"unknown parameter '{name}' (known: {known})"
    return f"{name}: {error['msg']}"


def _parse_json_string(value: Any) -> Any:
    return TrainingConfig.from_json(value) if isinstance(value, str) else value


# A task config field filled from a JSON object string (the `--training-params` job parameter).
TrainingParams = Annotated[TrainingConfig, BeforeValidator(_parse_json_string)]
