# Databricks notebook source
# MAGIC %md
# MAGIC # graphgen-spark
# MAGIC
# MAGIC Turns a corpus into QA training data aimed at what a trainee model does not know
# MAGIC (chunk, extract a knowledge graph, score the trainee's gaps, sample, generate, export).
# MAGIC
# MAGIC * **Widgets**: the input (a folder, a file or a table); an output folder (a Unity Catalog
# MAGIC   volume path) for the exports, the report and the LLM journals; a catalog and a
# MAGIC   schema for the tables (leave both empty to keep them under the output folder);
# MAGIC   the stages to run (empty: all of them).
# MAGIC * **Keys** come from the secret scope in `secret_scope`: keys `synthesizer` and
# MAGIC   `trainee` (`databricks secrets put-secret llm synthesizer`). Never type a key into a cell.
# MAGIC * Endpoint URLs and models are in the config (`conf/databricks.yaml`, or the YAML named
# MAGIC   in `config`).
# MAGIC
# MAGIC Run it again with the same widgets to resume: nothing that was paid for is sent twice.

# COMMAND ----------

from graphgen_spark.databricks import declare_widgets, run_notebook

declare_widgets(dbutils)  # noqa: F821 - the notebook's own dbutils

# COMMAND ----------

run_id = run_notebook(spark, dbutils)  # noqa: F821 - the notebook's own spark and dbutils
print(f"run {run_id} finished")
