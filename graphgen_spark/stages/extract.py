"""Extract stage: entities and relations per distinct chunk text, with gleaning (§3).

One conversation per distinct ``content_hash`` (identical text in several documents is
extracted once and credited to every chunk). Each round is a request DataFrame executed
through :class:`LLMExecutor` (so every call is cached and costed), and the conversation
state is materialised between rounds; a rerun replays cached answers and pays nothing.
A conversation whose call still fails after ``extract.max_attempts`` executions is
recorded ``failed`` in ``extractions`` with its reason and retried by the next run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
from pydantic import BaseModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.config import Config
from graphgen_spark.graph.normalize import clean_text, display_name, name_key, normalise_type
from graphgen_spark.llm.executor import LLMExecutor
from graphgen_spark.llm.requests import REQUEST_SCHEMA, request_row
from graphgen_spark.llm.schemas import MoreNeeded
from graphgen_spark.prompts.extract import extract_messages, glean_check_message, glean_message
from graphgen_spark.stages.base import Scratch, StageContext, StageResult
from graphgen_spark.tables import SCHEMAS

STAGE = "extract"


class ExtractedEntity(BaseModel):
    name: str
    type: str
    description: str


class ExtractedRelation(BaseModel):
    source: str
    target: str
    description: str


class Extraction(BaseModel):
    entities: list[ExtractedEntity]
    relations: list[ExtractedRelation]


STATE_SCHEMA = T.StructType(
    [
        T.StructField("content_hash", T.StringType()),
        T.StructField("text", T.StringType()),
        T.StructField("language", T.StringType()),
        T.StructField("history", T.StringType()),
        T.StructField("records", T.StringType()),
        T.StructField("rounds", T.IntegerType()),
        T.StructField("active", T.BooleanType()),
        T.StructField("status", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("request_ids", T.ArrayType(T.StringType())),
    ]
)
CALL_REQUEST_SCHEMA = T.StructType(
    [T.StructField("content_hash", T.StringType())] + REQUEST_SCHEMA.fields
)


# -- records: normalised extraction output -----------------------------------------------------
def normalise(extraction: Extraction, cfg: Config, content_hash: str) -> dict:
    """Cleaned, keyed records of one answer (§3.4); rejects listed under ``quarantined``."""
    ents: dict[str, dict] = {}
    rels: dict[tuple[str, str], dict] = {}
    rejected: list[dict] = []
    types = tuple(cfg.extract.entity_types)
    for e in extraction.entities:
        display = display_name(e.name)
        key = name_key(display)
        if not key:
            rejected.append(
                {"reason": "empty_name", "locator": f"entity:{e.name!r}", "excerpt": e.description}
            )
            continue
        desc = clean_text(e.description)
        if key in ents:  # the same entity twice in one answer: keep both descriptions
            known = ents[key]
            if desc and desc.casefold() not in known["description"].casefold():
                known["description"] = f"{known['description']}\n{desc}".strip()
            continue
        ents[key] = {
            "key": key,
            "display": display,
            "type": normalise_type(e.type, types, cfg.extract.strict_types),
            "description": desc,
        }
    for r in extraction.relations:
        a, b = display_name(r.source), display_name(r.target)
        ka, kb = name_key(a), name_key(b)
        if not ka or not kb:
            rejected.append(
                {
                    "reason": "empty_name",
                    "locator": f"relation:{r.source!r}|{r.target!r}",
                    "excerpt": r.description,
                }
            )
            continue
        if ka == kb:
            rejected.append(
                {"reason": "self_loop", "locator": f"relation:{a}|{b}", "excerpt": r.description}
            )
            continue
        if kb < ka:
            ka, kb, a, b = kb, ka, b, a
        desc = clean_text(r.description)
        known = rels.get((ka, kb))
        if known:
            if desc and desc.casefold() not in known["description"].casefold():
                known["description"] = f"{known['description']}\n{desc}".strip()
            continue
        rels[(ka, kb)] = {
            "src_key": ka,
            "dst_key": kb,
            "src_display": a,
            "dst_display": b,
            "description": desc,
        }
    return {
        "entities": list(ents.values()),
        "relations": list(rels.values()),
        "quarantined": rejected,
    }


def union_new(acc: dict, new: dict) -> tuple[dict, bool]:
    """``acc ∪ (new − acc)`` by normalised key; returns the union and whether anything was new."""
    have_e = {e["key"] for e in acc["entities"]}
    have_r = {(r["src_key"], r["dst_key"]) for r in acc["relations"]}
    add_e = [e for e in new["entities"] if e["key"] not in have_e]
    add_r = [r for r in new["relations"] if (r["src_key"], r["dst_key"]) not in have_r]
    merged = {
        "entities": acc["entities"] + add_e,
        "relations": acc["relations"] + add_r,
        "quarantined": acc.get("quarantined", []) + new.get("quarantined", []),
    }
    return merged, bool(add_e or add_r)


EMPTY = {"entities": [], "relations": [], "quarantined": []}


# -- per-round state transitions (run inside executors) -------------------------------------
def _requests_fn(kind: str, cfg: Config):
    def build(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            rows = []
            for r in pdf.itertuples(index=False):
                history = json.loads(r.history)
                if kind == "check":
                    msgs, model = [*history, glean_check_message(r.language)], MoreNeeded
                elif kind == "glean":
                    msgs, model = [*history, glean_message(r.language)], Extraction
                else:
                    msgs, model = history, Extraction
                rows.append(
                    {
                        "content_hash": r.content_hash,
                        **request_row(cfg, STAGE, "synthesizer", msgs, model),
                    }
                )
            yield pd.DataFrame(rows, columns=CALL_REQUEST_SCHEMA.fieldNames())

    return build


def _advance_fn(kind: str, cfg: Config):
    max_rounds = cfg.extract.max_gleaning_rounds

    def step(r: dict) -> dict:
        state = {k: r[k] for k in STATE_SCHEMA.fieldNames()}
        ids = state["request_ids"]
        state["request_ids"] = [] if ids is None else list(ids)
        if not state["active"] or r["request_id"] is None:
            return state
        state["request_ids"].append(r["request_id"])
        if r["call_status"] != "ok":
            reason = f"{kind}: {r['error_kind'] or 'not answered'}: {(r['error'] or '')[:300]}"
            state.update(active=False, status="failed", reason=reason)
            return state
        try:
            history = json.loads(state["history"])
            records = json.loads(state["records"])
            if kind == "check":
                if not MoreNeeded.model_validate_json(r["parsed"]).more:
                    state.update(active=False, status="ok")
                return state
            answer = Extraction.model_validate_json(r["parsed"])
            found = normalise(answer, cfg, state["content_hash"])
        except Exception as exc:  # a bad answer fails this conversation, never the job
            state.update(active=False, status="failed", reason=f"{kind}: bad_answer: {exc}"[:400])
            return state
        reply = {"role": "assistant", "content": r["response"] or r["parsed"]}
        if kind == "extract":
            history.append(reply)
            records, grew = found, True
        else:
            history += [glean_message(state["language"]), reply]
            records, grew = union_new(records, found)
            state["rounds"] += 1
        if not grew or state["rounds"] >= max_rounds:
            state.update(active=False, status="ok")
        state["history"] = json.dumps(history, ensure_ascii=False)
        state["records"] = json.dumps(records, ensure_ascii=False)
        return state

    def advance(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            out = [step(r) for r in pdf.to_dict("records")]
            yield pd.DataFrame(out, columns=STATE_SCHEMA.fieldNames())

    return advance


# -- the stage ------------------------------------------------------------------------------
class _Extractor:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.llm = LLMExecutor(ctx)
        self.result = StageResult()
        self.scratch = Scratch(ctx, "extract")
        self.materialise = self.scratch.materialise

    def round(self, state: DataFrame, kind: str) -> DataFrame:
        active = state.filter("active")
        reqs = self.materialise(
            active.mapInPandas(_requests_fn(kind, self.cfg), CALL_REQUEST_SCHEMA)
        )
        for _ in range(self.cfg.extract.max_attempts):
            s = self.llm.execute(reqs.drop("content_hash"), STAGE)
            self.result.add(s.to_result())
            if s.failed + s.invalid == 0:
                break
        answers = self.llm.results(reqs).select(
            "content_hash",
            "request_id",
            F.col("status").alias("call_status"),
            "parsed",
            "response",
            "error",
            "error_kind",
        )
        joined = state.join(answers, "content_hash", "left")
        return self.materialise(joined.mapInPandas(_advance_fn(kind, self.cfg), STATE_SCHEMA))

    def run(self) -> StageResult:
        ctx, tables = self.ctx, self.ctx.tables
        chunks = tables.read("chunks")
        done = tables.read("extractions").filter("status = 'ok'").select("content_hash")
        texts = (
            chunks.groupBy("content_hash")
            .agg(
                F.min_by("text", "chunk_id").alias("text"),
                F.min_by("language", "chunk_id").alias("language"),
            )
            .join(done, "content_hash", "left_anti")
        )
        types = list(self.cfg.extract.entity_types)
        first_turn = F.udf(
            lambda text, lang: json.dumps(extract_messages(text, lang, types), ensure_ascii=False)
        )
        state = self.materialise(
            texts.select(
                "content_hash",
                "text",
                "language",
                first_turn("text", "language").alias("history"),
                F.lit(json.dumps(EMPTY)).alias("records"),
                F.lit(0).alias("rounds"),
                F.lit(True).alias("active"),
                F.lit("pending").alias("status"),
                F.lit(None).cast("string").alias("reason"),
                F.array().cast("array<string>").alias("request_ids"),
            )
        )
        n_todo = state.count()
        result_counts: dict[str, int] = {"texts_to_extract": n_todo}
        failure: str | None = None
        try:
            if n_todo:
                ctx.log.info("extract: %d distinct chunk texts to extract", n_todo)
                state = self.round(state, "extract")
                for _ in range(self.cfg.extract.max_gleaning_rounds):
                    if self.cfg.extract.ask_before_continue:
                        if not state.filter("active").limit(1).count():
                            break
                        state = self.round(state, "check")
                    if not state.filter("active").limit(1).count():
                        break
                    state = self.round(state, "glean")
                self._record(state)
                failure = self._failures(state, n_todo, result_counts)
            result_counts.update(self._write_mentions())
        finally:
            self.scratch.cleanup()
        if failure:  # outcomes are stored; the stage fails loudly, a rerun retries only those
            raise RuntimeError(failure)
        result = self.result
        result.counts.update(result_counts)
        return result

    def _record(self, state: DataFrame) -> None:
        outcome = state.select(
            "content_hash",
            "status",
            "reason",
            "rounds",
            F.lit(1).alias("attempts"),
            F.size(F.from_json("records", "struct<entities:array<string>>").entities).alias(
                "n_entities"
            ),
            F.size(F.from_json("records", "struct<relations:array<string>>").relations).alias(
                "n_relations"
            ),
            "records",
            "request_ids",
            F.lit(self.ctx.run_id).alias("run_id"),
        )
        update = {c: f"s.`{c}`" for c in SCHEMAS["extractions"].fieldNames()}
        update["attempts"] = "t.attempts + 1"
        self.ctx.tables.merge(
            "extractions", outcome, update_when="t.status <> 'ok'", update_set=update
        )

    def _write_mentions(self) -> dict[str, int]:
        """Mentions for every chunk whose text is extracted but which has none yet."""
        tables = self.ctx.tables
        have = (
            tables.read("entity_mentions")
            .select("chunk_id")
            .union(tables.read("relation_mentions").select("chunk_id"))
            .distinct()
        )
        rec_schema = (
            "struct<entities:array<struct<key:string,display:string,type:string,description:string>>,"
            "relations:array<struct<src_key:string,dst_key:string,src_display:string,dst_display:string,description:string>>,"
            "quarantined:array<struct<reason:string,locator:string,excerpt:string>>>"
        )
        ok = (
            tables.read("extractions")
            .filter("status = 'ok'")
            .select("content_hash", F.from_json("records", rec_schema).alias("r"))
        )
        todo = (
            tables.read("chunks")
            .select("chunk_id", "content_hash")
            .join(have, "chunk_id", "left_anti")
        )
        src = self.materialise(todo.join(ok, "content_hash"))
        ents = src.select("chunk_id", "content_hash", F.explode("r.entities").alias("e")).select(
            "chunk_id", "content_hash", "e.key", "e.display", "e.type", "e.description"
        )
        keys = ents.select("chunk_id", F.col("key").alias("k"))
        rels = src.select("chunk_id", "content_hash", F.explode("r.relations").alias("x")).select(
            "chunk_id", "content_hash", "x.*"
        )
        rels = (
            rels.join(
                keys.withColumnRenamed("k", "src_key").withColumn("_s", F.lit(True)),
                ["chunk_id", "src_key"],
                "left",
            )
            .join(
                keys.withColumnRenamed("k", "dst_key").withColumn("_d", F.lit(True)),
                ["chunk_id", "dst_key"],
                "left",
            )
            .withColumn("dangling", F.col("_s").isNull() | F.col("_d").isNull())
        )
        e_res = tables.merge("entity_mentions", ents)
        r_res = tables.merge("relation_mentions", rels)
        quarantined = (
            src.select("content_hash", F.explode("r.quarantined").alias("q"))
            .dropDuplicates(["content_hash", "q"])
            .select(
                F.concat(F.lit("content:"), "content_hash").alias("source"),
                F.col("q.locator").alias("locator"),
                F.lit(STAGE).alias("stage"),
                F.col("q.reason").alias("reason"),
                F.lit(None).cast("string").alias("detail"),
                F.substring("q.excerpt", 1, 200).alias("excerpt"),
                F.lit(self.ctx.run_id).alias("run_id"),
            )
        )
        q_res = tables.merge("quarantine", quarantined)
        return {
            "entity_mentions_written": e_res.inserted,
            "relation_mentions_written": r_res.inserted,
            "quarantined": q_res.inserted,
        }

    def _failures(self, state: DataFrame, n_todo: int, counts: dict[str, int]) -> str | None:
        """Count failed conversations; a message when they exceed the allowed fraction."""
        failed = state.filter("status = 'failed'")
        n_failed = failed.count()
        counts["texts_failed"] = n_failed
        counts["texts_extracted"] = n_todo - n_failed
        limit = self.cfg.extract.max_failed_fraction
        if not n_failed or n_failed / n_todo <= limit:
            return None
        reasons = (
            failed.groupBy(F.substring("reason", 1, 120).alias("r"))
            .count()
            .orderBy(F.desc("count"))
            .limit(3)
            .collect()
        )
        top = "; ".join(f"{r['count']}x {r['r']}" for r in reasons)
        return (
            f"extract: {n_failed} of {n_todo} chunk texts failed (more than "
            f"extract.max_failed_fraction={limit}); top reasons: {top}. Their outcomes are in "
            "`extractions`; rerun the same command to retry only those."
        )


def run(ctx: StageContext) -> StageResult:
    return _Extractor(ctx).run()
