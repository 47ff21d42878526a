"""Entry point for ``python -m graphgen_spark.standin``."""

from .commandline import main

raise SystemExit(main())
