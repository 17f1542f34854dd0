"""The laptop platform: the bundle's jobs run locally with the same task code as on Databricks.

Installed for development and tests (`make install`), never in the wheel the jobs install:
- `bundle`: the bundle loader, offline validation and the local job runner;
- `platform`: local Spark and metastore, the local feature store and UC-strict model registry;
- `serving`: the local Model Serving endpoint (invocation API, inference table, deployer);
- `monitoring`: the traffic simulator and the monitoring report;
- `doctor`: preflight checks; `cli`: the `mlops` command.
"""
