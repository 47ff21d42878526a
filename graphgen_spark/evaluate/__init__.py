"""Quality metrics of generated QA (method §8): lexical statistics and near-duplicates.

:mod:`.lexical` holds the pure-Python word tokens, MTLD and distinct-n; :mod:`.near_dup`
clusters near-duplicate texts with Spark ML MinHashLSH. The ``evaluate`` stage
(:mod:`graphgen_spark.stages.evaluate`) runs both over the ``qa`` table.
"""
