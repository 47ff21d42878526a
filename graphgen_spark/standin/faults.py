"""Injected faults: which request fails, how, and the HTTP behaviour of each kind.

Decisions are a pure function of (seed, canonical request body, attempt number),
where the attempt number counts how often this exact body arrived before. A client
retrying a request therefore walks a fixed fault sequence, so retry tests can
assert exact counts and a benchmark run is reproducible.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from aiohttp import web

from .options import StandinOptions
from .rules import Choice, error_body

_STATUS_FAULTS = {"500": 500, "502": 502, "503": 503}
INVALID_JSON_CONTENT = '{"standin_fault": "invalid_json", "text": '
#: Faults that change a 200 reply's content rather than the transport (see server._answer).
CONTENT_FAULTS = frozenset({"invalid_json", "empty", "no_logprobs"})


def canonical_body(body: Any) -> bytes:
    """Key-order-independent bytes of a request body, so equal requests compare equal."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def choose_fault(options: StandinOptions, body: bytes, attempt: int) -> str | None:
    """The fault kind for attempt ``attempt`` (0-based) of ``body``, or None to succeed."""
    kinds = options.faults
    if not kinds:
        return None
    if attempt < options.fail_first:
        return kinds[attempt % len(kinds)]
    if options.fault_rate <= 0:
        return None
    digest = hashlib.sha256(b"%d\x1f%s\x1f%d" % (options.seed, body, attempt)).digest()
    if int.from_bytes(digest[:8], "big") / 2.0**64 < options.fault_rate:
        return kinds[int.from_bytes(digest[8:16], "big") % len(kinds)]
    return None


class AttemptLog:
    """Counts arrivals per distinct body (keyed by digest to bound memory)."""

    def __init__(self) -> None:
        self._seen: dict[bytes, int] = {}

    def next_attempt(self, body: bytes) -> int:
        key = hashlib.sha256(body).digest()
        attempt = self._seen.get(key, 0)
        self._seen[key] = attempt + 1
        return attempt

    def __len__(self) -> int:
        return len(self._seen)

    def clear(self) -> None:
        self._seen.clear()


def faulty_choice(kind: str, choice: Choice) -> Choice:
    """``choice`` as content fault ``kind`` delivers it (the HTTP exchange stays a 200)."""
    if kind == "invalid_json":
        return Choice(INVALID_JSON_CONTENT, choice.finish_reason)
    if kind == "empty":
        return Choice("", choice.finish_reason)
    if kind == "no_logprobs":
        return Choice(choice.content, choice.finish_reason, None)
    raise ValueError(f"not a content fault: {kind!r}")


def _json_response(status: int, payload: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers=headers,
    )


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


async def fault_response(
    kind: str,
    request: web.Request,
    options: StandinOptions,
    ok_body: bytes,
) -> web.StreamResponse | None:
    """Act out fault ``kind``.

    Returns the response to send, or None when the caller should answer normally
    (``hang`` after its sleep). ``ok_body`` is the normal response body, which
    ``truncated`` cuts in half. :data:`CONTENT_FAULTS` are handled by the caller since
    they change the completion content, not the transport.
    """
    if kind == "429":
        return _json_response(
            429,
            error_body(
                "stand-in injected fault: rate limit", "rate_limit_exceeded", "rate_limit_exceeded"
            ),
            **{"Retry-After": _format_seconds(options.retry_after_s)},
        )
    if kind in _STATUS_FAULTS:
        status = _STATUS_FAULTS[kind]
        return _json_response(
            status, error_body(f"stand-in injected fault: HTTP {status}", "server_error")
        )
    if kind == "401_echo":
        echoed = request.headers.get("Authorization", "")
        message = f"stand-in injected fault: invalid credentials (Authorization: {echoed})"
        return _json_response(401, error_body(message, "invalid_request_error", "invalid_api_key"))
    if kind == "hang":
        # The client normally times out first; with handler cancellation enabled the
        # disconnect cancels this sleep and frees the concurrency slot.
        await asyncio.sleep(options.hang_s)
        return None
    if kind == "drop":
        transport = request.transport
        if transport is not None:
            transport.abort()  # RST/close with no bytes written: the client sees a dropped connection
        # Nothing can be sent; an empty response on a closed transport is discarded by aiohttp.
        return web.Response(status=204)
    if kind == "truncated":
        return web.Response(
            status=200, body=ok_body[: len(ok_body) // 2], content_type="application/json"
        )
    raise ValueError(f"unknown fault kind {kind!r}")
