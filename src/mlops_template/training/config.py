"""Training parameters: the held-out split, the validation gate and the problem's hyper-parameters.

A job overrides any of them with one flat JSON object (`--training-params`, job parameter
`training_params`):

- `test_size`: share of rows (by a hash of the row id) held out for evaluation and the gate;
- `gate_promotion_margin`: how much worse (relative) than the champion's primary metric the
  challenger's may be and still pass;
- `gate_min_improvement`: how much better (relative) it must be to count as clearly better, which
  promotes it under every rollout policy; a challenger that passes without being clearly better is
  promoted under `replace` and tried live (gate outcome `experiment`) under `canary` and `ab_test`;
- `gate_min_<metric>` / `gate_max_<metric>`: the gate's absolute floors over the task type's
  metrics (defaults: the spec's `gate_thresholds`), e.g. `gate_max_rmse`;
- any other key: a hyper-parameter of the problem's model (the spec's `model_params`).

Example: `{"n_estimators": 50, "gate_min_r2": 0.8}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, ValidationError

from mlops_template.jsonparams import parse_json_object
from mlops_template.problem_spec import ProblemSpec, load_problem

GATE_PREFIX = "gate_"
GENERIC_PARAMETERS = ("test_size", "gate_promotion_margin", "gate_min_improvement")


class TrainingConfigError(ValueError):
    """The training parameters are not a JSON object of known, valid parameters."""


class TrainingConfig(BaseModel):
    """The split, the gate's settings and the model's hyper-parameters of one training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_size: float = Field(default=0.2, gt=0, lt=1)
    gate_promotion_margin: float = Field(
        default=0.02, ge=0, description="relative margin on the primary metric against the champion"
    )
    gate_min_improvement: float = Field(
        default=0.01, ge=0, description="relative improvement on the champion that promotes outright"
    )
    gate_thresholds: dict[str, float]  # `min_<metric>` / `max_<metric>` -> bound
    model_params: SerializeAsAny[BaseModel]

    @classmethod
    def defaults(cls, spec: ProblemSpec | None = None) -> TrainingConfig:
        """The defaults of the problem (`spec`, else the loaded problem)."""
        return cls.from_overrides({}, spec)

    @classmethod
    def from_json(cls, text: str, spec: ProblemSpec | None = None) -> TrainingConfig:
        """Defaults overridden by a JSON object such as `{"n_estimators": 50}`."""
        return cls.from_overrides(parse_json_object(text, "training parameters", TrainingConfigError), spec)

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any], spec: ProblemSpec | None = None) -> TrainingConfig:
        """Defaults overridden by the flat `overrides`; an unknown or invalid key is an error naming it."""
        spec = spec or load_problem()
        gate_keys = {GATE_PREFIX + name: name for name in spec.threshold_names}
        model_keys = set(spec.model_params.model_fields)
        unknown = [key for key in overrides if key not in {*GENERIC_PARAMETERS, *gate_keys, *model_keys}]
        if unknown:
            known = ", ".join([*GENERIC_PARAMETERS, *gate_keys, *spec.model_params.model_fields])
            raise TrainingConfigError(f"unknown training parameter(s) {unknown} (known: {known})")
        thresholds = {**spec.gate_thresholds}
        thresholds.update({gate_keys[key]: value for key, value in overrides.items() if key in gate_keys})
        try:
            model_params = spec.model_params.model_validate(
                {key: value for key, value in overrides.items() if key in model_keys}
            )
            generic = {key: overrides[key] for key in GENERIC_PARAMETERS if key in overrides}
            return cls.model_validate(
                {**generic, "gate_thresholds": thresholds, "model_params": model_params}
            )
        except ValidationError as error:
            problems = "; ".join(_describe(e) for e in error.errors())
            raise TrainingConfigError(f"bad training parameters: {problems}") from None

    def as_parameters(self) -> dict[str, Any]:
        """The flat form a job passes (and MLflow logs): every generic, gate and model parameter."""
        return {
            "test_size": self.test_size,
            "gate_promotion_margin": self.gate_promotion_margin,
            "gate_min_improvement": self.gate_min_improvement,
            **{GATE_PREFIX + name: bound for name, bound in self.gate_thresholds.items()},
            **self.model_params.model_dump(),
        }


def _describe(error: Any) -> str:
    name = ".".join(str(part) for part in error["loc"] if part not in ("gate_thresholds",))
    if error["loc"][:1] == ("gate_thresholds",):
        name = GATE_PREFIX + name
    return f"{name}: {error['msg']}"


def _parse_json_string(value: Any) -> Any:
    return TrainingConfig.from_json(value) if isinstance(value, str) else value


# A task config field filled from a JSON object string (the `--training-params` job parameter).
TrainingParams = Annotated[TrainingConfig, BeforeValidator(_parse_json_string)]


def default_training_config() -> TrainingConfig:
    """The loaded problem's defaults (a task config's default `training_params`)."""
    return TrainingConfig.defaults()
