# Databricks notebook source
# MAGIC %md
# MAGIC # 05 · Monitoring: what the endpoint saw
# MAGIC
# MAGIC The `monitoring` job unpacks the endpoint's inference table into one row per prediction,
# MAGIC computes drift (PSI, KS against the training baseline), quality (RMSE, MAE against the
# MAGIC ground truth) and service metrics per window, and triggers a retrain when they pass the
# MAGIC thresholds. This notebook reads its results. Locally: `mlops serve -t dev`,
# MAGIC `mlops simulate-traffic -t dev --drift`, `mlops run monitoring -t dev` first.

# COMMAND ----------

# MAGIC %pip install ../../artifacts/.internal/*.whl --quiet

# COMMAND ----------

from mlops_template.monitoring.config import MonitoringThresholds
from mlops_template.monitoring.metrics import metrics_frame
from mlops_template.monitoring.report import format_report
from mlops_template.monitoring.tables import MonitoringTables
from mlops_template.notebook import notebook_context

context = notebook_context()
tables = MonitoringTables.for_bundle(context.bundle)
thresholds = MonitoringThresholds.from_json(str(context.bundle.variables["monitoring_thresholds"]))
granularity = "1 hour"

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
    print(format_report(metrics, thresholds, table=tables.drift_metrics, granularity=granularity, windows=5))
else:
    print(f"{tables.drift_metrics} does not exist yet: run the monitoring job first")
