"""Model serving: endpoint spec, deployers (Databricks and local), the local endpoint, sticky A/B.

- `spec`: the endpoint configuration and the Databricks SDK request objects built from it.
- `deploy`: Databricks `serving_endpoints`, or the checked local spec (`platform.endpoint_deployer()`).
- `task`: the `mlops-deploy` job task; `cli`: `mlops serve`.
- `app`, `server`, `endpoint`, `invocation`, `batching`, `router`: the local endpoint speaking the
  Databricks invocation API, with micro-batching and per-request traffic split.
- `ab_model` (the sticky A/B pyfunc, logged as code) and `ab_registry` (its registration).
- `inference_table`: the AI-Gateway payload table the local endpoint writes.
"""
