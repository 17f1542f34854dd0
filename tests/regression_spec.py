"""A regression flavour of the churn spec (tests/churn_example/spec.py): each customer's monthly bill.

Same source, rows, entity, feature table and inputs as churn; `prepare` adds the label `bill`
(the plan's price, plus per minute of use and per support ticket, plus seeded noise of ±3), and
the model is a ridge regression over the same one-hot plan and scaled numbers. Generic tests use
it where regression behaviour matters (a `double` prediction, rmse / mae / r2); it also says how
simulated traffic drifts (more minutes, more tickets), which churn does not.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn_example.spec import NUMERIC_INPUTS
from churn_example.spec import PROBLEM as CHURN
from churn_example.spec import prepare as prepare_events
from mlops_template.problem_spec import TaskType

LABEL = "bill"
PLAN_PRICES = {"basic": 10.0, "standard": 20.0, "premium": 35.0}
REFERENCE = "regression_spec:PROBLEM"  # for $MLOPS_PROBLEM


def prepare(events: DataFrame) -> DataFrame:
    """Churn's prepared events with the bill: plan price + 0.2 per minute + 1.5 per ticket + noise."""
    prepared = prepare_events(events)
    prices = F.create_map(*[F.lit(v) for item in PLAN_PRICES.items() for v in item])
    price = F.element_at(prices, F.col("plan"))
    noise = (F.pmod(F.xxhash64(F.col("event_id"), F.lit(7)), F.lit(10_000)) / 10_000.0 - 0.5) * 6
    bill = price + 0.2 * F.col("minutes") + 1.5 * F.col("support_tickets") + noise
    return prepared.withColumn(LABEL, bill.cast("double"))


class RidgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(default=1.0, gt=0)


def build_model(params: RidgeParams) -> Pipeline:
    """One-hot plan, imputed and scaled numbers, ridge regression."""
    inputs = ColumnTransformer(
        [
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), NUMERIC_INPUTS),
        ]
    )
    return Pipeline([("inputs", inputs), ("model", Ridge(alpha=params.alpha))])


def drift(inputs: pd.DataFrame) -> pd.DataFrame:
    """Heavier users: twice the minutes and three more support tickets."""
    return inputs.assign(minutes=inputs["minutes"] * 2, support_tickets=inputs["support_tickets"] + 3)


PROBLEM = dataclasses.replace(
    CHURN,
    name="churn_bill",
    task_type=TaskType.REGRESSION,
    prepare=prepare,
    label=LABEL,
    model_params=RidgeParams,
    build_model=build_model,
    primary_metric="rmse",
    gate_thresholds={"max_rmse": 5.0, "min_r2": 0.5},
    quality_thresholds={"max_rmse": 5.0},
    prepared_table="bill_events",
    predictions_table="bill_predictions",
    drift_inputs=drift,
)
