"""Deterministic ids and hash ranks (method.md §0).

Every id is ``h(parts...)``: lowercase hex SHA-256 of the UTF-8 parts joined by U+001F.
"Random" order is never a stateful RNG but ``rr(seed, id)``, so results do not depend on
partitioning, task order or executor count. The Spark-side twin is :func:`h_col`.
"""

from __future__ import annotations

import hashlib

from pyspark.sql import Column
from pyspark.sql import functions as F

SEP = "\x1f"


def h(*parts: object) -> str:
    """Content hash of the parts (None becomes the empty string)."""
    text = SEP.join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rr(seed: int | str, item_id: str) -> str:
    """Hash rank of an id for a run seed: sort by it for a reproducible shuffle."""
    return h(seed, item_id)


def h_col(*cols: Column | str) -> Column:
    """Spark column computing :func:`h` of the given columns (NULL parts as empty strings)."""
    parts = [F.coalesce(F.col(c) if isinstance(c, str) else c, F.lit("")) for c in cols]
    return F.sha2(F.concat_ws(SEP, *parts), 256)
