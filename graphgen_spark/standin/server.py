"""The aiohttp app and a thread-hosted server around it.

The server runs on its own event loop in a background thread so synchronous
callers (tests, the Spark driver, the demo) can start it in-process and talk to
it with any HTTP client. aiohttp keeps per-request cost to a few hundred
microseconds, so one loop sustains hundreds of requests/s at realistic latency.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
import threading
import time
from collections import deque
from types import TracebackType
from typing import Any

from aiohttp import web

from . import faults as flt
from .options import OptionError, StandinOptions
from .rules import (
    SYSTEM_FINGERPRINT,
    ChatRequest,
    ErrorReply,
    RequestError,
    RuleEngine,
    completion,
    error_body,
    load_script,
)
from .slots import SlotPool
from .stats import Stats

BANNER = "graphgen-spark STAND-IN endpoint — deterministic rules, NOT a language model"
_SHUTDOWN_TIMEOUT_S = 0.5
_RECENT = 256  # request bodies kept for tests to read back (what exactly was sent)
log = logging.getLogger(__name__)


def _json(status: int, payload: Any, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers=headers,
    )


class StandinApp:
    """Request handling and state; independent of how the app is hosted."""

    def __init__(self, options: StandinOptions) -> None:
        options.validate()
        self.options = options
        try:
            rules = load_script(options.script) if options.script is not None else []
        except ValueError as exc:
            raise OptionError("script", str(exc)) from exc
        self.engine = RuleEngine(rules=rules, no_logprobs=options.no_logprobs)
        self.stats = Stats()
        self.attempts = flt.AttemptLog()
        self.recent: deque[Any] = deque(maxlen=_RECENT)
        self._latency_s = options.latency_ms / 1000.0
        self._slots: SlotPool | None = None  # created on the serving loop
        # cleared by hold(): answers wait before they are sent (see StandinServer.hold)
        self.gate: asyncio.Event | None = None

    def build(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_post("/stats/reset", self.reset_stats)
        app.router.add_get("/stats/requests", self.get_requests)
        app.router.add_get("/health", self.health)
        return app

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot(len(self.attempts))

    def reset(self) -> None:
        """Zero counters and forget attempt history, so fault sequences restart."""
        self.stats.reset()
        self.attempts.clear()
        self.recent.clear()

    # -- handlers ----------------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        stats = self.stats
        stats.requests_total += 1
        stats.arrivals.append(arrival)
        body: Any = None
        try:
            body = json.loads(await request.read())
            self.recent.append(body)
            req = ChatRequest.from_body(body)
        except (RequestError, ValueError, TypeError) as exc:
            stats.bad_requests += 1
            if isinstance(body, dict) and isinstance(body.get("model"), str):
                stats.by_model[body["model"]] += 1
            return self._send(_json(400, error_body(str(exc), "invalid_request_error")))
        stats.by_model[req.model] += 1
        canonical = flt.canonical_body(body)
        attempt = self.attempts.next_attempt(canonical)
        fault = flt.choose_fault(self.options, canonical, attempt)
        if fault is not None:
            stats.faults_by_kind[fault] += 1

        start = await self._acquire(arrival)
        freed_at: float | None = None  # None = "now" (hang, disconnect, error)
        try:
            # Do the work first, then sleep out the rest of the latency: the slot's busy
            # time is exactly `latency` however long rendering took.
            try:
                resp = self._answer(req, canonical, attempt, fault)
            except Exception as exc:  # a broken rule/handler must show up, not kill the request
                log.exception("stand-in rule failed for model %s", req.model)
                resp = _json(500, error_body(f"stand-in rule failed: {exc!r}", "server_error"))
            deadline = start + self._latency_s
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.gate is not None:
                await self.gate.wait()
            if fault is not None and fault not in flt.CONTENT_FAULTS:
                ok_body = resp.body if isinstance(resp.body, bytes) else b""
                fault_resp = await flt.fault_response(fault, request, self.options, ok_body)
                if fault_resp is None:  # hang: answer normally after the stall
                    stats.completions_ok += resp.status == 200
                    return self._send(resp)
                freed_at = deadline
                return fault_resp if fault == "drop" else self._send(fault_resp)
            stats.completions_ok += resp.status == 200 and fault is None
            freed_at = deadline
            return self._send(resp)
        finally:
            stats.in_flight -= 1
            if self._slots is not None:
                self._slots.release(loop.time() if freed_at is None else freed_at)

    def _answer(
        self, req: ChatRequest, canonical: bytes, attempt: int, fault: str | None
    ) -> web.Response:
        """The normal response (or scripted error) for ``req``, fully rendered."""
        reply = self.engine.answer(req)
        if isinstance(reply, ErrorReply):
            err_type = "invalid_request_error" if reply.status < 500 else "server_error"
            return _json(reply.status, error_body(reply.message, err_type))
        if fault in flt.CONTENT_FAULTS:
            reply = [flt.faulty_choice(fault, c) for c in reply]
        cid = "chatcmpl-standin-" + hashlib.sha256(canonical).hexdigest()[:24]
        payload = completion(req, reply, cid, int(time.time()))
        return _json(200, payload, **{"x-standin-attempt": str(attempt)})

    def _send(self, resp: web.Response) -> web.Response:
        self.stats.by_status[resp.status] += 1
        return resp

    async def _acquire(self, arrival: float) -> float:
        """Take a slot (queueing FIFO when all ``max_concurrency`` are busy); return its start."""
        stats = self.stats
        if self.options.max_concurrency and self._slots is None:
            self._slots = SlotPool(self.options.max_concurrency)
        if self._slots is None:
            start = arrival
        else:
            stats.enter_queue()
            try:
                start = await self._slots.acquire(arrival)
            finally:
                stats.queued -= 1
        stats.enter_slot()
        return start

    def _model_names(self) -> list[str]:
        names = ["standin"]
        for rule in self.engine.rules:
            if rule.model and rule.model not in names:
                names.append(rule.model)
        names.extend(m for m in self.stats.by_model if m not in names)
        return names

    @staticmethod
    def _model_obj(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": SYSTEM_FINGERPRINT}

    async def models(self, request: web.Request) -> web.Response:
        return _json(
            200, {"object": "list", "data": [self._model_obj(m) for m in self._model_names()]}
        )

    async def model(self, request: web.Request) -> web.Response:
        return _json(200, self._model_obj(request.match_info["model"]))

    async def get_stats(self, request: web.Request) -> web.Response:
        return _json(200, self.snapshot())

    async def get_requests(self, request: web.Request) -> web.Response:
        return _json(200, {"requests": list(self.recent)})

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.reset()
        return _json(200, self.snapshot())

    async def health(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok", "standin": True, "banner": BANNER})


class StandinServer:
    """A stand-in endpoint served from a background thread.

    >>> with StandinServer(StandinOptions(latency_ms=5)) as srv:
    ...     client = openai.OpenAI(base_url=srv.base_url, api_key="x")
    """

    def __init__(self, options: StandinOptions | None = None, *, announce: bool = True) -> None:
        self.options = options or StandinOptions()
        self.app = StandinApp(self.options)  # validates options and loads the script now
        self.announce = announce
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        host = self.options.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    def start(self) -> str:
        """Bind, serve in a background thread, and return the base URL (``.../v1``)."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # surfaced to the caller of start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="standin-endpoint", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]
        if self.announce:
            print(f"{BANNER}\n  serving {self.base_url}", file=sys.stderr, flush=True)
        return self.base_url

    async def _bind(self) -> None:
        # Handler cancellation: a client that times out or disconnects frees its slot,
        # as on real servers (vLLM aborts requests whose client went away).
        runner = web.AppRunner(
            self.app.build(),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.options.host, self.options.port, backlog=2048)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def stop(self) -> None:
        """Stop serving and join the thread; in-flight requests get a short grace period."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = self._loop = None

    def _on_loop(self, fn: Any) -> Any:
        loop = self._loop
        if loop is None or not loop.is_running():
            return fn()

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        """A consistent snapshot of the counters (same shape as ``GET /stats``)."""
        return self._on_loop(self.app.snapshot)

    def requests(self) -> list[Any]:
        """The last request bodies received, oldest first (same as ``GET /stats/requests``)."""
        return self._on_loop(lambda: list(self.app.recent))

    def reset_stats(self) -> None:
        """Same as ``POST /stats/reset``: zero counters and restart fault sequences."""
        self._on_loop(self.app.reset)

    def hold(self) -> None:
        """Keep every answer from now on until :meth:`release`: the requests in flight are
        then exactly those a client is still waiting for (a crash test's measure)."""

        def close() -> None:
            self.app.gate = asyncio.Event()

        self._on_loop(close)

    def release(self) -> None:
        def open_() -> None:
            if self.app.gate is not None:
                self.app.gate.set()
            self.app.gate = None

        self._on_loop(open_)

    def __enter__(self) -> StandinServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
