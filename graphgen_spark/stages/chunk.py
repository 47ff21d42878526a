"""Stage 2, chunk: ``documents`` -> ``chunks`` as token windows (method.md §2.2).

Only documents without chunks are processed (anti-join on ``doc_id``), so a rerun does
nothing. Chunking runs inside the executors (``mapInPandas``); the tokenizer is loaded once
per Python worker (``get_encoding`` is cached per process).

Windows: ``size`` tokens every ``size - overlap`` tokens; a window's text is the exact
substring its tokens cover, widened to whole characters, then stripped; only non-empty
windows are emitted, with consecutive indexes; the loop stops once a window reaches the end
(a document of exactly ``size`` tokens is one chunk; the reference adds a second one).

Pre-chunked documents (GraphGen's chunked JSON form): each non-empty part is one chunk, as
given (not stripped, never re-cut); ``index`` is its position among the document's emitted
chunks (consecutive, like windows); ``start_token`` / ``end_token`` are cumulative token
counts over all the parts, ``n_tokens`` the part's own token count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from graphgen_spark.ids import h
from graphgen_spark.language import main_language
from graphgen_spark.stages.base import Stage, StageContext, StageResult
from graphgen_spark.tables import SCHEMAS, MergeResult
from graphgen_spark.tokenizer import TokenSpans, count_tokens

Window = tuple[int, int, int, str]  # (index, start_token, end_token, text)
CHUNK_COLS = [f.name for f in SCHEMAS["chunks"].fields]
_FLUSH_ROWS = 5000


def token_windows(
    text: str, size: int, overlap: int, tokenizer: str = "cl100k_base"
) -> list[Window]:
    """The chunk windows of one text, exactly as method.md §2.2 (stop at the end)."""
    if not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap < size, got size={size}, overlap={overlap}")
    spans = TokenSpans(text or "", tokenizer)
    n = len(spans)
    out: list[Window] = []
    start = 0
    while True:
        end = min(start + size, n)
        piece = spans.slice(start, end).strip()
        if piece:
            out.append((len(out), start, end, piece))
        if end == n:
            return out
        start += size - overlap


def part_windows(parts: Iterable[str], tokenizer: str = "cl100k_base") -> list[Window]:
    """Pre-chunked parts as chunks: as given, empty ones skipped, cumulative token offsets."""
    out: list[Window] = []
    offset = 0
    for part in parts:
        part = part or ""
        n = count_tokens(part, tokenizer)
        if part.strip():
            out.append((len(out), offset, offset + n, part))
        offset += n
    return out


def chunk_rows(
    doc_id: str,
    text: str,
    prechunked: bool,
    parts,
    size: int,
    overlap: int,
    tokenizer: str = "cl100k_base",
) -> list[tuple]:
    """``chunks`` rows (in :data:`CHUNK_COLS` order) of one document."""
    if prechunked:
        windows = part_windows(list(parts) if parts is not None else [], tokenizer)
    else:
        windows = token_windows(text, size, overlap, tokenizer)
    return [
        (h(doc_id, i), doc_id, i, s, e, e - s, t, h(t), main_language(t)) for i, s, e, t in windows
    ]


def _chunker(size: int, overlap: int, tokenizer: str):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        rows: list[tuple] = []
        for pdf in batches:
            cols = (pdf["doc_id"], pdf["text"], pdf["prechunked"], pdf["parts"])
            for doc_id, text, pre, parts in zip(*cols, strict=True):
                rows += chunk_rows(doc_id, text, bool(pre), parts, size, overlap, tokenizer)
                if len(rows) >= _FLUSH_ROWS:
                    yield pd.DataFrame(rows, columns=CHUNK_COLS)
                    rows = []
        if rows:
            yield pd.DataFrame(rows, columns=CHUNK_COLS)

    return run


def pending_documents(ctx: StageContext) -> DataFrame:
    """Documents that have no chunks yet."""
    docs = ctx.tables.read("documents").select("doc_id", "text", "prechunked", "parts")
    done = ctx.tables.read("chunks").select("doc_id").distinct()
    return docs.join(done, "doc_id", "left_anti")


def _run(ctx: StageContext) -> StageResult:
    c = ctx.cfg.chunk
    # spread tokenisation over the executors; no count, and materialised rather than cached:
    # adaptive execution then sizes the partitions to the data (it cannot resize a cached
    # plan's; a fixed 200 on a cluster made 200 tasks for 40 documents)
    chunks = ctx.scratch.materialise(
        pending_documents(ctx)
        .repartition("doc_id")
        .mapInPandas(_chunker(c.size, c.overlap, c.tokenizer), SCHEMAS["chunks"])
    )
    stats = chunks.agg(
        F.countDistinct("doc_id").alias("docs"), F.count(F.lit(1)).alias("chunks")
    ).first()
    n_docs, n_chunks = int(stats["docs"]), int(stats["chunks"])
    res = ctx.tables.merge("chunks", chunks) if n_chunks else MergeResult()
    counts = {
        "documents_chunked": n_docs,
        "chunks_produced": n_chunks,
        "chunks_written": res.inserted,
    }
    ctx.log.info("chunk: %s", counts)
    return StageResult(counts=counts)


STAGE = Stage(
    "chunk", _run, reads=("documents", "chunks"), writes=("chunks",), pending=pending_documents
)
