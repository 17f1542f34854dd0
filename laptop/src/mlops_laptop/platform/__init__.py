"""The local platform: Spark with a local metastore, feature store and UC-strict registry."""

# Rows of the generated sample source; here, free of imports, for the `mlops` CLI's option defaults.
DEFAULT_SAMPLE_ROWS = 20_000
