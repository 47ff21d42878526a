"""Generate stage (§7): the `qa` table from the batches of each configured mode.

For every mode: its batches (`subgraphs` of the mode's method and current configuration),
capped in batch rank order before any call (`generate.max_batches`, `max_qa`,
`max_qa_per_doc`); each batch rendered as numbered facts with its target language, style
and difficulty; one program per unit on the executors (:mod:`graphgen_spark.generate.programs`);
valid items become QA rows with full lineage (node, edge, chunk and document ids, loss,
difficulty, the producing request), invalid units go to `quarantine` with the reason.
``qa_id`` is deterministic, so a rerun adds nothing and makes no calls.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from graphgen_spark.config import Config
from graphgen_spark.evaluate.near_dup import near_duplicate_clusters
from graphgen_spark.generate.programs import NAME, calls_per_unit, make_program
from graphgen_spark.ids import h, h_col, rr
from graphgen_spark.language import main_language
from graphgen_spark.llm.executor import LLMExecutor, LLMWork
from graphgen_spark.partition.plan import config_hash, method_for
from graphgen_spark.prompts.generate import PROMPT_VERSION, render_batch
from graphgen_spark.stages.base import LLMDemand, Stage, StageContext, StageResult
from graphgen_spark.tables import SCHEMAS, UpdateWhenChanged, as_quarantine
from graphgen_spark.tokenizer import count_tokens

# what every QA row carries from its batch (method §1 rule 3)
LINEAGE = ("node_ids", "edge_ids", "chunk_ids", "doc_ids", "loss", "difficulty")
ITEM_MODES = ("multiple_choice", "multi_answer", "fill_in_blank", "true_false")
UNIT_SCHEMA = T.StructType(
    [
        T.StructField(n, t)
        for n, t in [
            ("unit_id", T.StringType()),
            ("batch_id", T.StringType()),
            ("part", T.IntegerType()),
            ("facts", T.StringType()),
            ("language", T.StringType()),
            ("n_relations", T.IntegerType()),
            ("n_items", T.IntegerType()),
            ("question_style", T.StringType()),
            ("difficulty_word", T.StringType()),
            ("prompt_tokens", T.IntegerType()),
        ]
    ]
)
OUTCOME_SCHEMA = T.StructType(
    [
        T.StructField(n, T.StringType())
        for n in ("unit_id", "status", "reason", "detail", "items", "request_id")
    ]
)
ITEM_SCHEMA = (
    "array<struct<question:string,answer:string,options:map<string,string>,"
    "answers:array<string>,reasoning_path:string,supported:boolean,check_reason:string>>"
)


def n_items(cfg: Config, mode: str) -> int:
    if mode not in ITEM_MODES:
        return 1
    return cfg.generate.num_questions or (2 if mode == "true_false" else 5)


def normalise_question(text: str | None) -> str:
    """Exact-duplicate key: NFKC, casefold, letters and digits only."""
    t = unicodedata.normalize("NFKC", text or "").casefold()
    return re.sub(r"[\W_]+", "", t)


# -- batches with their facts ---------------------------------------------------------------
def mode_batches(ctx: StageContext, mode: str) -> DataFrame:
    """The mode's batches with rendered facts inputs and lineage, capped in rank order."""
    cfg, tables = ctx.cfg, ctx.tables
    method = method_for(cfg, mode)
    chash = config_hash(cfg, method)
    b = tables.read("subgraphs").filter(
        (F.col("method") == method) & (F.col("config_hash") == chash)
    )
    facts = ["description", "descriptions", "summarised"]
    lineage = ["chunk_ids", "doc_ids"]
    ents = tables.read("entities").select("entity_id", "name", "is_placeholder", *facts, *lineage)
    rels = tables.read("relations").select("edge_id", "src_name", "dst_name", *facts, *lineage)
    placeholder_blank = (
        F.when(F.col("is_placeholder"), F.lit(""))
        .otherwise(F.col("description"))
        .alias("description")
    )
    nodes = _gathered(b, "node_ids", ents, ["name", placeholder_blank, *facts[1:]], "ents", "n")
    edges = _gathered(b, "edge_ids", rels, ["src_name", "dst_name", *facts], "rels", "e")
    out = (
        b.join(nodes, "batch_id", "left")
        .join(edges, "batch_id", "left")
        .withColumn("chunk_ids", _sorted_union("n_chunks", "e_chunks"))
        .withColumn("doc_ids", _sorted_union("n_docs", "e_docs"))
        .drop("n_chunks", "e_chunks", "n_docs", "e_docs")
    )
    return _capped(ctx, out, mode)


def _gathered(
    batches: DataFrame, ids: str, facts: DataFrame, fields: list, alias: str, prefix: str
) -> DataFrame:
    """Per batch, its facts (``fields``) in the batch's own order as ``alias``, plus the
    chunks and documents they came from as ``{prefix}_chunks`` / ``{prefix}_docs``."""
    key = facts.columns[0]
    return (
        batches.select("batch_id", F.posexplode(ids).alias("pos", key))
        .join(facts, key)
        .groupBy("batch_id")
        .agg(
            F.sort_array(F.collect_list(F.struct("pos", *fields))).alias(alias),
            F.flatten(F.collect_list("chunk_ids")).alias(f"{prefix}_chunks"),
            F.flatten(F.collect_list("doc_ids")).alias(f"{prefix}_docs"),
        )
    )


def _sorted_union(*columns: str) -> Column:
    """The distinct values of array columns (null as empty), sorted: a batch's lineage."""
    empty = F.array().cast("array<string>")
    return F.array_sort(F.array_distinct(F.concat(*(F.coalesce(c, empty) for c in columns))))


def _capped(ctx: StageContext, batches: DataFrame, mode: str) -> DataFrame:
    """Volume caps (§7.4) in batch rank order, before any call."""
    gen = ctx.cfg.generate
    per = n_items(ctx.cfg, mode)
    order = [F.col("seed_rank").asc_nulls_last(), F.col("batch_id")]
    if gen.max_qa_per_doc:
        chunk_doc = ctx.tables.read("chunks").select("chunk_id", "doc_id")
        main_doc = (
            batches.select("batch_id", F.explode("chunk_ids").alias("chunk_id"))
            .join(chunk_doc, "chunk_id")
            .groupBy("batch_id", "doc_id")
            .count()
            .withColumn(
                "_r",
                F.row_number().over(
                    Window.partitionBy("batch_id").orderBy(F.desc("count"), "doc_id")
                ),
            )
            .filter("_r = 1")
            .select("batch_id", F.col("doc_id").alias("main_doc"))
        )
        batches = batches.join(main_doc, "batch_id", "left")
        in_doc = F.row_number().over(Window.partitionBy("main_doc").orderBy(*order))
        batches = batches.filter(in_doc * per <= gen.max_qa_per_doc)
    caps = [
        c for c in (gen.max_batches, (gen.max_qa + per - 1) // per if gen.max_qa else None) if c
    ]
    if caps:
        batches = batches.withColumn("_n", F.row_number().over(Window.orderBy(*order)))
        batches = batches.filter(F.col("_n") <= min(caps)).drop("_n")
    return batches


def pending_units(ctx: StageContext, units: DataFrame) -> DataFrame:
    """Units whose QA is not stored yet (qa_id is deterministic, so stored means done)."""
    part = F.when(F.col("mode") == "atomic", F.col("item_index")).otherwise(F.lit(0))
    have = (
        ctx.tables.read("qa")
        .select(h_col("batch_id", F.col("mode"), part.cast("string")).alias("unit_id"))
        .distinct()
    )
    return units.join(have, "unit_id", "left_anti")


def _units_fn(cfg: Config, mode: str):
    """Rows of UNIT_SCHEMA: render each batch (atomic: one unit per merged description)."""
    styles = list(cfg.style.question_styles)
    order = list(cfg.style.difficulty_order)
    per = n_items(cfg, mode)
    force = cfg.language.force
    split = mode == "atomic" and cfg.generate.split_descriptions

    def variants(ents: list[dict], rels: list[dict]) -> list[tuple[list[dict], list[dict]]]:
        if not (split and len(ents) + len(rels) == 1):
            return [(ents, rels)]
        elem = (ents or rels)[0]
        descs = list(elem["descriptions"]) if elem["descriptions"] is not None else []
        if elem["summarised"] or len(descs) < 2:
            return [(ents, rels)]
        alone = [{**elem, "description": d} for d in descs]
        return [([e], []) if ents else ([], [e]) for e in alone]

    def units(r: dict) -> list[dict]:
        ents = list(r["ents"]) if r["ents"] is not None else []
        rels = list(r["rels"]) if r["rels"] is not None else []
        style = styles[int(rr(cfg.run.seed, r["batch_id"]), 16) % len(styles)]
        tier = r["difficulty"]
        word = order[int(tier)] if cfg.style.difficulty and not pd.isna(tier) else ""
        out = []
        for i, (es, rs) in enumerate(variants(ents, rels)):
            facts = render_batch(
                [(e["name"], e["description"] or "") for e in es],
                [(x["src_name"], x["dst_name"], x["description"] or "") for x in rs],
            )
            out.append(
                {
                    "unit_id": h(r["batch_id"], mode, i),
                    "batch_id": r["batch_id"],
                    "part": i,
                    "facts": facts,
                    "language": force or main_language(facts),
                    "n_relations": len(rs),
                    "n_items": per,
                    "question_style": style,
                    "difficulty_word": word,
                    "prompt_tokens": count_tokens(facts),
                }
            )
        return out

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            rows = [u for r in pdf.to_dict("records") for u in units(r)]
            yield pd.DataFrame(rows, columns=UNIT_SCHEMA.fieldNames())

    return run


# -- the stage -------------------------------------------------------------------------------
def all_batches(ctx: StageContext) -> DataFrame:
    """Every configured mode's batches, with their ``mode`` (a batch may serve several)."""
    frames = [mode_batches(ctx, m).withColumn("mode", F.lit(m)) for m in ctx.cfg.generate.modes]
    return functools.reduce(DataFrame.unionByName, frames)


def all_units(ctx: StageContext, batches: DataFrame) -> DataFrame:
    """UNIT_SCHEMA rows plus ``mode`` of :func:`all_batches`' rows, in one pass over them
    (a pass per mode made a Python task per mode and partition)."""
    render = {m: _units_fn(ctx.cfg, m) for m in ctx.cfg.generate.modes}

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in frames:
            for mode, part in pdf.groupby("mode", sort=False):
                for out in render[str(mode)](iter([part])):
                    yield out.assign(mode=mode)

    cols = ["batch_id", "ents", "rels", "difficulty", "mode"]
    schema = T.StructType([*UNIT_SCHEMA.fields, T.StructField("mode", T.StringType())])
    return batches.select(*cols).mapInPandas(run, schema)


def _units_to_send(ctx: StageContext, units: DataFrame) -> DataFrame:
    """Units whose prompt fits ``generate.max_prompt_tokens`` and whose QA is not stored."""
    fits = units.filter(F.col("prompt_tokens") <= ctx.cfg.generate.max_prompt_tokens)
    return pending_units(ctx, fits)


def pending(ctx: StageContext) -> DataFrame:
    """Every mode's units to send, with their ``mode``."""
    return _units_to_send(ctx, all_units(ctx, all_batches(ctx)))


def _checks(cfg: Config, mode: str) -> int:
    return n_items(cfg, mode) if cfg.generate.qa_check else 0


def _run(ctx: StageContext) -> StageResult:
    """Every mode in one LLM call and one MERGE per table: a mode costs its requests, not
    a stage's fixed cost again."""
    modes = list(ctx.cfg.generate.modes)
    batches = ctx.scratch.materialise(all_batches(ctx))
    units = ctx.scratch.materialise(all_units(ctx, batches))
    result, done = _converse(ctx, units)
    written, marked = write_qa(ctx, _qa_rows(ctx, done, batches))
    too_long = units.filter(F.col("prompt_tokens") > ctx.cfg.generate.max_prompt_tokens)
    invalid = done.filter("status <> 'ok'")
    rejected = invalid.select("mode").unionByName(too_long.select("mode"))
    per_mode = _per_mode(batches, units, done, rejected)
    # a MERGE with nothing to write still costs a second or two: skip it
    any_rejected = any(n.get("quarantined") for n in per_mode.values())
    quarantined = _quarantine(ctx, invalid, too_long) if any_rejected else 0
    for mode in modes:
        n = per_mode.get(mode, {})
        ctx.log.info(
            "generate %s: %d batches, %d units; %d QA items generated, %d quarantined",
            mode,
            n.get("batches", 0),
            n.get("units", 0),
            n.get("qa", 0),
            n.get("quarantined", 0),
        )
        result.counts.update({f"{mode}_{k}": v for k, v in n.items()})
    result.counts.update(qa_written=written, quarantined=quarantined, duplicates_flagged=marked)
    return result


def _converse(ctx: StageContext, units: DataFrame) -> tuple[StageResult, DataFrame]:
    """One conversation per unit still to do, each run by its mode's program."""
    cfg, modes = ctx.cfg, list(ctx.cfg.generate.modes)
    programs = {m: make_program(cfg, m) for m in modes}

    async def program(row, ask):
        return await programs[row["mode"]](row, ask)

    work = LLMWork(
        NAME,
        program,
        "unit_id",
        OUTCOME_SCHEMA,
        roles=("synthesizer",),
        calls_per_row=max(DEMAND.most_calls(cfg, m) for m in modes),
        unit="conversations",
        outputs_path=f"{ctx.scratch.path}/outcomes",
    )
    todo = _units_to_send(ctx, units).select(*UNIT_SCHEMA.fieldNames(), "mode")
    summary, outcomes = LLMExecutor(ctx).converse(todo, work)
    keys = units.select("unit_id", "mode", "batch_id", "part", "language", "question_style")
    return StageResult.of_llm(summary), outcomes.join(keys, "unit_id")


def _per_mode(
    batches: DataFrame, units: DataFrame, done: DataFrame, rejected: DataFrame
) -> dict[str, dict[str, int]]:
    """batches, units, QA items generated and rows quarantined, per mode (one small action
    each, not one per mode)."""
    items = F.size(F.from_json("items", ITEM_SCHEMA))
    figures = {
        "batches": batches.groupBy("mode").count(),
        "units": units.groupBy("mode").count(),
        "qa": done.filter("status = 'ok'").groupBy("mode").agg(F.sum(items).alias("count")),
        "quarantined": rejected.groupBy("mode").count(),
    }
    out: dict[str, dict[str, int]] = {}
    for name, df in figures.items():
        for r in df.collect():
            out.setdefault(r["mode"], {})[name] = int(r["count"] or 0)
    return out


def _qa_rows(ctx: StageContext, done: DataFrame, batches: DataFrame) -> DataFrame:
    """``qa`` rows from the finished conversations: one per generated item, with lineage."""
    cfg, model = ctx.cfg, ctx.cfg.llm.synthesizer.model or ""
    lineage = batches.select("mode", "batch_id", *LINEAGE, "seed_rank")
    items = (
        done.filter("status = 'ok'")
        .join(lineage, ["mode", "batch_id"])
        .select("*", F.posexplode(F.from_json("items", ITEM_SCHEMA)).alias("idx", "it"))
    )
    item_index = F.when(F.col("mode") == "atomic", F.col("part")).otherwise(F.col("idx"))
    return items.select(
        h_col(
            "batch_id",
            F.col("mode"),
            item_index.cast("string"),
            F.lit(PROMPT_VERSION),
            F.lit(model),
        ).alias("qa_id"),
        "mode",
        item_index.cast("int").alias("item_index"),
        F.col("it.question").alias("question"),
        F.col("it.answer").alias("answer"),
        F.col("it.options").alias("options"),
        F.col("it.answers").alias("answers"),
        F.col("it.reasoning_path").alias("reasoning_path"),
        "language",
        "batch_id",
        *LINEAGE,
        F.col("question_style").alias("style"),
        "request_id",
        F.when(F.col("it.supported") == F.lit(False), "unsupported")
        .otherwise("ok")
        .alias("status"),
        F.when(F.col("it.supported") == F.lit(False), F.array(F.lit("unsupported")))
        .when(
            F.lit(cfg.generate.qa_check) & F.col("it.supported").isNull(),
            F.array(F.lit("unchecked")),
        )
        .otherwise(F.array().cast("array<string>"))
        .alias("flags"),
        F.lit(None).cast("string").alias("duplicate_of"),
        F.lit(PROMPT_VERSION).alias("prompt_version"),
        F.lit(model).alias("synthesizer_model"),
        F.lit(ctx.run_id).alias("run_id"),
    )


DUPLICATE_KINDS = ("duplicate", "near_duplicate")
FLAG_COLUMNS = ["status", "duplicate_of", "flags"]


def write_qa(ctx: StageContext, rows: DataFrame) -> tuple[int, int]:
    """New QA rows and their duplicate flags (§7.4) in one write: new rows go in already
    flagged, and stored rows that a new, better-ranked row makes duplicates are flagged in
    the same MERGE (``generate.duplicates: drop``: neither is kept). Returns the rows
    inserted and the rows flagged (or dropped)."""
    tables = ctx.tables
    stored = tables.read("qa")
    fresh = ctx.scratch.materialise(rows.join(stored.select("qa_id"), "qa_id", "left_anti"))
    in_scope = F.col("mode").isin(*ctx.cfg.generate.modes) & F.col("status").isin(
        "ok", *DUPLICATE_KINDS
    )
    pool = fresh.unionByName(stored).filter(in_scope)
    marks = ctx.scratch.materialise(_duplicate_marks(ctx, pool))
    new_marked = marks.join(fresh.select("qa_id"), "qa_id").count()
    unmarked = fresh.join(marks, "qa_id", "left_anti")
    if ctx.cfg.generate.duplicates == "drop":
        written = tables.merge("qa", unmarked)
        stored_marked = marks.count() - new_marked
        dropped = tables.delete_keys("qa", marks) if stored_marked else 0
        return written.inserted, new_marked + dropped
    flagged = (
        pool.join(marks, "qa_id")
        .withColumn("duplicate_of", F.col("original"))
        .withColumn("status", F.col("kind"))
        .withColumn("flags", F.array_union("flags", F.array("kind")))
        .select(*SCHEMAS["qa"].fieldNames())
    )
    changed = UpdateWhenChanged(["duplicate_of"], only=FLAG_COLUMNS)
    res = tables.merge("qa", unmarked.unionByName(flagged), changed)
    return res.inserted, new_marked + res.updated


def _duplicate_marks(ctx: StageContext, qa: DataFrame) -> DataFrame:
    """``qa_id``, ``original``, ``kind`` of each row of ``qa`` that repeats another of its
    mode: exact duplicates (normalised question), then near-duplicates among the rest
    (MinHash LSH over question and answer, §8.4); each points at the best-ranked original
    of its group. One pass over every mode: LSH has a fixed cost per call."""
    scratch, nd = ctx.scratch, ctx.cfg.eval.near_dup
    norm = F.udf(normalise_question)
    ranks = ctx.tables.read("subgraphs").select("batch_id", "seed_rank")
    order = [F.col("seed_rank").asc_nulls_last(), "item_index", "qa_id"]
    keyed = qa.join(ranks, "batch_id", "left").withColumn("_k", norm("question"))
    keyed = scratch.materialise(
        keyed.withColumn(
            "_orig", F.first("qa_id").over(Window.partitionBy("mode", "_k").orderBy(*order))
        )
    )
    exact = keyed.filter(F.col("_orig") != F.col("qa_id")).select(
        "qa_id", F.col("_orig").alias("original"), F.lit("duplicate").alias("kind")
    )
    originals = keyed.filter(F.col("_orig") == F.col("qa_id")).withColumn(
        "_text", F.concat_ws(" ", "question", "answer")
    )
    clusters = near_duplicate_clusters(
        originals.select("qa_id", "_text", "language", "mode"),
        "qa_id",
        "_text",
        "language",
        shingle=nd.shingle,
        permutations=nd.permutations,
        jaccard=nd.jaccard,
        group_col="mode",
        keep=scratch.materialise,
        seed=ctx.cfg.run.seed,
    )
    near = (
        originals.join(clusters, "qa_id")
        .withColumn(
            "original",
            F.first("qa_id").over(Window.partitionBy("mode", "cluster_id").orderBy(*order)),
        )
        .filter(F.col("original") != F.col("qa_id"))
        .select("qa_id", "original", F.lit("near_duplicate").alias("kind"))
    )
    return exact.union(near)


def _quarantine(ctx: StageContext, invalid: DataFrame, too_long: DataFrame) -> int:
    unit = {
        "source": F.concat(F.lit("batch:"), "batch_id"),
        "locator": F.concat(F.col("mode"), F.lit(":"), F.col("part").cast("string")),
    }
    rows = as_quarantine(invalid, NAME, ctx.run_id, **unit, reason="reason", detail="detail").union(
        as_quarantine(
            too_long,
            NAME,
            ctx.run_id,
            **unit,
            reason=F.lit("prompt_too_long"),
            detail=F.concat(F.col("prompt_tokens").cast("string"), F.lit(" tokens")),
            excerpt="facts",
        )
    )
    res = ctx.tables.merge("quarantine", rows, UpdateWhenChanged(["reason"]))
    return res.inserted + res.updated


DEMAND = LLMDemand(
    "synthesizer",
    "unit_id",
    calls=lambda cfg, mode: calls_per_unit(mode, _checks(cfg, mode)),
    prompt_tokens=lambda: F.col("prompt_tokens"),
    max_tokens=lambda cfg: cfg.generate.max_tokens,
    note="{fewest} call(s) per batch, at most {most} with language retries and checks",
    group="mode",
)

STAGE = Stage(
    NAME,
    _run,
    reads=("subgraphs", "entities", "relations", "qa", "llm_calls"),
    writes=("qa", "quarantine", "llm_calls"),
    pending=pending,
    llm=DEMAND,
)
