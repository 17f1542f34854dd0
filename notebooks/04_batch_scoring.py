# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · Batch scoring
# MAGIC
# MAGIC The `batch_score` task scores trips with the `champion` into the predictions table: a model
# MAGIC logged with its feature lookups through the feature store's `score_batch` (`fe.score_batch`
# MAGIC on Databricks: the same point-in-time lookup as training), otherwise through
# MAGIC `mlflow.pyfunc.spark_udf` over the point-in-time features. This notebook reads that table and
# MAGIC compares predictions with the actual fares.

# COMMAND ----------

# MAGIC %pip install ../../artifacts/.internal/*.whl --quiet

# COMMAND ----------

from pyspark.sql import functions as F

from mlops_template.notebook import notebook_context
from mlops_template.scoring.batch import resolve_alias

context = notebook_context()
champion = resolve_alias(context.model_name, "champion")
predictions = context.platform.read_table(context.table("fare_predictions"), produced_by="job pipeline")
trips = context.platform.read_table(context.table("trips_clean"), produced_by="job pipeline")
print(f"champion: version {champion.version}")

# COMMAND ----------

predictions.groupBy("model_name", "model_version", "model_alias").count().toPandas()

# COMMAND ----------

scored = predictions.join(trips.select("trip_id", "fare_amount"), "trip_id")
scored.select(
    F.sqrt(F.avg(F.pow(F.col("prediction") - F.col("fare_amount"), 2))).alias("rmse"),
    F.avg(F.abs(F.col("prediction") - F.col("fare_amount"))).alias("mae"),
    F.count(F.lit(1)).alias("rows"),
).toPandas()
