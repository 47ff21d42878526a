"""Extract stage: entities and relations per distinct chunk text, with gleaning (§3).

One conversation per distinct ``content_hash`` (identical text in several documents is
extracted once and credited to every chunk). The whole conversation runs inside an
executor task (:meth:`LLMExecutor.converse`), turn after turn as answers arrive, so the
endpoint never waits for the driver between rounds; every turn is still a row of
``llm_calls`` (cached and costed), and a rerun replays cached turns and pays nothing.
A conversation whose call still fails after ``extract.max_attempts`` executions is
recorded ``failed`` in ``extractions`` with its reason and retried by the next run.
"""

from __future__ import annotations

import json

from pydantic import BaseModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.config import Config
from graphgen_spark.graph.normalize import clean_text, display_name, name_key, normalise_type
from graphgen_spark.llm.executor import Ask, LLMExecutor, Program
from graphgen_spark.llm.requests import request_row
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


OUTCOME_SCHEMA = T.StructType(
    [
        T.StructField("content_hash", T.StringType()),
        T.StructField("status", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("rounds", T.IntegerType()),
        T.StructField("records", T.StringType()),
        T.StructField("request_ids", T.ArrayType(T.StringType())),
    ]
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


# -- one text's conversation (runs inside an executor task) -----------------------------------
def _conversation(cfg: Config) -> Program:
    """Extract, then up to ``max_gleaning_rounds`` of (check whether more is missing, glean).

    Each turn goes through ``ask``, i.e. the request table: a replayed conversation is
    answered from its cached turns and pays only for the first turn never answered ok.
    """
    types = list(cfg.extract.entity_types)
    max_rounds = cfg.extract.max_gleaning_rounds

    def request(messages: list[dict], model: type[BaseModel]) -> dict:
        return request_row(cfg, STAGE, "synthesizer", messages, model)

    async def run(row: dict, ask: Ask) -> dict:
        lang, ids = row["language"], []
        out = {"content_hash": row["content_hash"], "rounds": 0, "request_ids": ids}

        def stop(status: str, reason: str | None, records: dict) -> dict:
            records_json = json.dumps(records, ensure_ascii=False)
            return {**out, "status": status, "reason": reason, "records": records_json}

        async def turn(kind: str, messages: list[dict], model: type[BaseModel]):
            answer = await ask(request(messages, model))
            ids.append(answer.request_id)
            if not answer.ok:
                detail = (answer.error or "")[:300]
                raise _TurnFailed(f"{kind}: {answer.error_kind or 'not answered'}: {detail}")
            try:
                return answer, model.model_validate_json(answer.parsed)
            except Exception as exc:  # a bad answer fails this conversation, never the job
                raise _TurnFailed(f"{kind}: bad_answer: {exc}"[:400]) from exc

        history = extract_messages(row["text"], lang, types)
        records = EMPTY
        try:
            answer, extraction = await turn("extract", history, Extraction)
            records = normalise(extraction, cfg, row["content_hash"])
            history = [*history, {"role": "assistant", "content": answer.response or answer.parsed}]
            while out["rounds"] < max_rounds:
                if cfg.extract.ask_before_continue:
                    check = [*history, glean_check_message(lang)]
                    _, more = await turn("check", check, MoreNeeded)
                    if not more.more:
                        break
                ask_more = glean_message(lang)
                answer, extraction = await turn("glean", [*history, ask_more], Extraction)
                reply = {"role": "assistant", "content": answer.response or answer.parsed}
                history = [*history, ask_more, reply]
                records, grew = union_new(records, normalise(extraction, cfg, row["content_hash"]))
                out["rounds"] += 1
                if not grew:
                    break
        except _TurnFailed as failed:
            return stop("failed", str(failed), records)
        return stop("ok", None, records)

    return run


class _TurnFailed(Exception):
    """A turn was not answered ok or its answer did not validate."""


def calls_per_text(cfg: Config) -> int:
    """The most calls one text can take (for wave sizing and dry runs)."""
    per_round = 2 if cfg.extract.ask_before_continue else 1
    return 1 + per_round * cfg.extract.max_gleaning_rounds


# -- the stage ------------------------------------------------------------------------------
class _Extractor:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.llm = LLMExecutor(ctx)
        self.result = StageResult()
        self.scratch = Scratch(ctx, "extract")
        self.materialise = self.scratch.materialise

    def run(self) -> StageResult:
        ctx, tables = self.ctx, self.ctx.tables
        chunks = tables.read("chunks")
        done = tables.read("extractions").filter("status = 'ok'").select("content_hash")
        texts = self.materialise(
            chunks.groupBy("content_hash")
            .agg(
                F.min_by("text", "chunk_id").alias("text"),
                F.min_by("language", "chunk_id").alias("language"),
            )
            .join(done, "content_hash", "left_anti")
        )
        n_todo = texts.count()
        result_counts: dict[str, int] = {"texts_to_extract": n_todo}
        failure: str | None = None
        try:
            if n_todo:
                ctx.log.info("extract: %d distinct chunk texts to extract", n_todo)
                program = _conversation(self.cfg)
                for attempt in range(self.cfg.extract.max_attempts):
                    summary, outcomes = self.llm.converse(
                        texts,
                        program,
                        OUTCOME_SCHEMA,
                        STAGE,
                        "content_hash",
                        calls_per_text(self.cfg),
                        f"{self.scratch.path}/outcomes{attempt}",
                    )
                    self.result.add(summary.to_result())
                    self._record(outcomes)
                    ctx.log.info("extract: attempt %d recorded in extractions", attempt + 1)
                    texts = texts.join(
                        outcomes.filter("status = 'ok'").select("content_hash"),
                        "content_hash",
                        "left_anti",
                    )
                    if not outcomes.filter("status <> 'ok'").limit(1).count():
                        break
                failure = self._failures(texts, n_todo, result_counts)
            result_counts.update(self._write_mentions())
            ctx.log.info("extract: mentions written")
        finally:
            self.scratch.cleanup()
        if failure:  # outcomes are stored; the stage fails loudly, a rerun retries only those
            raise RuntimeError(failure)
        result = self.result
        result.counts.update(result_counts)
        return result

    def _record(self, outcomes: DataFrame) -> None:
        row = outcomes.select(
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
        self.ctx.tables.merge("extractions", row, update_when="t.status <> 'ok'", update_set=update)

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
        ok = tables.read("extractions").filter("status = 'ok'").select("content_hash", "records")
        todo = (
            tables.read("chunks")
            .select("chunk_id", "content_hash")
            .join(have, "chunk_id", "left_anti")
        )
        # parse only the records of chunks that need mentions, not every extraction stored
        src = self.materialise(
            todo.join(ok, "content_hash").select(
                "chunk_id", "content_hash", F.from_json("records", rec_schema).alias("r")
            )
        )
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

    def _failures(self, left: DataFrame, n_todo: int, counts: dict[str, int]) -> str | None:
        """Count texts still not extracted; a message when they exceed the allowed fraction."""
        failed = self.ctx.tables.read("extractions").join(
            left.select("content_hash"), "content_hash", "left_semi"
        )
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
