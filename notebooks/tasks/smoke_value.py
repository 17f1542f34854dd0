# Databricks notebook source
# MAGIC %pip install ../../../artifacts/.internal/*.whl --quiet

# COMMAND ----------

# Task `set_value` of job smoke: set the task value the job's condition task `value_gate` reads.
# A notebook because Databricks lets only Python notebooks set task values; importing the package
# also checks that the notebook installed the job's wheel.
from mlops_template.tasks.smoke import SMOKE_VALUE, SMOKE_VALUE_KEY

notebook_dbutils = dbutils  # noqa: F821 (a global of every Databricks notebook)
notebook_dbutils.jobs.taskValues.set(key=SMOKE_VALUE_KEY, value=SMOKE_VALUE)
