"""Batch scoring of the prepared rows with the champion model through mlflow spark_udf."""
