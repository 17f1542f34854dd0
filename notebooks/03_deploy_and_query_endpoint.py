# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · The serving endpoint and sticky A/B
# MAGIC
# MAGIC The `deploy` task deploys the champion (and, when configured, the challenger or the sticky
# MAGIC A/B model) to a Model Serving endpoint with an AI-Gateway inference table. This notebook
# MAGIC shows the spec it sends, queries the endpoint, and checks the sticky A/B assignment.
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

# COMMAND ----------

schema = f"{context.catalog}.{context.schema}"
trips = context.platform.read_table(PROBLEM.prepared_table_name(schema), produced_by="job pipeline").limit(5)
rows = build_feature_set(context.platform, PROBLEM, trips, schema)
frame = rows.select("trip_id", *PROBLEM.input_names).toPandas().astype({"trip_id": str})
records = frame.astype(object).where(frame.notna(), None).to_dict("records")  # JSON has null, not NaN
answer = deployer.query(context.endpoint_name, records)
pd.DataFrame({"trip_id": [r["trip_id"] for r in records], "predicted_fare": answer["predictions"]})

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
