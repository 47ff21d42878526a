"""Keeping API keys out of everything stored or printed.

Errors come back from gateways that echo request headers, URLs carry ``user:token@`` or
``?api-key=``; any of them may end up in a Delta table, a log line or a terminal. One
helper scrubs text (:func:`scrub`), one redacts URLs (:func:`redact_url`); both are used
wherever an error or a URL is stored or printed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
#: Environment variables that hold keys (config.ENV_OVERRIDES plus the SDK's own).
KEY_ENV_VARS = ("SYNTHESIZER_API_KEY", "TRAINEE_API_KEY", "OPENAI_API_KEY")
#: Shorter values are placeholders ("EMPTY", "x"): scrubbing them would mangle ordinary text.
MIN_SECRET_LEN = 8

_SECRET_NAME = r"api[-_]?key|access[-_]?token|auth[-_]?token|token|secret|password|key|sig"
_QUERY_SECRET = re.compile(rf"(?i)^(?:{_SECRET_NAME}|x-api-key|client[-_]?secret)$")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_NAMED = re.compile(rf"(?i)\b((?:x-)?(?:{_SECRET_NAME})[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&)}}\]]+")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"']+@")
_known: set[str] = set()


def remember(*values: str | None) -> None:
    """Register key values of this process so every later :func:`scrub` removes them."""
    _known.update(v for v in values if v and len(v) >= MIN_SECRET_LEN)


def known_secrets() -> set[str]:
    """Values registered with :func:`remember` plus the keys in the environment."""
    env = (os.environ.get(v) for v in KEY_ENV_VARS)
    return _known | {v for v in env if v and len(v) >= MIN_SECRET_LEN}


def config_secrets(cfg: Any) -> list[str]:
    """The API keys of a :class:`~graphgen_spark.config.Config` (duck-typed, no import)."""
    keys = []
    for role in ("synthesizer", "trainee"):
        secret = getattr(getattr(cfg.llm, role), "api_key", None)
        if secret is not None:
            keys.append(secret.get_secret_value())
    return keys


def scrub(text: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """``text`` with every key value, ``Bearer``/``Basic`` credential, ``name=value`` or
    ``"name": "value"`` pair of a secret-looking name, and URL userinfo replaced by ``***``."""
    if not text:
        return text
    values = {s for s in secrets if s and len(s) >= MIN_SECRET_LEN} | known_secrets()
    for value in sorted(values, key=len, reverse=True):  # longest first: no half-scrubbed key
        text = text.replace(value, REDACTED)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _NAMED.sub(lambda m: m.group(1) + REDACTED, text)
    return _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)


def redact_url(url: str | None) -> str | None:
    """``url`` without credentials: userinfo and secret-named query values become ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL at all: scrub it as text
        return scrub(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        safe = [(k, REDACTED if _QUERY_SECRET.match(k) else v) for k, v in pairs]
        query = urlencode(safe, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs each record's final message (install on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True
