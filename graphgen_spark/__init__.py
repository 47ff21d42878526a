"""graphgen-spark: the GraphGen method for knowledge-graph-guided SFT data, as a Spark job."""

__version__ = "0.1.0"
