# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Explore the trips and the features
# MAGIC
# MAGIC The source table (`samples.nyctaxi.trips` on Databricks, a seeded local copy on a laptop),
# MAGIC the cleaned trips the pipeline trains on, and the two feature tables.
# MAGIC
# MAGIC On Databricks: deploy the bundle first (`databricks bundle deploy -t dev`), then run this
# MAGIC notebook from the bundle's files; the next cell installs the wheel that deploy uploaded
# MAGIC (`artifacts/.internal/`, the one the jobs run) and the notebook uses the target it was
# MAGIC deployed with. Locally: `make run`, then run the notebook with the local platform
# MAGIC (`MLOPS_TARGET=dev`).

# COMMAND ----------

# MAGIC %pip install ../../artifacts/.internal/*.whl --quiet

# COMMAND ----------

from mlops_template.notebook import notebook_context
from mlops_template.problem.features import dropoff_features, pickup_features
from mlops_template.tasks.prepare_data import PrepareDataConfig

context = notebook_context()
source = context.platform.read_table(
    context.task_config("pipeline", "prepare_data", PrepareDataConfig).source_table
)
trips = context.platform.read_table(context.table("trips_clean"), produced_by="job pipeline")
print(f"{source.count()} source trips, {trips.count()} after cleaning")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Fares, distances and durations

# COMMAND ----------

trips.describe("trip_distance", "fare_amount").toPandas()

# COMMAND ----------

trips.groupBy("pickup_zip").count().orderBy("count", ascending=False).limit(10).toPandas()

# COMMAND ----------

# MAGIC %md
# MAGIC ## The features, as the feature job computes them
# MAGIC Pickup features: per pickup zip over a 1-hour window sliding every 15 minutes. Dropoff
# MAGIC features: per dropoff zip over 30-minute windows. `ts` is the window end.

# COMMAND ----------

pickup_features(trips).orderBy("ts").limit(10).toPandas()

# COMMAND ----------

dropoff_features(trips).orderBy("ts").limit(10).toPandas()

# COMMAND ----------

context.platform.read_table(context.table("pickup_features"), produced_by="job pipeline").count()
