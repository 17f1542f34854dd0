"""The local Model Serving endpoint: the Databricks invocation API, inference table and deployer."""
