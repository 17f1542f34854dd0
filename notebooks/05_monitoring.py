# Databricks notebook source
# MAGIC %md
# MAGIC # 05 · Monitoring: what the endpoint saw
# MAGIC
# MAGIC The `monitoring` job unpacks the endpoint's inference table into one row per prediction,
# MAGIC computes drift (PSI, KS of the monitored inputs against the training baseline, and of the
# MAGIC predictions against the champion's on that baseline), quality (the problem's metrics against
# MAGIC the ground truth) and service metrics per window, and triggers a retrain when they pass the
# MAGIC thresholds. This notebook reads its results. Locally: `mlops serve -t dev`,
# MAGIC `mlops simulate-traffic -t dev --drift`, `mlops run monitoring -t dev` first.

# COMMAND ----------

# MAGIC %pip install ../../artifacts/.internal/*.whl --quiet

# COMMAND ----------

from mlops_template.monitoring.config import MonitoringThresholds
from mlops_template.monitoring.metrics import metrics_frame
from mlops_template.monitoring.report import format_report
from mlops_template.notebook import notebook_context
from mlops_template.problem_spec import load_problem

context = notebook_context()
spec = load_problem()
tables = context.names.monitoring_tables
thresholds = MonitoringThresholds.from_json(context.job_parameter("monitoring", "thresholds"), spec)
granularity = context.job_parameter("monitoring", "granularity")

# COMMAND ----------

# MAGIC %md
# MAGIC ## One row per prediction

# COMMAND ----------

if context.platform.table_exists(tables.monitoring):
    predictions = context.platform.read_table(tables.monitoring)
    display_frame = predictions.orderBy("request_time", ascending=False).limit(10).toPandas()
else:
    display_frame = f"{tables.monitoring} does not exist yet: run the monitoring job first"
display_frame

# COMMAND ----------

# MAGIC %md
# MAGIC ## Drift, quality and service metrics per window, and the retrain verdict

# COMMAND ----------

if context.platform.table_exists(tables.drift_metrics):
    metrics = metrics_frame(context.platform.read_table(tables.drift_metrics), granularity)
    print(
        format_report(
            metrics, thresholds, spec, table=tables.drift_metrics, granularity=granularity, windows=5
        )
    )
else:
    print(f"{tables.drift_metrics} does not exist yet: run the monitoring job first")
