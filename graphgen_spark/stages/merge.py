"""Merge stage: one knowledge graph from all mentions (method.md §4), then its statistics.

A pure function of the current mentions: entities group by name key (type and name by
vote, ties lexical), relations by the sorted endpoint pair (undirected, no self-loops);
descriptions are de-duplicated and joined, and only those over ``merge.summary_threshold``
tokens are summarised by the LLM (through the request table, so reruns cost nothing).
Endpoints that no entity mention names become ``UNKNOWN`` placeholders. Rows MERGE on
their ids and are rewritten only when their content hash changed, so an incremental run
touches only what new documents changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd
from pydantic import BaseModel
from pyspark.sql import DataFrame, Row, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.concurrency import side_by_side
from graphgen_spark.config import Config
from graphgen_spark.graph.engines import GraphQueries
from graphgen_spark.graph.normalize import clean_text
from graphgen_spark.graph.stats import compute_stats
from graphgen_spark.ids import h_col
from graphgen_spark.language import main_language
from graphgen_spark.llm.executor import LLMExecutor
from graphgen_spark.llm.requests import REQUEST_SCHEMA, request_row
from graphgen_spark.prompts.summarise import summarise_messages
from graphgen_spark.stages.base import LLMDemand, Stage, StageContext, StageResult
from graphgen_spark.tables import SCHEMAS, UpdateWhenChanged, Upsert, as_quarantine
from graphgen_spark.tokenizer import count_tokens

NAME = "merge"


class Summary(BaseModel):
    description: str


@F.udf(T.ArrayType(T.StringType()))
def distinct_descriptions(descs: list[str] | None) -> list[str]:
    """Cleaned, non-empty, de-duplicated by casefold (lexically smallest original kept), sorted."""
    best: dict[str, str] = {}
    for d in descs or []:
        c = clean_text(d)
        if c:
            k = c.casefold()
            if k not in best or c < best[k]:
                best[k] = c
    return sorted(best.values())


@F.pandas_udf(T.IntegerType())
def n_tokens(texts: pd.Series) -> pd.Series:
    return texts.fillna("").map(count_tokens).astype("int32")


def _vote(df: DataFrame, group: list[str], value: str, alias: str) -> DataFrame:
    """Most frequent ``value`` per group, ties by lexical order."""
    counted = df.groupBy(*group, value).count()
    w = Window.partitionBy(*group).orderBy(F.desc("count"), F.asc(value))
    return (
        counted.withColumn("_r", F.row_number().over(w))
        .filter("_r = 1")
        .select(*group, F.col(value).alias(alias))
    )


def _groups(descs: list[str], max_input: int) -> list[list[str]]:
    """Consecutive descriptions packed into groups that fit the summariser's input budget."""
    groups: list[list[str]] = [[]]
    used = 0
    for d in descs:
        n = count_tokens(d)
        if groups[-1] and used + n > max_input:
            groups.append([])
            used = 0
        groups[-1].append(d)
        used += n
    return groups


SUMMARY_ITEM = T.StructType(
    [
        T.StructField("kind", T.StringType()),
        T.StructField("id", T.StringType()),
        T.StructField("names", T.ArrayType(T.StringType())),
        T.StructField("type", T.StringType()),
        T.StructField("descs", T.ArrayType(T.StringType())),
        T.StructField("level", T.IntegerType()),
    ]
)
SUMMARY_REQUEST = T.StructType(
    [T.StructField("id", T.StringType()), T.StructField("group", T.IntegerType())]
    + REQUEST_SCHEMA.fields
)


def _summary_requests(cfg: Config) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: one summary request per group of each item's
    descriptions (a group fits ``merge.summary_max_input`` tokens)."""
    max_input, target = cfg.merge.summary_max_input, cfg.merge.summary_target

    def build(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            rows = []
            for r in pdf.itertuples(index=False):
                descs = list(r.descs)
                lang = main_language("\n".join(descs))
                for g, group in enumerate(_groups(descs, max_input)):
                    msgs = summarise_messages(r.kind, list(r.names), r.type, group, lang, target)
                    rows.append(
                        {
                            "id": r.id,
                            "group": g,
                            **request_row(cfg, NAME, "synthesizer", msgs, Summary),
                        }
                    )
            yield pd.DataFrame(rows, columns=SUMMARY_REQUEST.fieldNames())

    return build


class _Merger:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.llm = LLMExecutor(ctx)
        self.result = StageResult()
        self.scratch = ctx.scratch
        self.materialise = self.scratch.materialise

    # -- aggregation ---------------------------------------------------------------------
    def entities(self, docs: DataFrame) -> DataFrame:
        em = self.ctx.tables.read("entity_mentions").join(docs, "chunk_id")
        agg = em.groupBy("key").agg(
            distinct_descriptions(F.collect_list("description")).alias("descriptions"),
            F.array_sort(F.collect_set("chunk_id")).alias("chunk_ids"),
            F.array_sort(F.collect_set("doc_id")).alias("doc_ids"),
            F.count("*").cast("int").alias("n_mentions"),
        )
        named = agg.join(_vote(em, ["key"], "type", "type"), "key").join(
            _vote(em, ["key"], "display", "name"), "key"
        )
        return named.withColumn("is_placeholder", F.lit(False))

    def placeholders(self, entities: DataFrame, rm: DataFrame) -> DataFrame:
        ends = rm.select(
            F.col("src_key").alias("key"),
            F.col("src_display").alias("display"),
            "chunk_id",
            "doc_id",
        ).union(
            rm.select(
                F.col("dst_key").alias("key"),
                F.col("dst_display").alias("display"),
                "chunk_id",
                "doc_id",
            )
        )
        missing = ends.join(entities.select("key"), "key", "left_anti")
        agg = missing.groupBy("key").agg(
            F.array_sort(F.collect_set("chunk_id")).alias("chunk_ids"),
            F.array_sort(F.collect_set("doc_id")).alias("doc_ids"),
        )
        return (
            agg.join(_vote(missing, ["key"], "display", "name"), "key")
            .withColumn("type", F.lit("UNKNOWN"))
            .withColumn("descriptions", F.array().cast("array<string>"))
            .withColumn("n_mentions", F.lit(0))
            .withColumn("is_placeholder", F.lit(True))
        )

    def relations(self, rm: DataFrame) -> DataFrame:
        agg = rm.groupBy("src_key", "dst_key").agg(
            distinct_descriptions(F.collect_list("description")).alias("descriptions"),
            F.array_sort(F.collect_set("chunk_id")).alias("chunk_ids"),
            F.array_sort(F.collect_set("doc_id")).alias("doc_ids"),
            F.count("*").cast("int").alias("n_mentions"),
        )
        a, b = h_col("src_key"), h_col("dst_key")
        return (
            agg.withColumn("src_id", F.least(a, b))
            .withColumn("dst_id", F.greatest(a, b))
            .withColumn("edge_id", h_col("src_id", "dst_id"))
        )

    # -- summarisation ------------------------------------------------------------------
    def summarise(self, items: DataFrame) -> DataFrame:
        """(kind, id, names, type, descs) -> (id, description, summary_levels) for long items.

        Input over ``merge.summary_max_input`` tokens is summarised in consecutive groups,
        then the group summaries, recursively — never truncated. An item whose summary call
        fails keeps its joined descriptions (flagged unsummarised) and is retried next run.
        """
        cfg = self.cfg
        work = self.materialise(items.withColumn("level", F.lit(0)))
        done = []
        for _ in range(12):  # each level shrinks the input; 12 levels is far beyond real data
            if not work.limit(1).count():
                break
            reqs = self.materialise(work.mapInPandas(_summary_requests(cfg), SUMMARY_REQUEST))
            s = self.llm.execute(reqs.drop("id", "group"), NAME)
            self.result.add(StageResult.of_llm(s))
            answers = self.llm.results(reqs).select(
                "id", "group", "status", F.get_json_object("parsed", "$.description").alias("text")
            )
            per_item = answers.groupBy("id").agg(
                F.count("*").alias("groups"),
                F.sum((F.col("status") != "ok").cast("int")).alias("bad"),
                F.transform(
                    F.array_sort(F.collect_list(F.struct("group", "text"))), lambda x: x["text"]
                ).alias("texts"),
            )
            step = self.materialise(work.join(per_item, "id"))
            good = step.filter("bad = 0")
            done.append(
                good.filter("groups = 1").select(
                    "id",
                    F.col("texts")[0].alias("description"),
                    (F.col("level") + 1).alias("summary_levels"),
                )
            )
            work = self.materialise(
                good.filter("groups > 1").select(
                    "kind",
                    "id",
                    "names",
                    "type",
                    F.col("texts").alias("descs"),
                    (F.col("level") + 1).alias("level"),
                )
            )
        schema = "id string, description string, summary_levels int"
        result = self.ctx.spark.createDataFrame([], schema)
        for d in done:
            result = result.unionByName(d)
        return result

    def describe(
        self, df: DataFrame, kind: str, id_col: str, names: F.Column, etype: F.Column
    ) -> DataFrame:
        """Attach description, n_tokens, summarised, summary_levels to an aggregated frame."""
        joined = df.withColumn("_joined", F.concat_ws("\n", "descriptions"))
        joined = self.materialise(joined.withColumn("_tokens", n_tokens("_joined")))
        long = joined.filter(F.col("_tokens") > self.cfg.merge.summary_threshold).select(
            F.lit(kind).alias("kind"),
            F.col(id_col).alias("id"),
            names.alias("names"),
            etype.alias("type"),
            F.col("descriptions").alias("descs"),
        )
        summaries = self.summarise(long).withColumnRenamed("id", id_col)
        out = joined.join(summaries, id_col, "left")
        return (
            out.withColumn("summarised", F.col("description").isNotNull())
            .withColumn("description", F.coalesce("description", "_joined"))
            .withColumn("summary_levels", F.coalesce("summary_levels", F.lit(0)))
            .withColumn(
                "n_tokens",
                F.when(F.col("summarised"), n_tokens("description")).otherwise(F.col("_tokens")),
            )
            .drop("_joined", "_tokens")
        )

    # -- the stage -------------------------------------------------------------------------
    def run(self) -> StageResult:
        tables = self.ctx.tables
        docs = tables.read("chunks").select("chunk_id", "doc_id")
        rm = self.materialise(tables.read("relation_mentions").join(docs, "chunk_id"))
        ents = self.materialise(self.entities(docs))
        counts: dict[str, int] = {}
        if self.cfg.merge.unknown_endpoints == "drop":
            rm, counts["quarantined_unknown_endpoint"] = self.drop_unknown_endpoints(ents, rm)
        else:
            ents = ents.unionByName(self.placeholders(ents, rm))
        ents, rels = self.described(ents, rm)
        changed = UpdateWhenChanged(["row_hash"])
        e_res, r_res = side_by_side(
            self.ctx.spark,
            [
                lambda: tables.merge("entities", _hashed(ents, "entities"), changed),
                lambda: tables.merge("relations", _hashed(rels, "relations"), changed),
            ],
        )
        s = self.graph_stats()
        self.result.counts.update(
            counts,
            entities_inserted=e_res.inserted,
            entities_updated=e_res.updated,
            relations_inserted=r_res.inserted,
            relations_updated=r_res.updated,
            vertices=s["vertices"],
            edges=s["edges"],
            components=s["components"],
        )
        return self.result

    def drop_unknown_endpoints(self, ents: DataFrame, rm: DataFrame) -> tuple[DataFrame, int]:
        """Relation mentions whose endpoints are both known entities; the others are
        quarantined (``merge.unknown_endpoints: drop``)."""
        known = ents.select("key")
        kept = rm.join(known.withColumnRenamed("key", "src_key"), "src_key").join(
            known.withColumnRenamed("key", "dst_key"), "dst_key"
        )
        dropped = rm.join(
            kept.select("chunk_id", "src_key", "dst_key"),
            ["chunk_id", "src_key", "dst_key"],
            "left_anti",
        )
        q = as_quarantine(
            dropped,
            NAME,
            self.ctx.run_id,
            source=F.lit("relation_mentions"),
            locator=F.concat_ws("|", "chunk_id", "src_key", "dst_key"),
            reason=F.lit("unknown_endpoint"),
            excerpt="description",
        )
        return kept, self.ctx.tables.merge("quarantine", q).inserted

    def described(self, ents: DataFrame, rm: DataFrame) -> tuple[DataFrame, DataFrame]:
        """Entities and relations with their (summarised where long) descriptions."""
        ents = ents.withColumn("entity_id", h_col("key"))
        ents = self.describe(ents, "entity", "entity_id", F.array("name"), F.col("type"))
        names = ents.select("entity_id", "name")
        rels = (
            self.relations(rm)
            .join(
                names.select(F.col("entity_id").alias("src_id"), F.col("name").alias("src_name")),
                "src_id",
            )
            .join(
                names.select(F.col("entity_id").alias("dst_id"), F.col("name").alias("dst_name")),
                "dst_id",
            )
        )
        rels = self.describe(
            rels, "relation", "edge_id", F.array("src_name", "dst_name"), F.lit(None).cast("string")
        )
        return ents, rels

    def graph_stats(self) -> Row:
        """Compute, store and log the merged graph's statistics; fail on dangling edges."""
        ctx, tables = self.ctx, self.ctx.tables
        queries = GraphQueries(
            ctx.spark, ctx.cfg.graph.engine, f"{self.scratch.path}/checkpoints", self.materialise
        )
        stats = compute_stats(
            ctx.spark, tables.read("entities"), tables.read("relations"), ctx.run_id, queries
        )
        tables.merge("graph_stats", stats, Upsert())
        s = stats.first()
        if s["missing_endpoints"]:
            raise RuntimeError(
                f"merge: {s['missing_endpoints']} relation endpoint(s) have no entity row"
            )
        ctx.log.info(
            "graph (%s): %d vertices (%d placeholders, %d isolated), %d edges, %d components "
            "(largest %d), max degree %d",
            s["engine"],
            s["vertices"],
            s["placeholders"],
            s["isolated"],
            s["edges"],
            s["components"],
            s["largest_component"],
            s["max_degree"],
        )
        return s


def _hashed(df: DataFrame, table: str) -> DataFrame:
    """The table's columns plus ``row_hash`` over them: a row is rewritten only when it
    changed."""
    cols = [c for c in SCHEMAS[table].fieldNames() if c != "row_hash"]
    return df.select(*cols).withColumn("row_hash", F.sha2(F.to_json(F.struct(*cols)), 256))


def _run(ctx: StageContext) -> StageResult:
    return _Merger(ctx).run()


STAGE = Stage(
    NAME,
    _run,
    reads=("chunks", "entity_mentions", "relation_mentions", "llm_calls"),
    writes=("entities", "relations", "graph_stats", "quarantine", "llm_calls"),
    llm=LLMDemand(
        "synthesizer",
        "id",
        calls=lambda cfg, _: (0, 0),
        prompt_tokens=lambda: F.lit(0),
        max_tokens=lambda cfg: cfg.llm.synthesizer.max_tokens,
        note="summarises only descriptions over merge.summary_threshold tokens: known after "
        "extract",
    ),
)
