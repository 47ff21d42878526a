"""Training-file export of `qa` (method §7.5): per-row formatting and decontamination."""

from graphgen_spark.export.formats import (
    FORMATS,
    answer_text,
    export_record,
    meta_of,
    question_text,
    record,
    to_line,
)

__all__ = [
    "FORMATS",
    "answer_text",
    "export_record",
    "meta_of",
    "question_text",
    "record",
    "to_line",
]
