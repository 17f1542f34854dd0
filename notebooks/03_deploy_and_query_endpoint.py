# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · The serving endpoint and sticky A/B
# MAGIC
# MAGIC The `deploy` task deploys the champion (and, when configured, the challenger or the sticky
# MAGIC A/B model) to a Model Serving endpoint with an AI-Gateway inference table. This notebook
# MAGIC shows the spec it sends, queries the endpoint with what a client knows (zips, times,
# MAGIC distance: the endpoint looks the window features up by key and time), and checks the
# MAGIC sticky A/B assignment.
# MAGIC Locally, the query runs against the recorded endpoint served on loopback (what
# MAGIC `mlops serve -t dev` serves); on Databricks, against the Model Serving endpoint.

# COMMAND ----------

# MAGIC %pip install ../../artifacts/.internal/*.whl --quiet

# COMMAND ----------

import pandas as pd

from mlops_template.notebook import notebook_context
from mlops_template.problem.spec import PROBLEM
from mlops_template.serving.ab_model import challenger_rows
from mlops_template.serving.deploy import endpoint_deployer
from mlops_template.serving.spec import build_endpoint_config
from mlops_template.tasks.deploy import DeployConfig, endpoint_spec
from mlops_template.training.dataset import build_feature_set

context = notebook_context()
deployer = endpoint_deployer(context.platform)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The endpoint spec (the body sent to `serving_endpoints.create` / `update_config`)

# COMMAND ----------

spec = endpoint_spec(context.platform, context.task_config("pipeline", "deploy", DeployConfig))
request = build_endpoint_config(spec)
{
    "config": request.config.as_dict(),
    "ai_gateway": request.ai_gateway.as_dict(),
    "tags": [tag.as_dict() for tag in request.tags],
}

# COMMAND ----------

# MAGIC %md
# MAGIC ## Query the endpoint with a few trips
# MAGIC A client sends the request inputs (and the trip id, which the model ignores and monitoring
# MAGIC joins labels on); the endpoint looks the features up in the online store. The same trips
# MAGIC sent with their point-in-time features (which override the lookup) show what the lookup
# MAGIC changes: the online store holds the latest row per zip, so for past trips it may differ.
# MAGIC With `serving_features=request` (no online store) only the second request works.

# COMMAND ----------


def json_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON objects: timestamps as ISO-8601 text, nulls as null (JSON has no NaN)."""
    frame = frame.astype({"trip_id": str})
    for column in frame.select_dtypes("datetime").columns:
        frame[column] = frame[column].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


schema = f"{context.catalog}.{context.schema}"
trips = context.platform.read_table(PROBLEM.prepared_table_name(schema), produced_by="job pipeline").limit(5)
rows = build_feature_set(context.platform, PROBLEM, trips, schema).toPandas()
keys_only = json_records(rows[["trip_id", *PROBLEM.request_input_names]])
with_features = json_records(rows[["trip_id", *PROBLEM.input_names]])
sent = deployer.query(context.endpoint_name, with_features)["predictions"]
looked_up = None
if context.looks_up_features:
    looked_up = deployer.query(context.endpoint_name, keys_only)["predictions"]
pd.DataFrame({"trip_id": rows["trip_id"], "from_keys": looked_up, "with_features": sent})

# COMMAND ----------

# MAGIC %md
# MAGIC ## Sticky A/B: each key meets one variant, in the configured share
# MAGIC The A/B model assigns a request to the challenger by a stable hash of its key column, so a
# MAGIC rider (or trip) sees the same variant on every request, on Databricks and locally alike.

# COMMAND ----------

keys = pd.Series([f"rider-{i}" for i in range(10_000)])
assigned = challenger_rows(keys, challenger_share=0.2)
again = challenger_rows(keys.sample(frac=1.0, random_state=1).sort_index(), challenger_share=0.2)
same = bool((assigned == again).all())
print(f"challenger share {assigned.mean():.3f} (configured 0.2); same assignment on a second pass: {same}")
