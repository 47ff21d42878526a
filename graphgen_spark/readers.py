"""Input format readers for the ingest stage (method.md §2.1).

Every reader turns its input into rows of one shape, :data:`PARSED`: a document candidate
(``reason`` NULL) or a rejected record (``reason`` set, with the parser's ``detail`` and a
200-character ``excerpt`` of the raw record). The stage then applies the checks common to
all formats (empty, oversized), collapses identical documents and MERGEs.

- Text formats (``.jsonl``, ``.json``, ``.txt``, ``.md``) are read as whole files with
  Spark's ``binaryFile`` source and decoded *inside the executors* (:func:`parse_files`
  through ``mapInPandas``); file contents never reach the driver. UTF-8 (BOM or not), or
  UTF-16 / UTF-32 with a BOM (:func:`as_utf8`).
- ``.csv``, ``.parquet`` and Delta / catalog tables use Spark's own readers; a row is a
  document (:func:`tabular_rows`, :func:`csv_rows`). All CSV files are read at once, each
  with its own header: one plain Spark read takes the first file's header for all of them
  and silently misaligns files whose columns are in another order, so the rows are read by
  position and named per file (:func:`csv_header`).
- A whole file that cannot be read (empty, unreadable parquet, a symbolic link leaving the
  input folder) is one row at locator ``file`` (:func:`file_reject`).

Locators: ``line:N`` (1-based) for jsonl; ``item:I`` / ``item:I/J`` (0-based array indices)
for json, ``file`` for a whole file (txt/md, or a json file that fails as a whole);
``row:<id_field value or h(row as JSON)>`` for tabular rows.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.errors import UsageError
from graphgen_spark.ids import h_col
from graphgen_spark.tables import EXCERPT_CHARS, local_path
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


def as_parsed(df: DataFrame, **cols: Column) -> DataFrame:
    """``df`` projected to :data:`PARSED`: the given columns, typed NULLs for the others."""
    return df.select(
        *[cols.get(f.name, F.lit(None)).cast(f.dataType).alias(f.name) for f in PARSED.fields]
    )


# Quarantine reasons of the ingest stage.
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_TEXT = "missing_text"
DECODE_ERROR = "decode_error"
EMPTY_DOCUMENT = "empty_document"
OVERSIZED_DOCUMENT = "oversized_document"
UNSUPPORTED_FORMAT = "unsupported_format"
EMPTY_FILE = "empty_file"
CORRUPT_FILE = "corrupt_file"
UNFOLLOWED_SYMLINK = "unfollowed_symlink"
REASONS = (
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    MISSING_TEXT,
    DECODE_ERROR,
    EMPTY_DOCUMENT,
    OVERSIZED_DOCUMENT,
    UNSUPPORTED_FORMAT,
    EMPTY_FILE,
    CORRUPT_FILE,
    UNFOLLOWED_SYMLINK,
)

TEXT_FORMATS = ("jsonl", "json", "txt", "md")
WHOLE_FILE_FORMATS = ("txt", "md")  # one file, one document
RECORD_FORMATS = ("jsonl", "json")
TABULAR_FORMATS = ("csv", "parquet")
FILE_FORMATS = TEXT_FORMATS + TABULAR_FORMATS
DEFAULT_TEXT_FIELDS = ("content", "text")
BOM = codecs.BOM_UTF8
# UTF-32 first: its little-endian BOM starts with UTF-16's.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# Exactly the characters Python's str.isspace() accepts, as a Java regex class, so the
# Spark-side "empty after strip" check agrees with the chunker's Python str.strip().
_JAVA_SPACE = r"[\t\n\x0b\f\r\x1c-\x1f\x85\p{Z}]"
BLANK_REGEX = f"^{_JAVA_SPACE}*$"

# Flush a parsed batch at this many rows or characters (bounded Arrow batches).
_FLUSH_ROWS = 2000
_FLUSH_CHARS = 32 << 20


# -- paths and extensions ---------------------------------------------------------------------
_EXT = r"[^/.]\.([^./]+)$"


def check_input(path: str | None, fmt: str) -> None:
    """Stop before Spark starts when ``--input`` is missing or a local path cannot be read.

    Remote stores (``s3://``, ``dbfs:/``...) and table names (``input.format: table``) are
    left to Spark, which alone can reach them.
    """
    if not path:
        raise UsageError("--input is required when the ingest stage runs")
    local = local_path(path)
    if local is None or (fmt == "table" and os.sep not in path and not local.exists()):
        return
    if not local.exists():
        raise UsageError(f"--input {path}: no such file or folder")
    if not os.access(local, os.R_OK | (os.X_OK if local.is_dir() else 0)):
        raise UsageError(f"--input {path}: not readable by this user")


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


def file_reject(src: str, fmt: str | None, reason: str, detail: str) -> dict:
    """A :data:`PARSED` row rejecting a whole file (locator ``file``)."""
    return _bad(src, "file", fmt, reason, detail, None)


def _decode_excerpt(data: bytes) -> str:
    return data[: EXCERPT_CHARS * 4].decode("utf-8", "replace")[:EXCERPT_CHARS]


def as_utf8(data: bytes) -> bytes:
    """UTF-16 or UTF-32 text, told by its byte-order mark, re-encoded as UTF-8 (BOM dropped);
    any other bytes unchanged. Raises ``UnicodeDecodeError`` on an invalid wide text.

    Without this a UTF-16 file fails as UTF-8 (``0xff`` at position 0), or, with ASCII
    content, would pass with a NUL between every two characters.
    """
    for bom, codec in _WIDE_BOMS:
        if data.startswith(bom):
            return data.decode(codec).encode("utf-8")
    return data


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


def _parse_utf8(
    src: str, data: bytes, fmt: str, text_field: str | None, id_field: str | None
) -> Iterator[dict]:
    if fmt == "jsonl":
        yield from parse_jsonl(src, data, text_field, id_field)
    elif fmt == "json":
        yield from parse_json(src, data, text_field, id_field)
    elif fmt in WHOLE_FILE_FORMATS:
        yield from parse_text_file(src, data, fmt)
    else:
        detail = f"cannot read {fmt or 'extension-less'!r} files here"
        yield file_reject(src, fmt, UNSUPPORTED_FORMAT, detail)


def parse_file(
    src: str, data: bytes, fmt: str, text_field: str | None, id_field: str | None
) -> Iterator[dict]:
    """The rows of one file; a file with no record at all is one ``empty_file`` row, so an
    empty ``.jsonl`` or ``[]`` leaves a trace."""
    if not data:
        yield file_reject(src, fmt, EMPTY_FILE, "empty file (0 bytes)")
        return
    try:
        utf8 = as_utf8(data)
    except UnicodeDecodeError as exc:
        yield _bad(src, "file", fmt, DECODE_ERROR, exc, _decode_excerpt(data))
        return
    empty = True
    for row in _parse_utf8(src, utf8, fmt, text_field, id_field):
        empty = False
        yield row
    if empty:
        detail = f"no records in its {len(data)} bytes (blank lines or an empty array)"
        yield file_reject(src, fmt, EMPTY_FILE, detail)


def _guarded(src, data, fmt, text_field, id_field) -> Iterator[dict]:
    """:func:`parse_file`, but an unexpected failure quarantines the file instead of failing
    the task (and with it the job)."""
    try:
        yield from parse_file(src, data, fmt, text_field, id_field)
    except Exception as exc:  # the quarantine row is the record of the failure
        reason = MALFORMED_JSON if fmt in ("json", "jsonl") else DECODE_ERROR
        yield file_reject(src, fmt, reason, f"{type(exc).__name__}: {exc}")


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


def column(name: str) -> Column:
    """A top-level column by its exact name (dots, spaces or backticks in it are fine)."""
    return F.col("`" + name.replace("`", "``") + "`")


def _find_name(names: list[str], name: str) -> str | None:
    if name in names:
        return name
    folded = [c for c in names if c.lower() == name.lower()]
    return folded[0] if folded else None


def pick_columns(
    names: list[str], text_field: str | None, id_field: str | None
) -> tuple[str | None, str | None, str]:
    """``(text column, id column, why there is no text column)`` among ``names``.

    The text column is ``text_field`` or the first present of :data:`DEFAULT_TEXT_FIELDS`
    (case-insensitive when no exact match).
    """
    candidates = [text_field] if text_field is not None else list(DEFAULT_TEXT_FIELDS)
    found = [c for c in (_find_name(names, n) for n in candidates) if c is not None]
    icol = _find_name(names, id_field) if id_field is not None else None
    wanted = repr(text_field) if text_field else " or ".join(map(repr, DEFAULT_TEXT_FIELDS))
    why = f"no text column {wanted} (columns: {', '.join(names) or 'none'})"
    return (found[0] if found else None), icol, why


def _row_locator(source_id: Column, row_json: Column) -> Column:
    return F.concat(F.lit("row:"), F.coalesce(source_id, h_col(row_json)))


def tabular_rows(
    df: DataFrame,
    source: Column,
    fmt: str,
    text_field: str | None,
    id_field: str | None,
) -> DataFrame:
    """Rows of a parquet/table DataFrame as :data:`PARSED` rows (DataFrame ops only).

    Text comes from ``text_field`` (default: the first present of ``content``, ``text``
    columns); a missing column, a non-string column or a NULL value is ``missing_text``.
    ``id_field`` becomes ``source_id``; other scalar columns become ``metadata`` (as
    strings, NULLs left out). The locator is ``row:<id>``, or ``row:<h(row as JSON)>``.
    """
    orig = list(df.columns)
    row_json = F.to_json(F.struct(*[column(c) for c in orig]))
    tcol, icol, why = pick_columns(orig, text_field, id_field)
    types = {f.name: f.dataType for f in df.schema.fields}

    if tcol is None:
        text = F.lit(None)
        reason = F.lit(MISSING_TEXT)
        detail = F.lit(why)
    elif not isinstance(types[tcol], T.StringType):
        text = F.lit(None)
        reason = F.lit(MISSING_TEXT)
        detail = F.lit(f"column {tcol!r} is {types[tcol].simpleString()}, not a string")
    else:
        text = column(tcol)
        reason = F.when(text.isNull(), F.lit(MISSING_TEXT))
        detail = F.when(text.isNull(), F.lit(f"column {tcol!r} is NULL"))

    source_id = column(icol).cast(STR) if icol else F.lit(None).cast(STR)
    meta_cols = [c for c in orig if c not in (tcol, icol) and isinstance(types[c], _SCALAR_TYPES)]
    if meta_cols:
        pairs = []
        for c in meta_cols:
            pairs += [F.lit(c), column(c).cast(STR)]
        metadata = F.map_filter(F.create_map(*pairs), lambda _k, v: v.isNotNull())
    else:
        metadata = F.create_map()
    return as_parsed(
        df,
        source=source,
        locator=_row_locator(source_id, row_json),
        source_id=source_id,
        text=text,
        format=F.lit(fmt),
        prechunked=F.lit(False),
        metadata=metadata,
        reason=reason,
        detail=detail,
        excerpt=F.substring(row_json, 1, EXCERPT_CHARS),
    )


# -- CSV: one read, a header per file ------------------------------------------------------------
CSV_FILES = T.StructType(
    [
        T.StructField("source", STR),
        T.StructField("names", T.ArrayType(STR)),
        T.StructField("tcol", STR),
        T.StructField("icol", STR),
        T.StructField("why", STR),
    ]
)


def csv_header(line: str) -> list[str]:
    """Column names from a CSV header line, as Spark's CSV reader names them: an empty name
    is ``_c<i>``, a name repeated (case-insensitively) gets its index appended; names still
    repeated after that get ``_<i>`` too (Spark would fail on them)."""
    row = next(csv.reader([line.removeprefix("\ufeff")]), [])
    counts = Counter(v.lower() for v in row if v)
    names = [
        f"_c{i}" if not v else f"{v}{i}" if counts[v.lower()] > 1 else v for i, v in enumerate(row)
    ]
    taken = Counter(n.lower() for n in names)
    return [f"{n}_{i}" if taken[n.lower()] > 1 else n for i, n in enumerate(names)]


def positional_names(header: list[str], width: int) -> list[str]:
    """``width`` distinct column names for reading CSV rows by position: ``header`` (so that
    files with it pass Spark's header check without a warning), then ``_c<i>``."""
    names = list(header[:width])
    taken = {n.lower() for n in names}
    for i in range(len(names), width):
        name = f"_c{i}"
        while name.lower() in taken:
            name = "_" + name
        names.append(name)
        taken.add(name.lower())
    return names


def csv_file_row(
    source: str, header: str, text_field: str | None, id_field: str | None
) -> tuple[str, list[str], str | None, str | None, str]:
    """A :data:`CSV_FILES` row: one file's column names and the columns it takes text and id
    from."""
    names = csv_header(header)
    return (source, names, *pick_columns(names, text_field, id_field))


def csv_rows(values: DataFrame, files: DataFrame) -> DataFrame:
    """CSV records read by position (``source``, ``values`` array) as :data:`PARSED` rows,
    named by their file's header (``files``, :data:`CSV_FILES`); the same rows, locators and
    metadata as :func:`tabular_rows` over that file alone."""
    df = values.join(F.broadcast(files), "source")
    row = F.map_from_arrays("names", F.slice("values", 1, F.size("names")))
    present = F.map_filter(row, lambda _k, v: v.isNotNull())
    tcol, icol = F.col("tcol"), F.col("icol")
    text = F.element_at(row, tcol)
    source_id = F.element_at(row, icol)
    meta = F.map_filter(
        present,
        lambda k, _v: F.coalesce(k != tcol, F.lit(True)) & F.coalesce(k != icol, F.lit(True)),
    )
    no_text = F.concat(F.lit("column '"), tcol, F.lit("' is NULL"))
    row_json = F.to_json(present)
    return as_parsed(
        df,
        source=F.col("source"),
        locator=_row_locator(source_id, row_json),
        source_id=source_id,
        text=text,
        format=F.lit("csv"),
        prechunked=F.lit(False),
        metadata=meta,
        reason=F.when(tcol.isNull() | text.isNull(), F.lit(MISSING_TEXT)),
        detail=F.when(tcol.isNull(), F.col("why")).when(text.isNull(), no_text),
        excerpt=F.substring(row_json, 1, EXCERPT_CHARS),
    )
