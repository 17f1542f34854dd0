"""The bundle as `databricks bundle deploy` left it on a workspace (the laptop reads databricks.yml)."""
