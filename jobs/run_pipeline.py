"""spark-submit entry point: the same arguments as `graphgen-spark run`.

`graphgen-spark submit --master URL ...` builds the spark-submit command that runs this
file with the jars and the packed Python env; `submit --print` shows it.
"""

import sys

from graphgen_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
