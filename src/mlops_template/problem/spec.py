"""The problem spec of the example: predict the fare of a NYC taxi trip when it starts."""

from __future__ import annotations

from mlops_template.problem import data, features, model
from mlops_template.problem_spec import ModelInput, ProblemSpec, TaskType

PROBLEM = ProblemSpec(
    name="taxi_fare",
    task_type=TaskType.REGRESSION,
    source_columns=data.SOURCE_COLUMNS,
    prepare=data.clean_trips,
    row_id=data.TRIP_ID,
    event_timestamp="tpep_pickup_datetime",
    entity_keys=("pickup_zip", "dropoff_zip"),
    label=features.LABEL,
    feature_tables=features.FEATURE_TABLES,
    feature_lookups=features.feature_lookups,
    # What a client sends (the lookups key on the zips and times), then the looked-up features.
    model_inputs=(
        ModelInput("trip_distance", "double"),
        ModelInput("pickup_zip", "long"),
        ModelInput("dropoff_zip", "long"),
        ModelInput(features.PICKUP_TIME, "datetime"),
        ModelInput(features.DROPOFF_TIME, "datetime"),
        # The feature tables' types (the signature `fe.log_model` derives from the training set).
        ModelInput(features.MEAN_FARE_PICKUP, "double"),
        ModelInput(features.COUNT_TRIPS_PICKUP, "long"),
        ModelInput(features.COUNT_TRIPS_DROPOFF, "long"),
        ModelInput(features.DROPOFF_IS_WEEKEND, "double"),
    ),
    model_params=model.LightGBMParams,
    build_model=model.build_pipeline,
    trusted_types=model.TRUSTED_TYPES,
    model_packages=("lightgbm",),
    primary_metric="rmse",
    # Sanity floors, not targets (see model.LightGBMParams for what the defaults score).
    gate_thresholds={"max_rmse": 8.0, "min_r2": 0.6},
    # Served fares off by more than $5 (RMSE of a window) ask for retraining.
    quality_thresholds={"max_rmse": 5.0},
    prepared_table="trips_clean",
    predictions_table="fare_predictions",
    sample_source=data.generate_trips,
    sample_table="samples.nyctaxi.trips",  # the table every Databricks workspace ships
    drift_inputs=features.drifted,
)
