"""Batch scoring of trips with the champion model through mlflow spark_udf."""
