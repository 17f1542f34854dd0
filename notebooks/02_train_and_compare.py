# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Train and compare models
# MAGIC
# MAGIC Builds the point-in-time training set with the pipeline's own feature lookups, trains the
# MAGIC pipeline's model with two hyper-parameter sets and compares their held-out metrics with the
# MAGIC current champion's. Nothing here is registered: the `train` and `validate_model` tasks do that.

# COMMAND ----------

# MAGIC %pip install ../../artifacts/.internal/*.whl --quiet

# COMMAND ----------

import pandas as pd

from mlops_template.notebook import notebook_context
from mlops_template.problem.spec import PROBLEM
from mlops_template.registry.versions import model_status
from mlops_template.training.config import TrainingConfig
from mlops_template.training.dataset import build_training_set
from mlops_template.training.model import train_model

context = notebook_context()
schema = f"{context.catalog}.{context.schema}"
trips = context.platform.read_table(PROBLEM.prepared_table_name(schema), produced_by="job pipeline")
training_set = build_training_set(context.platform, PROBLEM, trips, schema)

# COMMAND ----------

candidates = {
    "default": TrainingConfig.defaults(PROBLEM),
    "shallow": TrainingConfig.from_overrides({"n_estimators": 50, "num_leaves": 7}, PROBLEM),
}
results = {name: train_model(training_set, config, PROBLEM) for name, config in candidates.items()}
pd.DataFrame({name: trained.metrics.as_dict("test_") for name, trained in results.items()}).T

# COMMAND ----------

# MAGIC %md
# MAGIC ## The registered versions and their aliases

# COMMAND ----------

pd.DataFrame([vars(status) for status in model_status(context.model_name)])
