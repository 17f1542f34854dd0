"""Model serving: endpoint spec, the Databricks deployer, sticky A/B (the task is `tasks.deploy`).

- `spec`: the endpoint configuration and the Databricks SDK request objects built from it.
- `deploy`: Databricks `serving_endpoints` (the local deployer is the laptop platform's).
- `served_entities`: served-entity ids and `system.serving.served_entities` rows.
- `ab_model` (the sticky A/B pyfunc, logged as code) and `ab_registry` (its registration).
"""
