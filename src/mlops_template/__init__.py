"""Databricks Asset Bundle MLOps template."""
