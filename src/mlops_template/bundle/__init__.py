"""The Databricks Asset Bundle read the way the Databricks CLI reads it, validated offline, run locally."""
