"""The whole configuration as pydantic models; YAML files plus environment overrides.

Unknown keys and bad values stop the run with a message naming the dotted key and what is
allowed (``extra="forbid"`` everywhere). API keys are ``SecretStr``: never printed, never
written to a table or a Spark conf. Environment variables (architecture §3.2) win over YAML.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the allowed values."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Section):
    seed: int = 42
    name: str = "graphgen"
    max_tokens: int | None = Field(None, ge=1, description="stop new LLM calls past this total")
    max_cost: float | None = Field(None, gt=0, description="stop new LLM calls past this cost")
    # what the limits are held against: every call this output's ledger records (reruns
    # and scheduler retries included), or only the calls of one invocation
    budget_scope: Literal["output", "invocation"] = "output"
    # one run at a time per output: a run whose lease went unrenewed this long is dead
    lease_ttl_s: float = Field(120.0, gt=0)
    # skip a stage while nothing it reads or writes changed since it settled (settled.py);
    # false: every selected stage runs (each still writes and pays only for what is new)
    skip_settled: bool = True


class SparkConfig(_Section):
    master: str | None = Field(None, description="None: leave it to spark-submit / the notebook")
    app_name: str = "graphgen-spark"
    # `cached`: jars resolved by `make setup` into jar_cache; `packages`: --packages style
    # resolution at start; `present`: the cluster already has Delta/GraphFrames (Databricks).
    jars: Literal["cached", "packages", "present"] = "cached"
    jar_cache: str = ".jars"
    shuffle_partitions: int = Field(8, ge=1)
    # the JVM's log level; WARN keeps Spark's INFO chatter (spark-submit's default) from
    # burying the job's own lines, its last one included
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "OFF"] = "WARN"
    conf: dict[str, str] = Field(default_factory=dict)


class TablesConfig(_Section):
    # Databricks: catalog + schema give `catalog.schema.<name>`; otherwise DIR/tables/<name>.
    catalog: str | None = None
    db_schema: str | None = Field(None, alias="schema")


class InputConfig(_Section):
    text_field: str | None = Field(None, description="None: first present of content, text")
    id_field: str | None = None
    max_doc_chars: int = Field(5_000_000, ge=1)
    format: Literal["auto", "jsonl", "json", "txt", "md", "csv", "parquet", "table"] = "auto"
    # False: a symbolic link in a local input folder that leaves it is quarantined, not read
    follow_symlinks: bool = False

    @field_validator("follow_symlinks", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        if isinstance(value, bool) or str(value).lower() in ("true", "false"):
            return value
        raise ValueError("allowed values: true, false")


class ChunkConfig(_Section):
    tokenizer: Literal["cl100k_base"] = "cl100k_base"
    size: int = Field(1024, ge=1)
    overlap: int = Field(100, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkConfig:
        if self.overlap >= self.size:
            raise ValueError(f"chunk.overlap ({self.overlap}) must be < chunk.size ({self.size})")
        return self


class LanguageConfig(_Section):
    force: Literal["en", "zh"] | None = None
    enforce: bool = True


class EndpointConfig(_Section):
    """One OpenAI-compatible chat-completions endpoint (a role)."""

    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(4096, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_concurrency: int | None = Field(None, ge=1, description="endpoint-wide in-flight cap")
    rpm: int | None = Field(None, ge=1, description="requests per minute, endpoint-wide")
    tpm: int | None = Field(None, ge=1, description="tokens per minute, endpoint-wide")
    price_prompt_per_1m: float = Field(0.0, ge=0)
    price_completion_per_1m: float = Field(0.0, ge=0)
    # a fine-tuned trainee is scored beside the old one: judgements are keyed by model + revision
    revision: str | None = None


class LLMConfig(_Section):
    synthesizer: EndpointConfig = Field(default_factory=EndpointConfig)
    trainee: EndpointConfig = Field(default_factory=EndpointConfig)
    concurrency_per_task: int = Field(16, ge=1)
    max_retries: int = Field(5, ge=0)
    # a request still not answered ok after this many attempts, over all runs, is given up
    # (status gave_up, with its last error); `run --retry-given-up` tries them again
    give_up_after: int = Field(20, ge=1)
    retry_given_up: bool = False
    backoff_min_s: float = Field(4.0, ge=0)
    backoff_max_s: float = Field(10.0, ge=0)
    repair_attempts: int = Field(1, ge=0)
    # Requests run in waves of about wave_seconds each (llm/waves.py), at most wave_size
    # requests; a crash loses at most the two waves in flight.
    wave_seconds: float = Field(60.0, gt=0)
    wave_size: int = Field(50_000, ge=1)
    # seconds between progress lines when stderr is not a terminal (a terminal redraws one
    # line every second): llm/progress.py
    progress_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _backoff_order(self) -> LLMConfig:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("llm.backoff_max_s must be >= llm.backoff_min_s")
        return self


DEFAULT_ENTITY_TYPES = (
    "concept",
    "date",
    "location",
    "keyword",
    "organization",
    "person",
    "event",
    "work",
    "nature",
    "artificial",
    "science",
    "technology",
    "mission",
    "gene",
)


class ExtractConfig(_Section):
    entity_types: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTITY_TYPES))
    strict_types: bool = True
    max_gleaning_rounds: int = Field(3, ge=0)
    ask_before_continue: bool = True
    max_attempts: int = Field(3, ge=1)
    max_failed_fraction: float = Field(0.01, ge=0, le=1)
    # caps on one chunk text's records (a hostile or looping reply); what is dropped or cut
    # is counted in the stage's counts and a quarantine row per text, never silently
    max_entities_per_chunk: int = Field(200, ge=1)
    max_relations_per_chunk: int = Field(400, ge=1)
    max_name_chars: int = Field(200, ge=1)
    max_description_chars: int = Field(4000, ge=1)

    @model_validator(mode="after")
    def _clean_types(self) -> ExtractConfig:
        types = [t.strip().lower() for t in self.entity_types if t.strip()]
        if not types:
            raise ValueError("extract.entity_types must list at least one type")
        if "unknown" in types:
            raise ValueError("extract.entity_types: 'unknown' is reserved for placeholders")
        object.__setattr__(self, "entity_types", list(dict.fromkeys(types)))
        return self


class MergeConfig(_Section):
    summary_threshold: int = Field(200, ge=1, description="tokens above which to summarise")
    summary_target: int = Field(200, ge=1)
    summary_max_input: int = Field(4000, ge=100)
    unknown_endpoints: Literal["placeholder", "drop"] = "placeholder"


class GapConfig(_Section):
    scope: Literal["all", "relations"] = "all"


class QuizConfig(_Section):
    samples: int = Field(2, ge=1, le=10)
    # one call returns all statements; the reference's per-statement mode is not offered
    mode: Literal["single_call"] = "single_call"
    temperature: float = Field(1.0, ge=0, le=2)
    max_attempts: int = Field(3, ge=1)


class SynonymsConfig(_Section):
    yes: list[str] = Field(default_factory=list, description="extra words counted as yes")
    no: list[str] = Field(default_factory=list, description="extra words counted as no")


class JudgeConfig(_Section):
    max_tokens: int = Field(1, ge=1)
    top_k: int = Field(5, ge=1, le=20)
    temperature: float = Field(0.0, ge=0, le=2)
    prompt_language: Literal["auto", "en", "zh"] = "auto"
    prob_floor: float = Field(1e-6, gt=0, lt=1)
    max_unjudged_fraction: float = Field(0.05, ge=0, le=1)
    synonyms: SynonymsConfig = Field(default_factory=SynonymsConfig)


class ECEConfig(_Section):
    bins: int = Field(10, ge=2, le=100)
    variant: Literal["edge_seed", "unit"] = Field(
        "edge_seed", description="the `ece` partitioner: paper era (edge_seed) or later (unit)"
    )


Method = Literal["ece", "bfs", "dfs", "anchor_bfs", "triple", "quintuple", "community", "unit"]
Mode = Literal[
    "atomic",
    "aggregated",
    "multi_hop",
    "cot",
    "multiple_choice",
    "multi_answer",
    "fill_in_blank",
    "true_false",
]
METHODS: tuple[str, ...] = get_args(Method)
MODES: tuple[str, ...] = get_args(Mode)


class UnitPartitionConfig(_Section):
    """`ece/unit` budgets (§6.6)."""

    max_units: int = Field(20, ge=1)
    min_units: int = Field(5, ge=0)
    max_tokens: int = Field(10240, ge=1)
    undersized: Literal["release", "discard"] = "release"


class CommunityConfig(_Section):
    max_size: int = Field(20, ge=1)
    use_lcc: bool = False
    seed: int = 42
    max_component_nodes: int = Field(200_000, ge=1)


class AnchorConfig(_Section):
    type: str | None = None
    ids: list[str] = Field(default_factory=list)
    max_units: int = Field(10, ge=1)


class PartitionConfig(_Section):
    """Sampling subgraphs around the trainee's gaps (§6); the method comes from each mode."""

    sampling: Literal["max_loss", "min_loss", "random"] | None = Field(
        None, description="None: max_loss, or random when gap_scoring is off"
    )
    loss_strategy: Literal["only_edge", "both"] = "only_edge"
    expand_method: Literal["max_width", "max_tokens"] = "max_width"
    bidirectional: bool = True
    max_depth: int = Field(1, ge=0)
    max_extra_edges: int = Field(2, ge=0)
    max_tokens: int = Field(256, ge=1)
    isolated_nodes: Literal["add", "ignore"] = "ignore"
    unit: UnitPartitionConfig = Field(default_factory=UnitPartitionConfig)
    max_units_per_community: int = Field(1, ge=1)
    community: CommunityConfig = Field(default_factory=CommunityConfig)
    anchor: AnchorConfig = Field(default_factory=AnchorConfig)
    engine: Literal["auto", "component", "claim", "rounds"] = Field(
        "auto",
        description="component: the sequential algorithm per connected component; claim: "
        "ece/edge_seed by claim rounds (method §6.9, meets the contract); rounds: ece/edge_seed "
        "by exact rounds (equal to the sequential result, slow on power-law graphs); auto: "
        "component up to local_max_edges relations, claim above (max_width)",
    )
    local_max_edges: int = Field(500_000, ge=1)
    max_rounds: int = Field(
        50, ge=0, description="claim/rounds engines: rounds before the driver finishes"
    )
    collect_threshold: int = Field(
        100_000,
        ge=0,
        description="claim/rounds engines: finish on the driver below this many relations",
    )

    @model_validator(mode="after")
    def _collect_below_local(self) -> PartitionConfig:
        if self.engine == "auto" and self.collect_threshold > self.local_max_edges:
            raise ValueError(
                f"partition.collect_threshold ({self.collect_threshold}) must be <= "
                f"partition.local_max_edges ({self.local_max_edges}) under engine=auto: the "
                "claim/rounds engine would collect a component the per-component engine found "
                "too large"
            )
        return self


class GraphConfig(_Section):
    """Which formulation answers the graph queries (graphgen_spark/graph/engines.py)."""

    engine: Literal["auto", "graphframes", "dataframe"] = Field(
        "auto",
        description="graphframes: every graph query on GraphFrames (its jar must be on the "
        "classpath); dataframe: plain DataFrame joins; auto: the faster one measured per "
        "query where the GraphFrames jar is present, DataFrame joins where it is not, and "
        "the components of a small graph (100,000 edges at most) on the driver",
    )
    label_propagation_iters: int = Field(
        20, ge=1, description="rounds of label propagation that cut oversized components"
    )


class StyleConfig(_Section):
    answer_style: Literal[
        "logical",
        "executive_summary",
        "cross_domain_analogy",
        "critical_analysis",
        "first_person_narrative",
        "historical_evolution",
        "popular_science",
        "qa_dialogue",
        "technical_deep_dive",
    ] = "logical"
    question_styles: list[Literal["direct", "why_how", "scenario", "comparison", "definition"]] = (
        Field(default_factory=lambda: ["direct"], min_length=1)
    )
    difficulty: bool = False
    difficulty_order: list[Literal["easy", "medium", "hard"]] = Field(
        default_factory=lambda: ["easy", "medium", "hard"], min_length=3, max_length=3
    )


class GenerateConfig(_Section):
    """QA generation (§7): which modes, how much, and the per-mode partition method."""

    modes: list[Mode] = Field(
        default_factory=lambda: ["atomic", "aggregated", "multi_hop"], min_length=1
    )
    methods: dict[Mode, Method] = Field(
        default_factory=dict, description="override a mode's partition method (§7.2 defaults)"
    )
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(4096, ge=1)
    max_prompt_tokens: int = Field(12_000, ge=1)
    max_batches: int | None = Field(None, ge=1, description="per mode, in batch rank order")
    max_qa: int | None = Field(None, ge=1, description="per mode, in batch rank order")
    max_qa_per_doc: int | None = Field(None, ge=1)
    num_questions: int | None = Field(None, ge=1, description="None: 5 (choice, fill), 2 (tf)")
    split_descriptions: bool = Field(True, description="atomic: one unit per merged description")
    duplicates: Literal["flag", "drop"] = "flag"
    qa_check: bool = Field(False, description="ask the synthesizer whether answers are supported")


class ExportConfig(_Section):
    """How `qa` becomes training files (method §7.5)."""

    formats: list[Literal["alpaca", "sharegpt", "chatml"]] = Field(
        default_factory=lambda: ["chatml"], min_length=1
    )
    system_prompt: str | None = None
    include_metadata: bool = False
    include_flagged: bool = Field(False, description="also export duplicate / unsupported rows")
    validation_fraction: float = Field(0.0, ge=0, lt=1, description="0: no split")
    decontaminate_against: str | None = Field(None, description="evaluation file (jsonl/json/txt)")
    decontaminate_ngram: int = Field(13, ge=1)


class MTLDConfig(_Section):
    threshold: float = Field(0.72, gt=0, lt=1)
    casefold: bool = False


class NearDupConfig(_Section):
    shingle: int = Field(5, ge=1)
    permutations: int = Field(128, ge=1)
    jaccard: float = Field(0.8, gt=0, le=1)
    action: Literal["flag", "drop"] = "flag"


class EvalConfig(_Section):
    """Quality metrics of the generated QA (method §8)."""

    tokenizer: Literal["cl100k_base"] = "cl100k_base"
    mtld: MTLDConfig = Field(default_factory=MTLDConfig)
    distinct_n: list[int] = Field(default_factory=lambda: [1, 2])
    near_dup: NearDupConfig = Field(default_factory=NearDupConfig)
    llm_judge: bool = False
    sample_rate: float = Field(0.05, gt=0, le=1)


class Config(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    tables: TablesConfig = Field(default_factory=TablesConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    # YAML reads a bare `off` as false: both spellings are accepted
    gap_scoring: Literal["on", "off"] = "on"
    gap: GapConfig = Field(default_factory=GapConfig)
    quiz: QuizConfig = Field(default_factory=QuizConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    ece: ECEConfig = Field(default_factory=ECEConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    style: StyleConfig = Field(default_factory=StyleConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _gap_switch(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("gap_scoring"), bool):
            data = {**data, "gap_scoring": "on" if data["gap_scoring"] else "off"}
        return data

    @model_validator(mode="after")
    def _sampling_needs_scores(self) -> Config:
        if self.gap_scoring == "off" and self.partition.sampling not in (None, "random"):
            raise ValueError(
                f"partition.sampling={self.partition.sampling!r} needs gap scores but "
                "gap_scoring is off; allowed with gap_scoring off: 'random' (or leave it unset)"
            )
        if self.run.max_cost is not None and not any(
            ep.price_prompt_per_1m or ep.price_completion_per_1m
            for ep in (self.llm.synthesizer, self.llm.trainee)
        ):
            raise ValueError(
                "run.max_cost is set but no price is: set llm.synthesizer.price_prompt_per_1m / "
                "price_completion_per_1m (and the trainee's), or use run.max_tokens"
            )
        uses_anchor = "anchor_bfs" in self.generate.methods.values()
        if uses_anchor and not (self.partition.anchor.type or self.partition.anchor.ids):
            raise ValueError(
                "partition.anchor.type or partition.anchor.ids is required by anchor_bfs"
            )
        return self

    def sampling(self) -> str:
        """The unit order of §6.1: loss orders need gap scores, so `off` means random."""
        if self.partition.sampling:
            return self.partition.sampling
        return "random" if self.gap_scoring == "off" else "max_loss"

    def trainee_model(self) -> str:
        """The trainee's identity in judgements: model name plus revision when set."""
        t = self.llm.trainee
        return f"{t.model}@{t.revision}" if t.revision else str(t.model)

    def config_hash(self) -> str:
        """Hash of everything that shapes results (secrets and Spark plumbing excluded)."""
        data = self.model_dump(mode="json", exclude={"spark": True})
        for role in ("synthesizer", "trainee"):
            data["llm"][role].pop("api_key", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# Environment variables (GraphGen-compatible) -> dotted config keys.
ENV_OVERRIDES = {
    "SYNTHESIZER_BASE_URL": "llm.synthesizer.base_url",
    "SYNTHESIZER_MODEL": "llm.synthesizer.model",
    "SYNTHESIZER_API_KEY": "llm.synthesizer.api_key",
    "TRAINEE_BASE_URL": "llm.trainee.base_url",
    "TRAINEE_MODEL": "llm.trainee.model",
    "TRAINEE_API_KEY": "llm.trainee.api_key",
}


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: cannot override, {key!r} is not a section")
    node[leaf] = value


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    ctx = error.get("ctx") or {}
    if kind in ("literal_error", "enum") and "expected" in ctx:
        return f"{key}: {error['input']!r} is not allowed; allowed values: {ctx['expected']}"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section an unknown key was found in, for the error message."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(f.alias or name for name, f in model.model_fields.items())


def build_config(data: dict[str, Any] | None = None, *, env: bool = True) -> Config:
    """Validate a config mapping (plus env overrides) into :class:`Config` or raise ConfigError."""
    data = json.loads(json.dumps(data or {}))  # deep copy, plain types
    if env:
        for var, dotted in ENV_OVERRIDES.items():
            if os.environ.get(var):
                _set_dotted(data, dotted, os.environ[var])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            line = _describe(err)
            if err["type"] == "extra_forbidden":
                allowed = _allowed_keys(Config, tuple(err["loc"]))
                if allowed:
                    line += f"; allowed keys here: {', '.join(allowed)}"
            lines.append(line)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path | None = None, *, env: bool = True, **overrides: Any) -> Config:
    """Load a YAML config (default conf/local.yaml); ``overrides`` are dotted keys."""
    path = Path(path) if path else CONF_DIR / "local.yaml"
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for dotted, value in overrides.items():
        _set_dotted(data, dotted.replace("__", "."), value)
    return build_config(data, env=env)
