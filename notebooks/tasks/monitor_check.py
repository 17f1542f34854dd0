# Databricks notebook source
# MAGIC %pip install ../../../artifacts/.internal/*.whl --quiet

# COMMAND ----------

# Task `check` of job monitoring: decide whether to retrain and set the task values `retrain`
# ("true" / "false") and `reasons` for the job's condition task `retrain_gate`. A notebook because
# Databricks lets only Python notebooks set task values; the decision itself is in the package.
# Parameters (widgets): metrics_table, model_name, and the job's granularity and thresholds.
from mlops_template.platform import get_platform
from mlops_template.tasks.common import config_from_widgets
from mlops_template.tasks.monitor_check import MonitorCheckConfig, decide_retrain

notebook_dbutils = dbutils  # noqa: F821 (a global of every Databricks notebook)
config = config_from_widgets(MonitorCheckConfig, notebook_dbutils.widgets)
decision = decide_retrain(get_platform(), config)
notebook_dbutils.jobs.taskValues.set(key="retrain", value="true" if decision.retrain else "false")
notebook_dbutils.jobs.taskValues.set(key="reasons", value=decision.reasons)
