"""Extract stage: entities and relations per distinct chunk text, with gleaning (§3).

One conversation per distinct ``content_hash`` (identical text in several documents is
extracted once and credited to every chunk). The whole conversation runs inside an
executor task (:meth:`LLMExecutor.converse`), turn after turn as answers arrive, so the
endpoint never waits for the driver between rounds; every turn is still a row of
``llm_calls`` (cached and costed), and a rerun replays cached turns and pays nothing.
A conversation whose call still fails after ``extract.max_attempts`` executions is
recorded ``failed`` in ``extractions`` with its reason and retried by the next run.
A chunk's mentions are complete or redone: ``mentioned_chunks`` marks it done only after
its entity and relation mentions are written. Model output is capped per text
(``extract.max_*``); what the caps cut is counted, never dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.concurrency import side_by_side
from graphgen_spark.config import Config
from graphgen_spark.errors import StageIncomplete
from graphgen_spark.graph.normalize import clean_text, display_name, name_key, normalise_type
from graphgen_spark.llm.executor import Ask, LLMExecutor, LLMWork, Program
from graphgen_spark.llm.requests import request_row
from graphgen_spark.llm.schemas import MoreNeeded
from graphgen_spark.prompts.extract import extract_messages, glean_check_message, glean_message
from graphgen_spark.stages.base import LLMDemand, Stage, StageContext, StageResult
from graphgen_spark.tables import RetryUntilOk, as_quarantine

NAME = "extract"


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
CAPPED = ("entities", "relations", "names", "descriptions", "rejects")
# what a count under ``capped`` means, for the quarantine row written with the mentions
CAP_NOTES = {
    "entities": "entities dropped beyond extract.max_entities_per_chunk",
    "relations": "relations dropped beyond extract.max_relations_per_chunk",
    "names": "names cut to extract.max_name_chars",
    "descriptions": "descriptions cut to extract.max_description_chars",
    "rejects": "rejected records not listed beyond max_entities + max_relations_per_chunk",
}
CAPPED_SCHEMA = "struct<" + ",".join(f"{k}:int" for k in CAPPED) + ">"


@dataclass(frozen=True)
class Caps:
    """How much of one chunk text's answers is kept (``extract.max_*``): a hostile or looping
    reply cannot blow up a row, the graph or the quarantine; what is cut is counted."""

    entities: int = 200
    relations: int = 400
    name_chars: int = 200
    description_chars: int = 4000

    @classmethod
    def of(cls, cfg: Config) -> Caps:
        x = cfg.extract
        return cls(
            x.max_entities_per_chunk,
            x.max_relations_per_chunk,
            x.max_name_chars,
            x.max_description_chars,
        )

    @property
    def rejects(self) -> int:
        return self.entities + self.relations


def _cut(text: str, limit: int, capped: dict[str, int], what: str) -> str:
    """``text`` cut to ``limit`` characters; a cut is counted under ``what``."""
    if len(text) <= limit:
        return text
    capped[what] += 1
    return text[:limit].rstrip()


def _add_description(known: dict, desc: str, caps: Caps, capped: dict[str, int]) -> None:
    """Append ``desc`` to a record seen before in the same answer, unless already there."""
    if desc and desc.casefold() not in known["description"].casefold():
        joined = f"{known['description']}\n{desc}".strip()
        known["description"] = _cut(joined, caps.description_chars, capped, "descriptions")


def normalise(extraction: Extraction, cfg: Config, content_hash: str) -> dict:
    """Cleaned, keyed records of one answer (§3.4); rejects listed under ``quarantined``,
    what the caps dropped or cut counted under ``capped``."""
    n = _Normaliser(cfg)
    ents, rels = n.entities(extraction.entities), n.relations(extraction.relations)
    return {"entities": ents, "relations": rels, "quarantined": n.rejected, "capped": n.capped}


class _Normaliser:
    """One answer's records under the caps, with its rejects and what the caps cut."""

    def __init__(self, cfg: Config) -> None:
        self.caps = Caps.of(cfg)
        self.types = tuple(cfg.extract.entity_types)
        self.strict = cfg.extract.strict_types
        self.capped = dict.fromkeys(CAPPED, 0)
        self.rejected: list[dict] = []

    def reject(self, reason: str, locator: str, excerpt: str) -> None:
        if len(self.rejected) < self.caps.rejects:
            self.rejected.append({"reason": reason, "locator": locator, "excerpt": excerpt[:200]})
        else:
            self.capped["rejects"] += 1

    def name(self, raw: str) -> str:
        return _cut(display_name(raw), self.caps.name_chars, self.capped, "names")

    def describe(self, raw: str) -> str:
        return _cut(clean_text(raw), self.caps.description_chars, self.capped, "descriptions")

    def entities(self, given: list[ExtractedEntity]) -> list[dict]:
        """Distinct entities in answer order, at most ``caps.entities``."""
        ents: dict[str, dict] = {}
        for e in given:
            display = self.name(e.name)
            key = name_key(display)
            if not key:
                self.reject("empty_name", f"entity:{e.name[:200]!r}", e.description)
                continue
            if key in ents:  # the same entity twice in one answer: keep both descriptions
                _add_description(ents[key], clean_text(e.description), self.caps, self.capped)
            elif len(ents) >= self.caps.entities:
                self.capped["entities"] += 1
            else:
                raw_type = e.type[: self.caps.name_chars]
                ents[key] = {
                    "key": key,
                    "display": display,
                    "type": normalise_type(raw_type, self.types, self.strict),
                    "description": self.describe(e.description),
                }
        return list(ents.values())

    def relations(self, given: list[ExtractedRelation]) -> list[dict]:
        """Distinct undirected relations in answer order, at most ``caps.relations``."""
        rels: dict[tuple[str, str], dict] = {}
        for r in given:
            a, b = self.name(r.source), self.name(r.target)
            ka, kb = name_key(a), name_key(b)
            if not ka or not kb:
                where = f"relation:{r.source[:200]!r}|{r.target[:200]!r}"
                self.reject("empty_name", where, r.description)
                continue
            if ka == kb:
                self.reject("self_loop", f"relation:{a}|{b}", r.description)
                continue
            if kb < ka:
                ka, kb, a, b = kb, ka, b, a
            if (ka, kb) in rels:
                _add_description(rels[(ka, kb)], clean_text(r.description), self.caps, self.capped)
            elif len(rels) >= self.caps.relations:
                self.capped["relations"] += 1
            else:
                rels[(ka, kb)] = {
                    "src_key": ka,
                    "dst_key": kb,
                    "src_display": a,
                    "dst_display": b,
                    "description": self.describe(r.description),
                }
        return list(rels.values())


def union_new(acc: dict, new: dict, caps: Caps | None = None) -> tuple[dict, bool]:
    """``acc ∪ (new − acc)`` by normalised key, within ``caps``; returns the union and whether
    anything was new."""
    caps = caps or Caps()
    capped = {k: acc.get("capped", {}).get(k, 0) + new.get("capped", {}).get(k, 0) for k in CAPPED}
    have_e = {e["key"] for e in acc["entities"]}
    have_r = {(r["src_key"], r["dst_key"]) for r in acc["relations"]}
    add_e = [e for e in new["entities"] if e["key"] not in have_e]
    add_r = [r for r in new["relations"] if (r["src_key"], r["dst_key"]) not in have_r]
    room_e = max(0, caps.entities - len(acc["entities"]))
    room_r = max(0, caps.relations - len(acc["relations"]))
    capped["entities"] += max(0, len(add_e) - room_e)
    capped["relations"] += max(0, len(add_r) - room_r)
    add_e, add_r = add_e[:room_e], add_r[:room_r]
    quarantined = acc.get("quarantined", []) + new.get("quarantined", [])
    capped["rejects"] += max(0, len(quarantined) - caps.rejects)
    merged = {
        "entities": acc["entities"] + add_e,
        "relations": acc["relations"] + add_r,
        "quarantined": quarantined[: caps.rejects],
        "capped": capped,
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
    caps = Caps.of(cfg)

    def request(messages: list[dict], model: type[BaseModel]) -> dict:
        return request_row(cfg, NAME, "synthesizer", messages, model)

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
                new = normalise(extraction, cfg, row["content_hash"])
                records, grew = union_new(records, new, caps)
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


# -- mentions from stored records -----------------------------------------------------------
RECORDS_SCHEMA = (
    "struct<entities:array<struct<key:string,display:string,type:string,description:string>>,"
    "relations:array<struct<src_key:string,dst_key:string,src_display:string,dst_display:string,"
    "description:string>>,quarantined:array<struct<reason:string,locator:string,excerpt:string>>,"
    f"capped:{CAPPED_SCHEMA}>"
)


def _entity_mentions(src: DataFrame) -> DataFrame:
    ents = src.select("chunk_id", "content_hash", F.explode("r.entities").alias("e"))
    return ents.select("chunk_id", "content_hash", "e.key", "e.display", "e.type", "e.description")


def _relation_mentions(src: DataFrame) -> DataFrame:
    """Relation mentions; ``dangling`` when an endpoint is not among the chunk's entities."""
    keys = _entity_mentions(src).select("chunk_id", F.col("key").alias("k"))
    rels = src.select("chunk_id", "content_hash", F.explode("r.relations").alias("x")).select(
        "chunk_id", "content_hash", "x.*"
    )
    return (
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


# -- the stage ------------------------------------------------------------------------------
class _Extractor:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.llm = LLMExecutor(ctx)
        self.result = StageResult()
        self.scratch = ctx.scratch
        self.materialise = self.scratch.materialise

    def run(self) -> StageResult:
        ctx = self.ctx
        texts = self.materialise(pending(ctx).drop("n_tokens"))
        n_todo = texts.count()
        result_counts: dict[str, int] = {"texts_to_extract": n_todo}
        failure: str | None = None
        if n_todo:
            ctx.log.info("extract: %d distinct chunk texts to extract", n_todo)
            program = _conversation(self.cfg)
            for attempt in range(self.cfg.extract.max_attempts):
                work = LLMWork(
                    NAME,
                    program,
                    "content_hash",
                    OUTCOME_SCHEMA,
                    roles=("synthesizer",),
                    calls_per_row=DEMAND.most_calls(self.cfg),
                    unit="conversations",
                    outputs_path=f"{self.scratch.path}/outcomes{attempt}",
                )
                summary, outcomes = self.llm.converse(texts, work)
                self.result.add(StageResult.of_llm(summary))
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
        if failure:  # outcomes are stored; the stage fails loudly, a rerun retries only those
            raise StageIncomplete(failure)
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
        self.ctx.tables.merge("extractions", row, RetryUntilOk(summed=["attempts"]))
        self.result.add(StageResult(self._capped_counts(outcomes)))

    def _capped_counts(self, outcomes: DataFrame) -> dict[str, int]:
        """What the caps cut from this attempt's ok texts, per kind (reported, never silent)."""
        capped = F.from_json("records", f"struct<capped:{CAPPED_SCHEMA}>").capped
        sums = [F.sum(F.coalesce(capped[k], F.lit(0))).alias(k) for k in CAPPED]
        row = outcomes.filter("status = 'ok'").select(*sums).first()
        counts = {f"capped_{k}": int(row[k] or 0) for k in CAPPED if row and row[k]}
        if counts:
            self.ctx.log.warning("extract: model output over the extract caps: %s", counts)
        return counts

    def _write_mentions(self) -> dict[str, int]:
        """Mentions for every chunk whose text is extracted but which is not marked done.

        A chunk's ``mentioned_chunks`` row is written last, after its entity and relation
        mentions and its quarantine rows: a run that dies between those MERGEs leaves the
        chunk unmarked, and the next run writes all of them again (MERGEs on their keys, so
        what was already written is not duplicated) — never half a chunk's edges.
        """
        src = self._mention_sources()
        tables = self.ctx.tables
        e_res, r_res, q_res = side_by_side(
            self.ctx.spark,
            [
                lambda: tables.merge("entity_mentions", _entity_mentions(src)),
                lambda: tables.merge("relation_mentions", _relation_mentions(src)),
                lambda: tables.merge("quarantine", self._quarantine(src)),
            ],
        )
        done = src.select(
            "chunk_id",
            "content_hash",
            F.size("r.entities").alias("n_entities"),
            F.size("r.relations").alias("n_relations"),
            F.lit(self.ctx.run_id).alias("run_id"),
        )
        d_res = tables.merge("mentioned_chunks", done)
        return {
            "entity_mentions_written": e_res.inserted,
            "relation_mentions_written": r_res.inserted,
            "quarantined": q_res.inserted,
            "chunks_mentioned": d_res.inserted,
        }

    def _mention_sources(self) -> DataFrame:
        """``(chunk_id, content_hash, r)``: parsed records of the chunks not marked done."""
        tables = self.ctx.tables
        done = tables.read("mentioned_chunks").select("chunk_id")
        ok = tables.read("extractions").filter("status = 'ok'").select("content_hash", "records")
        todo = (
            tables.read("chunks")
            .select("chunk_id", "content_hash")
            .join(done, "chunk_id", "left_anti")
        )
        # parse only the records of chunks that need mentions, not every extraction stored
        return self.materialise(
            todo.join(ok, "content_hash").select(
                "chunk_id", "content_hash", F.from_json("records", RECORDS_SCHEMA).alias("r")
            )
        )

    def _quarantine(self, src: DataFrame) -> DataFrame:
        """Rejected records and what the caps cut, one row per text and reason."""
        per_text = src.dropDuplicates(["content_hash"])
        rejected = per_text.select(
            "content_hash", F.explode("r.quarantined").alias("q")
        ).dropDuplicates(["content_hash", "q"])
        notes = F.create_map(*[x for k, v in CAP_NOTES.items() for x in (F.lit(k), F.lit(v))])
        cut = F.array(
            *[F.struct(F.lit(k).alias("k"), F.col(f"r.capped.{k}").alias("n")) for k in CAPPED]
        )
        capped = (
            per_text.select("content_hash", F.explode(cut).alias("c"))
            .filter("c.n > 0")
            .select(
                "content_hash",
                F.struct(
                    F.concat(F.lit("capped_"), "c.k").alias("reason"),
                    F.concat(F.lit("cap:"), "c.k").alias("locator"),
                    F.concat_ws(
                        " ", F.col("c.n").cast("string"), F.element_at(notes, F.col("c.k"))
                    ).alias("detail"),
                    F.lit(None).cast("string").alias("excerpt"),
                ).alias("q"),
            )
        )
        rejected = rejected.select(
            "content_hash",
            F.struct(
                "q.reason", "q.locator", F.lit(None).cast("string").alias("detail"), "q.excerpt"
            ).alias("q"),
        )
        return as_quarantine(
            rejected.unionByName(capped),
            NAME,
            self.ctx.run_id,
            source=F.concat(F.lit("content:"), "content_hash"),
            locator="q.locator",
            reason="q.reason",
            detail="q.detail",
            excerpt="q.excerpt",
        )

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


def pending(ctx: StageContext) -> DataFrame:
    """Distinct chunk texts without an ok extraction (one conversation each)."""
    t = ctx.tables
    done = t.read("extractions").filter("status = 'ok'").select("content_hash")
    return (
        t.read("chunks")
        .groupBy("content_hash")
        .agg(
            F.min_by("text", "chunk_id").alias("text"),
            F.min_by("language", "chunk_id").alias("language"),
            F.min_by("n_tokens", "chunk_id").alias("n_tokens"),
        )
        .join(done, "content_hash", "left_anti")
    )


def _run(ctx: StageContext) -> StageResult:
    return _Extractor(ctx).run()


DEMAND = LLMDemand(
    "synthesizer",
    "content_hash",
    calls=lambda cfg, _: (1, calls_per_text(cfg)),
    prompt_tokens=lambda: F.col("n_tokens"),
    max_tokens=lambda cfg: cfg.llm.synthesizer.max_tokens,
    note="1..{most} calls per distinct chunk text (gleaning); later turns resend the text",
)

STAGE = Stage(
    NAME,
    _run,
    reads=("chunks", "extractions", "llm_calls"),
    writes=(
        "extractions",
        "entity_mentions",
        "relation_mentions",
        "mentioned_chunks",
        "quarantine",
        "llm_calls",
    ),
    pending=pending,
    llm=DEMAND,
)
