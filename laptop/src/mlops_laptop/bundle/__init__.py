"""Databricks Asset Bundles read like the CLI does, validated offline and run locally."""
