"""Customer churn: will a customer leave, judged at each of their activity events?

A seeded generator of customer events (a plan, minutes of use, support tickets and whether the
customer churned), one feature table of each customer's activity over the 7 days before, and a
logistic regression over a one-hot encoded plan and scaled numbers. Churn is more likely on the
basic plan, with more support tickets and with less use, so the model has real signal to find.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

from databricks.feature_engineering import FeatureLookup
from pydantic import BaseModel, ConfigDict, Field
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_template.problem_spec import FeatureTable, ModelInput, ProblemSpec, TaskType

CUSTOMERS = 300
PLANS = ("basic", "standard", "premium")
START = dt.datetime(2024, 1, 1)
SPAN_SECONDS = 30 * 24 * 3600
SOURCE_COLUMNS = {
    "customer_id": "bigint",
    "event_ts": "timestamp",
    "plan": "string",
    "minutes": "double",
    "support_tickets": "int",
    "churned": "int",
}
ACTIVITY_TABLE = "customer_activity"
ACTIVITY_WINDOW = dt.timedelta(days=7)
ACTIVITY_FEATURES = ["events_7d", "mean_minutes_7d"]
SAMPLE_TABLE = "samples.churn.customer_events"  # generated locally from generate_events on first read
_MODULUS = 2_147_483_629


def _uniform(seed: int, draw: int, column: str = "id") -> Column:
    hashed = F.pmod(F.xxhash64(F.lit(seed), F.col(column), F.lit(draw)), F.lit(_MODULUS))
    return (hashed + F.lit(0.5)) / F.lit(float(_MODULUS))


def generate_events(spark: SparkSession, rows: int = 3_000, seed: int = 42) -> DataFrame:
    """`rows` customer events with SOURCE_COLUMNS; a customer keeps one plan."""
    customer = F.floor(_uniform(seed, 0) * CUSTOMERS).cast("bigint")
    events = (
        spark.range(0, rows, numPartitions=1)
        .withColumn("customer_id", customer)
        .withColumn(
            "event_ts",
            F.timestamp_seconds(F.lit(int(START.timestamp())) + F.floor(_uniform(seed, 1) * SPAN_SECONDS)),
        )
        .withColumn(
            "plan",
            F.element_at(
                F.array(*map(F.lit, PLANS)), (F.floor(_uniform(seed, 2, "customer_id") * 3) + 1).cast("int")
            ),
        )
        .withColumn(
            "minutes",
            F.round(
                F.exp(
                    2.5 + 0.8 * F.sqrt(-2 * F.log(_uniform(seed, 3))) * F.cos(2 * math.pi * _uniform(seed, 4))
                ),
                1,
            ),
        )
        .withColumn("support_tickets", F.floor(F.pow(_uniform(seed, 5), 2.0) * 5).cast("int"))
    )
    logit = (
        -1.0
        + F.when(F.col("plan") == "basic", 1.5).when(F.col("plan") == "premium", -1.0).otherwise(0.0)
        + 0.7 * F.col("support_tickets")
        - 0.05 * F.col("minutes")
    )
    churned = (_uniform(seed, 6) < 1 / (1 + F.exp(-logit))).cast("int")
    return events.withColumn("churned", churned).select(
        *[F.col(c).cast(t) for c, t in SOURCE_COLUMNS.items()]
    )


def prepare(events: DataFrame) -> DataFrame:
    """Complete events, once each, with a stable `event_id`."""
    columns = list(SOURCE_COLUMNS)
    return (
        events.select(*columns).dropna().dropDuplicates(columns).withColumn("event_id", F.xxhash64(*columns))
    )


def _day(value: dt.datetime) -> Column:
    return F.lit(value.isoformat(sep=" ")).cast("timestamp")


def customer_activity(events: DataFrame, start: dt.datetime | None, end: dt.datetime | None) -> DataFrame:
    """Per customer and day end `ts`: events and mean minutes over the 7 days before `ts`."""
    if start is not None:
        events = events.where(F.col("event_ts") >= _day(start - ACTIVITY_WINDOW))
    if end is not None:
        events = events.where(F.col("event_ts") < _day(end))
    window = F.window("event_ts", "7 days", "1 day")
    features = events.groupBy("customer_id", window.alias("window")).agg(
        F.count(F.lit(1)).cast("double").alias("events_7d"), F.mean("minutes").alias("mean_minutes_7d")
    )
    features = features.select("customer_id", F.col("window.end").alias("ts"), *ACTIVITY_FEATURES)
    if start is not None:
        features = features.where(F.col("ts") >= _day(start))
    if end is not None:
        features = features.where(F.col("ts") < _day(end))
    return features


def feature_lookups(tables: Mapping[str, str]) -> list[FeatureLookup]:
    return [
        FeatureLookup(
            table_name=tables[ACTIVITY_TABLE],
            lookup_key=["customer_id"],
            # Activity rows end at midnight: the latest at or before the event holds earlier days.
            timestamp_lookup_key="event_ts",
            feature_names=ACTIVITY_FEATURES,
            lookback_window=dt.timedelta(days=1),
        )
    ]


class LogisticParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    C: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=200, ge=1)


NUMERIC_INPUTS = ["minutes", "support_tickets", *ACTIVITY_FEATURES]


def build_model(params: LogisticParams) -> Pipeline:
    """One-hot plan (an unseen plan encodes as all zeros), imputed and scaled numbers, logistic regression."""
    inputs = ColumnTransformer(
        [
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), NUMERIC_INPUTS),
        ]
    )
    return Pipeline([("inputs", inputs), ("model", LogisticRegression(C=params.C, max_iter=params.max_iter))])


PROBLEM = ProblemSpec(
    name="churn",
    task_type=TaskType.BINARY_CLASSIFICATION,
    source_columns=SOURCE_COLUMNS,
    prepare=prepare,
    row_id="event_id",
    event_timestamp="event_ts",
    entity_keys=("customer_id",),
    label="churned",
    feature_tables=(
        FeatureTable(
            name=ACTIVITY_TABLE,
            primary_keys=("customer_id", "ts"),
            timestamp_key="ts",
            description="Events and mean minutes per customer over the 7 days before ts.",
            compute=customer_activity,
        ),
    ),
    feature_lookups=feature_lookups,
    # The lookup keys are request inputs the model ignores (its column transformer drops them).
    model_inputs=(
        ModelInput("customer_id", "long"),
        ModelInput("event_ts", "datetime"),
        ModelInput("plan", "string"),
        ModelInput("minutes", "double"),
        ModelInput("support_tickets", "integer"),
        *(ModelInput(name) for name in ACTIVITY_FEATURES),
    ),
    monitored_inputs=("plan", *NUMERIC_INPUTS),
    model_params=LogisticParams,
    build_model=build_model,
    primary_metric="roc_auc",
    gate_thresholds={"min_roc_auc": 0.6, "max_brier": 0.3},
    prepared_table="churn_events",
    predictions_table="churn_predictions",
    sample_source=generate_events,
    sample_table=SAMPLE_TABLE,
)
