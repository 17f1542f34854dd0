"""Column names shared by the feature tables, the training set, the model and its endpoint."""

from __future__ import annotations

LABEL = "fare_amount"

# Inputs taken from the trip itself (derived in Spark by features.trips.add_trip_inputs).
TRIP_INPUT_COLUMNS = ["trip_distance", "pickup_zip", "dropoff_zip", "pickup_hour", "pickup_weekday"]

# Feature tables: keys and features.
FEATURE_KEY = "zip"
FEATURE_TIMESTAMP = "ts"
PICKUP_FEATURES = ["mean_fare_window_1h_pickup_zip", "count_trips_window_1h_pickup_zip"]
DROPOFF_FEATURES = ["count_trips_window_30m_dropoff_zip", "dropoff_is_weekend"]

# Point-in-time lookup keys added to trips (features.trips.add_trip_inputs).
PICKUP_LOOKUP_TIME = "rounded_pickup_datetime"
DROPOFF_LOOKUP_TIME = "rounded_dropoff_datetime"

MODEL_INPUT_COLUMNS = TRIP_INPUT_COLUMNS + PICKUP_FEATURES + DROPOFF_FEATURES
