"""Reading the Spark event logs that tests ask a session to write (``spark.eventLog.*``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def spark_events(folder: Path) -> Iterator[dict]:
    """Every event in the uncompressed event logs under ``folder`` (flat or one folder per
    application, as rolling logs are written)."""
    for log in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        for line in log.read_text(encoding="utf-8").splitlines():
            yield json.loads(line)
