"""A faithful fake of the Anthropic Messages API, served over real HTTP for the real SDK.

    api = FakeMessagesAPI()
    api.script([FakeReply([Thinking("..."), ToolCall("record_x", {...})]), HttpError.overloaded()])
    with serve_fake_messages_api(api) as base_url:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=base_url, max_retries=0)
        ...
    api.requests[0].body["messages"]

`POST /v1/messages` streams SSE when `"stream": true` and answers JSON otherwise;
`POST /v1/messages/count_tokens` counts with the same function the usage report uses. Every
request is validated the way the real API does (`validation`), answered from the script queue or
the responder function (`replies`), rendered with real wire shapes (`sse`), and accounted with
simulated prompt caching (`cache`). The server is asyncio end to end (uvicorn + starlette), so
hundreds of concurrent streams cost no threads.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from analyzers.fakes import batches, validation
from analyzers.fakes.cache import (
    CachePlan,
    PromptCache,
    canonical_json,
    count_input_tokens,
    serialisation_memo,
)
from analyzers.fakes.replies import (
    JSON,
    Disconnect,
    FakeReply,
    HttpError,
    MidStreamError,
    Responder,
    Scripted,
    Stall,
)
from analyzers.fakes.sse import (
    PING,
    BuiltMessage,
    Signer,
    build_message,
    encode_event,
    stream_events,
)
from analyzers.fakes.validation import ApiError
from analyzers.model.profiles import ModelProfile, is_known_model, profile_for

_STATUS_OF_ERROR_TYPE = {"overloaded_error": 529, "api_error": 500, "rate_limit_error": 429}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (whether it was accepted or not)."""

    path: str
    headers: Mapping[str, str]
    body: JSON
    request_id: str

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


@dataclass
class FakeMessagesAPI:
    """The fake's state: script, responder, prompt cache, and a record of every request.

    `api_key`: when set, the only key accepted (otherwise any non-empty key). `models`: extra
    model ids to accept besides the known ones. `min_cacheable_tokens`: per-model override of the
    minimum cacheable prefix (default: the model profile's, 1024 where unconfirmed).
    `clock`: the cache's clock (inject one to test expiry).
    """

    responder: Responder | None = None
    api_key: str | None = None
    models: Iterable[str] = ()
    min_cacheable_tokens: Mapping[str, int] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    signing_key: bytes = b"posthoc-fake-messages-api"
    batch_seconds: float = 0.05
    """How long a Message Batch stays `in_progress` (see `analyzers.fakes.batches`)."""
    requests: list[RecordedRequest] = field(default_factory=list, init=False, repr=False)
    active_streams: int = field(default=0, init=False)
    max_active_streams: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._signer = Signer(self.signing_key)
        self._extra_models = set(self.models)
        self.cache = PromptCache(clock=self.clock, min_tokens=self._min_tokens)
        self._thinking_tool_ids: set[str] = set()
        self._counter = 0
        self.batches: dict[str, batches.FakeBatch] = {}
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route(
                    "/v1/messages/batches",
                    functools.partial(batches.create_batch, self),
                    methods=["POST"],
                ),
                Route(
                    "/v1/messages/batches/{batch_id}",
                    functools.partial(batches.retrieve_batch, self),
                    methods=["GET"],
                ),
                Route(
                    "/v1/messages/batches/{batch_id}/results",
                    functools.partial(batches.batch_results, self),
                    methods=["GET"],
                ),
            ]
        )

    # -- scripting --------------------------------------------------------------------------

    def script(self, replies: Iterable[Scripted]) -> None:
        """Queue replies; each accepted `/v1/messages` request takes the next one."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        """Forget the script, the recorded requests and the prompt cache (configuration stays),
        so one running server can serve many tests."""
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self._thinking_tool_ids.clear()
            self._counter = 0
            self.max_active_streams = self.active_streams
        self.cache.clear()

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._script)

    def _next(self, body: JSON, number: int) -> Scripted:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.responder is not None:
            return self.responder(body)
        raise validation.invalid(
            f"fake messages api: nothing scripted for request #{number} and no responder set; "
            "call api.script([...]) or pass responder="
        )

    # -- helpers ----------------------------------------------------------------------------

    def _min_tokens(self, model: str) -> int:
        return self.min_cacheable_tokens.get(model, profile_for(model).min_cacheable_tokens)

    def _profile(self, model: str) -> ModelProfile:
        if not (is_known_model(model) or model in self._extra_models):
            raise ApiError(404, "not_found_error", f"model: {model}")
        return profile_for(model)

    def _record(self, request: Request, raw: bytes) -> tuple[RecordedRequest, Any]:
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self._counter += 1
            number = self._counter
        digest = hashlib.sha256(raw).hexdigest()[:16]
        request_id = f"req_fake{number:06d}{digest}"
        recorded = RecordedRequest(
            request.url.path,
            dict(request.headers),
            body if isinstance(body, dict) else {},
            request_id,
        )
        self.requests.append(recorded)
        return recorded, body

    @staticmethod
    def _error(error: ApiError | HttpError, request_id: str) -> Response:
        if isinstance(error, HttpError):
            status, kind, message = error.status, error.error_type, error.message
            headers = dict(error.headers)
            if error.retry_after is not None:
                headers["retry-after"] = f"{error.retry_after:g}"
            if error.retry_after_ms is not None:
                headers["retry-after-ms"] = str(error.retry_after_ms)
        else:
            status, kind, message = error.status, error.error_type, error.message
            headers = dict(error.headers)
        headers["request-id"] = request_id
        body = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": request_id,
        }
        return JSONResponse(body, status_code=status, headers=headers)

    def _validate(self, recorded: RecordedRequest, body: Any) -> tuple[JSON, ModelProfile]:
        validation.check_auth(recorded.headers, self.api_key)
        checked = validation.check_shape(body, counting=recorded.path.endswith("/count_tokens"))
        profile = self._profile(checked["model"])
        validation.check_sampling(checked, recorded.headers, profile)
        return checked, profile

    def _validate_body(self, recorded: RecordedRequest, body: Any) -> tuple[JSON, ModelProfile]:
        """A Messages request body checked as `POST /v1/messages` checks it (batch requests)."""
        checked = validation.check_shape(body, counting=False)
        profile = self._profile(checked["model"])
        validation.check_sampling(checked, recorded.headers, profile)
        self._check_message_rules(checked, profile)
        return checked, profile

    def _check_message_rules(self, checked: JSON, profile: ModelProfile) -> None:
        """What a Messages request must also satisfy beyond its shape (both endpoints)."""
        validation.check_thinking(checked, profile)
        validation.check_cache_breakpoints(checked)
        validation.check_echoed_thinking(checked, self._signer)
        validation.check_tool_pairing(checked)
        validation.check_tool_loop_thinking(
            checked, profile, lambda tool_id: tool_id in self._thinking_tool_ids
        )

    # -- endpoints --------------------------------------------------------------------------

    async def _count_tokens(self, request: Request) -> Response:
        recorded, body = self._record(request, await request.body())
        try:
            checked, _ = self._validate(recorded, body)
        except ApiError as error:
            return self._error(error, recorded.request_id)
        return JSONResponse(
            {"input_tokens": count_input_tokens(checked)},
            headers={"request-id": recorded.request_id},
        )

    async def _messages(self, request: Request) -> Response:
        recorded, body = self._record(request, await request.body())
        with serialisation_memo(body):  # the checks, responder and plan share serialisations
            try:
                checked, profile = self._validate(recorded, body)
                self._check_message_rules(checked, profile)
                scripted = self._next(checked, len(self.requests))
            except ApiError as error:
                return self._error(error, recorded.request_id)
            except Exception as error:  # a responder bug: fail like the API's 500, loudly
                message = f"fake messages api responder failed: {error!r}"
                return self._error(ApiError(500, "api_error", message), recorded.request_id)
            if not isinstance(scripted, HttpError):
                plan = self.cache.plan(checked)
                built = self._build(scripted, checked, profile, plan, recorded.request_id)
        if isinstance(scripted, HttpError):
            await asyncio.sleep(scripted.latency)
            return self._error(scripted, recorded.request_id)
        if checked.get("stream"):
            return StreamingResponse(
                self._stream(scripted, built, plan),
                media_type="text/event-stream",
                headers={"request-id": recorded.request_id, "cache-control": "no-cache"},
            )
        return await self._whole(scripted, built, plan, recorded.request_id)

    def _build(
        self, reply: FakeReply, body: JSON, profile: ModelProfile, plan: CachePlan, request_id: str
    ) -> BuiltMessage:
        thinking = body.get("thinking")
        display = thinking.get("display") if isinstance(thinking, dict) else None
        seed = hashlib.sha256(canonical_json(body)).hexdigest()
        built = build_message(
            reply,
            request=body,
            message_id=f"msg_{seed[:24]}",
            tool_id_seed=seed,
            signer=self._signer,
            display_omitted=(display or profile.thinking_display_default) == "omitted",
            usage=plan.usage(),
        )
        content: list[JSON] = built.message["content"]
        if content and content[0]["type"] in ("thinking", "redacted_thinking"):
            self._thinking_tool_ids.update(
                str(block["id"]) for block in content if block["type"] == "tool_use"
            )
        return built

    async def _whole(
        self, reply: FakeReply, built: BuiltMessage, plan: CachePlan, request_id: str
    ) -> Response:
        await asyncio.sleep(reply.latency)
        fault = reply.fault
        if isinstance(fault, MidStreamError):
            status = _STATUS_OF_ERROR_TYPE.get(fault.error_type, 500)
            return self._error(ApiError(status, fault.error_type, fault.message), request_id)
        if isinstance(fault, Disconnect):
            return self._error(ApiError(500, "api_error", "connection reset"), request_id)
        if isinstance(fault, Stall):
            await asyncio.sleep(fault.seconds)
        self.cache.commit(plan)
        return JSONResponse(built.message, headers={"request-id": request_id})

    async def _stream(
        self, reply: FakeReply, built: BuiltMessage, plan: CachePlan
    ) -> AsyncIterator[bytes]:
        self.active_streams += 1
        self.max_active_streams = max(self.max_active_streams, self.active_streams)
        try:
            await asyncio.sleep(reply.latency)
            fault = reply.fault
            if fault is None and not reply.event_latency:
                # Nothing to time between events: the whole stream in one write, byte for byte
                # what the per-event writes below would send.
                self.cache.commit(plan)  # readable once the writing response starts
                yield b"".join(encode_event(name, data) for name, data in stream_events(built))
                return
            sent = 0
            for name, data in stream_events(built):
                if name != "ping":
                    if isinstance(fault, MidStreamError) and sent == fault.after_events:
                        error = {"type": fault.error_type, "message": fault.message}
                        yield encode_event("error", {"type": "error", "error": error})
                        return
                    if isinstance(fault, Disconnect) and sent == fault.after_events:
                        return
                    if isinstance(fault, Stall) and sent == fault.after_events:
                        async for ping in _pings(fault):
                            yield ping
                    sent += 1
                if reply.event_latency:
                    await asyncio.sleep(reply.event_latency)
                if name == "message_start":
                    self.cache.commit(plan)  # readable once the writing response starts
                yield encode_event(name, data)
        finally:
            self.active_streams -= 1


async def _pings(stall: Stall) -> AsyncIterator[bytes]:
    """Nothing but pings for the stall's duration."""
    deadline = asyncio.get_running_loop().time() + stall.seconds
    while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
        await asyncio.sleep(min(stall.ping_interval, remaining))
        yield encode_event(*PING)


@contextmanager
def serve_fake_messages_api(
    api: FakeMessagesAPI,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 10.0,
    http: Literal["h11", "httptools"] = "h11",
    loop: Literal["asyncio", "uvloop"] = "asyncio",
) -> Iterator[str]:
    """Serve `api` with uvicorn on an ephemeral port of `host` in a background thread; yield
    the base URL to give the SDK. Open streams get a second to finish at shutdown, then are
    cancelled.

    `http` and `loop` choose uvicorn's HTTP parser and event loop: the defaults are pure Python
    and forgiving; `http="httptools", loop="uvloop"` cost the fake much less CPU per request
    (the benchmarks serve their fake that way, in a process of its own)."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every reply waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        api.app,
        host=host,
        port=port,
        loop=loop,
        http=http,
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fake-messages-api:{port}", daemon=True
    )
    thread.start()
    started_by = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > started_by:
            server.should_exit = True
            thread.join(timeout=startup_timeout)
            sock.close()
            raise RuntimeError(f"the fake Messages API did not start on {host}:{port}")
        time.sleep(0.005)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
