"""spark-submit entry point: the same arguments as `graphgen-spark run`.

    spark-submit --master spark://HOST:7077 --packages "$(graphgen-spark submit-args)" \
        jobs/run_pipeline.py --config conf/cluster.yaml --input PATH --output DIR
"""

import sys

from graphgen_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
