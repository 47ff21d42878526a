"""Input format readers for the ingest stage (method.md §2.1).

Every reader turns its input into rows of one shape, :data:`PARSED`: a document candidate
(``reason`` NULL) or a rejected record (``reason`` set, with the parser's ``detail`` and a
200-character ``excerpt`` of the raw record). The stage then applies the checks common to
all formats (empty, oversized), collapses identical documents and MERGEs.

- Text formats (``.jsonl``, ``.json``, ``.txt``, ``.md``) are read as whole files with
  Spark's ``binaryFile`` source and decoded *inside the executors* (:func:`parse_files`
  through ``mapInPandas``); file contents never reach the driver.
- ``.csv``, ``.parquet`` and Delta / catalog tables use Spark's own readers; a row is a
  document (:func:`tabular_rows`). Each CSV file is read on its own, with its own header:
  one Spark read over several CSV files takes the first file's header for all of them and
  silently misaligns files whose columns are in another order.

Locators: ``line:N`` (1-based) for jsonl; ``item:I`` / ``item:I/J`` (0-based array indices)
for json, ``file`` for a whole file (txt/md, or a json file that fails as a whole);
``row:<id_field value or h(row as JSON)>`` for tabular rows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.ids import h_col
from graphgen_spark.text import utf8_safe

STR = T.StringType()

PARSED = T.StructType(
    [
        T.StructField("source", STR),
        T.StructField("locator", STR),
        T.StructField("source_id", STR),
        T.StructField("text", STR),
        T.StructField("format", STR),
        T.StructField("prechunked", T.BooleanType()),
        T.StructField("parts", T.ArrayType(STR)),
        T.StructField("metadata", T.MapType(STR, STR)),
        T.StructField("reason", STR),
        T.StructField("detail", STR),
        T.StructField("excerpt", STR),
    ]
)
PARSED_COLS = [f.name for f in PARSED.fields]

# Quarantine reasons of the ingest stage.
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_TEXT = "missing_text"
DECODE_ERROR = "decode_error"
EMPTY_DOCUMENT = "empty_document"
OVERSIZED_DOCUMENT = "oversized_document"
UNSUPPORTED_FORMAT = "unsupported_format"
REASONS = (
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    MISSING_TEXT,
    DECODE_ERROR,
    EMPTY_DOCUMENT,
    OVERSIZED_DOCUMENT,
    UNSUPPORTED_FORMAT,
)

TEXT_FORMATS = ("jsonl", "json", "txt", "md")
TABULAR_FORMATS = ("csv", "parquet")
FILE_FORMATS = TEXT_FORMATS + TABULAR_FORMATS
DEFAULT_TEXT_FIELDS = ("content", "text")
EXCERPT_CHARS = 200
BOM = b"\xef\xbb\xbf"

# Exactly the characters Python's str.isspace() accepts, as a Java regex class, so the
# Spark-side "empty after strip" check agrees with the chunker's Python str.strip().
_JAVA_SPACE = r"[\t\n\x0b\f\r\x1c-\x1f\x85\p{Z}]"
BLANK_REGEX = f"^{_JAVA_SPACE}*$"

# Flush a parsed batch at this many rows or characters (bounded Arrow batches).
_FLUSH_ROWS = 2000
_FLUSH_CHARS = 32 << 20


# -- paths and extensions ---------------------------------------------------------------------
_EXT = r"[^/.]\.([^./]+)$"


def extension(path: str) -> str:
    """Lower-cased extension of the file name, '' when it has none."""
    m = re.search(_EXT, path)
    return m.group(1).lower() if m else ""


def extension_col(path: Column) -> Column:
    """Spark twin of :func:`extension`."""
    return F.lower(F.regexp_extract(path, _EXT, 1))


_FILE_URI = r"^file:(//)?(?=/)"


def plain_path(path: Column) -> Column:
    """``file:/x`` and ``file:///x`` URIs as plain local paths; other schemes unchanged."""
    return F.regexp_replace(path, _FILE_URI, "")


def decoded_path(uri: Column) -> Column:
    """A percent-encoded file URI (``_metadata.file_path``) as a plain path.

    ``+`` is literal in a URI path, so it is protected before URL-decoding.
    """
    return plain_path(F.url_decode(F.regexp_replace(uri, r"\+", "%2B")))


def literal_path(path: str) -> str:
    """A file path with Hadoop glob characters escaped, for Spark readers that glob paths."""
    return re.sub(r"([\\{}\[\]*?])", r"\\\1", path)


def case_insensitive_glob(exts: Iterable[str]) -> str:
    """Hadoop glob (``pathGlobFilter``) matching file names ending in any of ``exts``."""

    def ci(s: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in s)

    return "*.{" + ",".join(ci(e) for e in exts) + "}"


# -- one JSON record -----------------------------------------------------------------------
def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _scalar_str(value: Any) -> str | None:
    if isinstance(value, str):
        return utf8_safe(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value) if math.isfinite(value) else str(value)
    return None


def _dump(value: Any) -> str:
    return utf8_safe(json.dumps(value, ensure_ascii=False, allow_nan=True))


def _trim(value: Any, depth: int = 0) -> Any:
    # enough of a JSON value to show its first EXCERPT_CHARS characters
    if isinstance(value, str):
        return value[: EXCERPT_CHARS + 1]
    if depth > 4:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())[:EXCERPT_CHARS]
        return {k: _trim(v, depth + 1) for k, v in items}
    if isinstance(value, list):
        return [_trim(v, depth + 1) for v in value[:EXCERPT_CHARS]]
    return value


def raw_excerpt(value: Any) -> str:
    """The start of a JSON value as text, without serialising long strings in full."""
    return _dump(_trim(value))[:EXCERPT_CHARS]


def text_field_of(obj: dict, text_field: str | None) -> str | None:
    """The field the text comes from: the configured one, or the first present default."""
    if text_field is not None:
        return text_field if text_field in obj else None
    for name in DEFAULT_TEXT_FIELDS:
        if obj.get(name) is not None:
            return name
    return None


def parse_record(
    obj: Any, text_field: str | None, id_field: str | None
) -> tuple[str, str | None, dict[str, str]] | tuple[None, str, str]:
    """A JSON value as ``(text, source_id, metadata)`` or ``(None, reason, detail)``."""
    if not isinstance(obj, dict):
        return None, NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(obj)}"
    field = text_field_of(obj, text_field)
    if field is None:
        wanted = repr(text_field) if text_field else " or ".join(map(repr, DEFAULT_TEXT_FIELDS))
        keys = ", ".join(sorted(map(str, obj))) or "none"
        return None, MISSING_TEXT, f"no text field {wanted} (fields: {keys})"
    text = obj[field]
    if not isinstance(text, str):
        return None, MISSING_TEXT, f"field {field!r} is {_json_type(text)}, not a string"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return None, DECODE_ERROR, f"field {field!r} is not valid Unicode: {exc}"
    source_id = None
    if id_field is not None and obj.get(id_field) is not None:
        source_id = _scalar_str(obj[id_field])
        if source_id is None:
            source_id = _dump(obj[id_field])
    metadata: dict[str, str] = {}
    for key, value in obj.items():
        if key in (field, id_field) or value is None:
            continue
        sval = _scalar_str(value)
        if sval is not None:
            metadata[utf8_safe(str(key))] = sval
    return text, source_id, metadata


# -- whole files ---------------------------------------------------------------------------
def _doc(src, loc, text, fmt, raw, source_id=None, metadata=None, prechunked=False, parts=None):
    return {
        "source": src,
        "locator": loc,
        "source_id": source_id,
        "text": text,
        "format": fmt,
        "prechunked": prechunked,
        "parts": parts,
        "metadata": metadata or {},
        "reason": None,
        "detail": None,
        "excerpt": utf8_safe(raw[:EXCERPT_CHARS]),
    }


def _bad(src, loc, fmt, reason, detail, excerpt):
    return {
        "source": src,
        "locator": loc,
        "source_id": None,
        "text": None,
        "format": fmt,
        "prechunked": None,
        "parts": None,
        "metadata": None,
        "reason": reason,
        "detail": utf8_safe(str(detail)),
        "excerpt": utf8_safe(excerpt[:EXCERPT_CHARS]) if excerpt is not None else None,
    }


def _decode_excerpt(data: bytes) -> str:
    return data[: EXCERPT_CHARS * 4].decode("utf-8", "replace")[:EXCERPT_CHARS]


def parse_jsonl(
    src: str, data: bytes, text_field: str | None, id_field: str | None
) -> Iterator[dict]:
    """One document per line; blank lines are not records. Each line is decoded on its own."""
    if data.startswith(BOM):
        data = data[len(BOM) :]
    for n, raw in enumerate(data.split(b"\n"), start=1):
        loc = f"line:{n}"
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _bad(src, loc, "jsonl", DECODE_ERROR, exc, _decode_excerpt(raw))
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            yield _bad(src, loc, "jsonl", MALFORMED_JSON, exc, line)
            continue
        yield _record_row(src, loc, "jsonl", obj, line, text_field, id_field)


def _record_row(src, loc, fmt, obj, raw, text_field, id_field) -> dict:
    text, second, third = parse_record(obj, text_field, id_field)
    if text is None:
        return _bad(src, loc, fmt, second, third, raw)
    return _doc(src, loc, text, fmt, raw, source_id=second, metadata=third)


def parse_json(
    src: str, data: bytes, text_field: str | None, id_field: str | None
) -> Iterator[dict]:
    """A list of objects (a document each) and/or lists (a pre-chunked document each).

    A top-level object is one document (locator ``file``). In a pre-chunked document the
    bad elements are quarantined at ``item:I/J`` and the document keeps the good ones; an
    empty inner list is an ``empty_document``.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield _bad(src, "file", "json", DECODE_ERROR, exc, _decode_excerpt(data))
        return
    try:
        top = json.loads(text)
    except (ValueError, RecursionError) as exc:
        yield _bad(src, "file", "json", MALFORMED_JSON, exc, text)
        return
    if isinstance(top, dict):
        yield _record_row(src, "file", "json", top, text, text_field, id_field)
        return
    if not isinstance(top, list):
        detail = f"expected a JSON array or object, got {_json_type(top)}"
        yield _bad(src, "file", "json", NOT_AN_OBJECT, detail, text)
        return
    for i, item in enumerate(top):
        if not isinstance(item, list):
            raw = raw_excerpt(item)
            yield _record_row(src, f"item:{i}", "json", item, raw, text_field, id_field)
            continue
        parts: list[str] = []
        source_id = None
        metadata: dict[str, str] = {}
        for j, part in enumerate(item):
            ptext, second, third = parse_record(part, text_field, id_field)
            if ptext is None:
                yield _bad(src, f"item:{i}/{j}", "json", second, third, raw_excerpt(part))
                continue
            parts.append(ptext)
            source_id = source_id if source_id is not None else second
            for k, v in third.items():
                metadata.setdefault(k, v)
        if item and not parts:
            continue  # every part is quarantined at item:I/J already
        yield _doc(
            src,
            f"item:{i}",
            "\n".join(parts),
            "json",
            raw_excerpt(item),
            source_id=source_id,
            metadata=metadata,
            prechunked=True,
            parts=parts,
        )


def parse_text_file(src: str, data: bytes, fmt: str) -> Iterator[dict]:
    """A whole .txt/.md file is one document (UTF-8, BOM dropped, otherwise unchanged)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield _bad(src, "file", fmt, DECODE_ERROR, exc, _decode_excerpt(data))
        return
    yield _doc(src, "file", text, fmt, text)


def parse_file(
    src: str, data: bytes, fmt: str, text_field: str | None, id_field: str | None
) -> Iterator[dict]:
    if fmt == "jsonl":
        yield from parse_jsonl(src, data, text_field, id_field)
    elif fmt == "json":
        yield from parse_json(src, data, text_field, id_field)
    elif fmt in ("txt", "md"):
        yield from parse_text_file(src, data, fmt)
    else:
        detail = f"cannot read {fmt or 'extension-less'!r} files here"
        yield _bad(src, "file", fmt, UNSUPPORTED_FORMAT, detail, None)


def _guarded(src, data, fmt, text_field, id_field) -> Iterator[dict]:
    """:func:`parse_file`, but an unexpected failure quarantines the file instead of failing
    the task (and with it the job)."""
    try:
        yield from parse_file(src, data, fmt, text_field, id_field)
    except Exception as exc:  # the quarantine row is the record of the failure
        reason = MALFORMED_JSON if fmt in ("json", "jsonl") else DECODE_ERROR
        yield _bad(src, "file", fmt, reason, f"{type(exc).__name__}: {exc}", None)


def parse_files(fmt: str | None, text_field: str | None, id_field: str | None):
    """A ``mapInPandas`` function over ``binaryFile`` rows (``path``, ``content``).

    ``fmt`` None picks the format per file from its extension. Output rows follow
    :data:`PARSED`, flushed in bounded batches.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        rows: list[dict] = []
        chars = 0
        for pdf in batches:
            for path, content in zip(pdf["path"], pdf["content"], strict=True):
                src = re.sub(_FILE_URI, "", path)
                file_fmt = fmt or extension(src)
                for row in _guarded(src, bytes(content), file_fmt, text_field, id_field):
                    rows.append(row)
                    chars += len(row["text"] or "")
                    if len(rows) >= _FLUSH_ROWS or chars >= _FLUSH_CHARS:
                        yield pd.DataFrame(rows, columns=PARSED_COLS)
                        rows, chars = [], 0
        if rows:
            yield pd.DataFrame(rows, columns=PARSED_COLS)

    return run


# -- tabular rows ------------------------------------------------------------------------------
_SCALAR_TYPES = (
    T.StringType,
    T.BooleanType,
    T.ByteType,
    T.ShortType,
    T.IntegerType,
    T.LongType,
    T.FloatType,
    T.DoubleType,
    T.DecimalType,
    T.DateType,
    T.TimestampType,
    T.TimestampNTZType,
)


def _col(name: str) -> Column:
    """A top-level column by its exact name (dots, spaces or backticks in it are fine)."""
    return F.col("`" + name.replace("`", "``") + "`")


def _find_column(df: DataFrame, name: str) -> str | None:
    if name in df.columns:
        return name
    folded = [c for c in df.columns if c.lower() == name.lower()]
    return folded[0] if folded else None


def tabular_rows(
    df: DataFrame,
    source: Column,
    fmt: str,
    text_field: str | None,
    id_field: str | None,
) -> DataFrame:
    """Rows of a csv/parquet/table DataFrame as :data:`PARSED` rows (DataFrame ops only).

    Text comes from ``text_field`` (default: the first present of ``content``, ``text``
    columns); a missing column, a non-string column or a NULL value is ``missing_text``.
    ``id_field`` becomes ``source_id``; other scalar columns become ``metadata`` (as
    strings, NULLs left out). The locator is ``row:<id>``, or ``row:<h(row as JSON)>``.
    """
    orig = list(df.columns)
    row_json = F.to_json(F.struct(*[_col(c) for c in orig]))
    candidates = [text_field] if text_field is not None else list(DEFAULT_TEXT_FIELDS)
    found = [c for c in (_find_column(df, n) for n in candidates) if c is not None]
    tcol = found[0] if found else None
    icol = _find_column(df, id_field) if id_field is not None else None
    types = {f.name: f.dataType for f in df.schema.fields}

    if tcol is None:
        wanted = repr(text_field) if text_field else " or ".join(map(repr, DEFAULT_TEXT_FIELDS))
        text = F.lit(None).cast(STR)
        reason = F.lit(MISSING_TEXT)
        detail = F.lit(f"no text column {wanted} (columns: {', '.join(orig) or 'none'})")
    elif not isinstance(types[tcol], T.StringType):
        text = F.lit(None).cast(STR)
        reason = F.lit(MISSING_TEXT)
        detail = F.lit(f"column {tcol!r} is {types[tcol].simpleString()}, not a string")
    else:
        text = _col(tcol)
        reason = F.when(text.isNull(), F.lit(MISSING_TEXT))
        detail = F.when(text.isNull(), F.lit(f"column {tcol!r} is NULL"))

    source_id = _col(icol).cast(STR) if icol else F.lit(None).cast(STR)
    meta_cols = [c for c in orig if c not in (tcol, icol) and isinstance(types[c], _SCALAR_TYPES)]
    if meta_cols:
        pairs = []
        for c in meta_cols:
            pairs += [F.lit(c), _col(c).cast(STR)]
        metadata = F.map_filter(F.create_map(*pairs), lambda _k, v: v.isNotNull())
    else:
        metadata = F.create_map().cast(T.MapType(STR, STR))
    locator = F.concat(F.lit("row:"), F.coalesce(source_id, h_col(row_json)))
    return df.select(
        source.alias("source"),
        locator.alias("locator"),
        source_id.alias("source_id"),
        text.alias("text"),
        F.lit(fmt).alias("format"),
        F.lit(False).alias("prechunked"),
        F.lit(None).cast(T.ArrayType(STR)).alias("parts"),
        metadata.alias("metadata"),
        reason.cast(STR).alias("reason"),
        detail.cast(STR).alias("detail"),
        F.substring(row_json, 1, EXCERPT_CHARS).alias("excerpt"),
    )
