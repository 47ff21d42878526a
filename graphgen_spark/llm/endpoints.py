"""Resolved endpoint settings for a role, as shipped to executors.

The API key travels inside the pickled task closure only (never a Spark conf, table, log
or report); ``repr`` hides it, and ``safe_url`` is the form of ``base_url`` to store or print
(a URL may carry ``user:token@`` or ``?api-key=``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphgen_spark.config import Config, ConfigError
from graphgen_spark.secrets import redact_url, remember

ROLES = ("synthesizer", "trainee")


@dataclass(frozen=True)
class Endpoint:
    role: str
    base_url: str = field(repr=False)  # may carry credentials: see safe_url
    model: str
    api_key: str = field(repr=False)
    temperature: float
    top_p: float
    max_tokens: int
    timeout_s: float
    price_prompt_per_1m: float
    price_completion_per_1m: float

    @property
    def safe_url(self) -> str:
        """``base_url`` with its credentials redacted: the form to store, log or quote."""
        return redact_url(self.base_url) or ""

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.price_prompt_per_1m
            + completion_tokens * self.price_completion_per_1m
        ) / 1e6


def resolve_endpoint(cfg: Config, role: str) -> Endpoint:
    """The role's endpoint, or a ConfigError naming the missing key and its env variable."""
    if role not in ROLES:
        raise ConfigError(f"unknown LLM role {role!r}; allowed: {', '.join(ROLES)}")
    ep = getattr(cfg.llm, role)
    env = role.upper()
    if not ep.base_url:
        raise ConfigError(
            f"llm.{role}.base_url is not set: set {env}_BASE_URL (any OpenAI-compatible "
            "endpoint) or llm.{role}.base_url in the config"
        )
    if not ep.model:
        raise ConfigError(f"llm.{role}.model is not set: set {env}_MODEL or llm.{role}.model")
    key = ep.api_key.get_secret_value() if ep.api_key else "EMPTY"
    remember(key)  # scrubbed from every later error printed or stored by this process
    return Endpoint(
        role=role,
        base_url=ep.base_url,
        model=ep.model,
        api_key=key,
        temperature=ep.temperature,
        top_p=ep.top_p,
        max_tokens=ep.max_tokens,
        timeout_s=ep.timeout_s,
        price_prompt_per_1m=ep.price_prompt_per_1m,
        price_completion_per_1m=ep.price_completion_per_1m,
    )
