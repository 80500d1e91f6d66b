"""The Anthropic adapter: `ModelClient` on the official `anthropic` SDK.

This is the only module in posthoc that imports `anthropic`. It always streams, never forces
`tool_choice` (refused with thinking) and asks `model_profiles` for the thinking settings the
model accepts.

The SDK sends the request (auth, headers, connection pool, HTTP status errors), but the stream is
read from its raw bytes by `analyzers.model.sse`, not through the SDK's per-event models: the same
request bytes and headers as `client.messages.stream(...)`, the same accumulated message, a
fraction of the CPU. The SDK prepares a client's request headers and URL once
(`_PreparedPost`), not per request, where nothing can change them between requests. The body
is serialized here, once, with the SDK's own JSON settings and `messages.stream`'s key order,
so the SDK does not walk and copy it again per request.
Assistant content comes back as the API sent it (keys as received, nulls dropped, like the SDK's
`to_param()`), so thinking signatures and redacted thinking go back exactly as received.

Retries are ours, not the SDK's (build the client with `max_retries=0`): the SDK does not retry
an error that arrives inside a 200 stream, cannot see a stream that stalls while the server keeps
pinging, and knows nothing of the run's deadline. One call is attempted up to
`max_call_attempts` times after rate limits, overload, 5xx, connection errors, dropped or
idle streams, waiting the server's `retry-after-ms` / `retry-after` hint or an exponential
backoff with jitter, never past the deadline. What is left is translated at this edge:
transient failures become `TransientModelError`, requests the API will never accept become
`PermanentModelError`, and a passed deadline becomes `RunFailed("deadline_exceeded")`.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, get_args

import aiohttp
import anthropic
import httpx2

from analyzers.errors import ModelError, PermanentModelError, RunFailed, TransientModelError
from analyzers.model.batching import BatchingModel
from analyzers.model.profiles import thinking_params
from analyzers.model.protocol import JSON, ModelRequest, ModelTurn, StopReason
from analyzers.model.sse import (
    MalformedStream,
    MalformedToolInput,
    MessageAccumulator,
    SSEDecoder,
    StreamedMessage,
    error_event,
)
from schemas.usage import Usage

T = TypeVar("T")

_STOP_REASONS: frozenset[str] = frozenset(get_args(StopReason))
# Statuses worth another attempt: request timeout, lock conflict, rate limit, any 5xx (529 is
# overload). Everything else 4xx is a request the API will never accept as it is.
_RETRYABLE_STATUSES = frozenset({408, 409, 429})
# Error types that can arrive inside a 200 stream and still mean "the request is wrong".
_PERMANENT_ERROR_TYPES = frozenset(
    {"invalid_request_error", "authentication_error", "permission_error", "not_found_error"}
)
# What `messages.stream(...)` adds to a request's headers; sent too, so the request is the same.
_STREAM_HEADERS = {"x-stainless-helper-method": "stream", "x-stainless-stream-helper": "messages"}
# The order in which `messages.stream` (anthropic 2.11) lays out the body's keys.
_STREAM_BODY_ORDER = (
    "max_tokens",
    "messages",
    "model",
    "cache_control",
    "diagnostics",
    "inference_geo",
    "metadata",
    "output_config",
    "container",
    "service_tier",
    "speed",
    "stop_sequences",
    "system",
    "tools",
    "thinking",
    "tool_choice",
    "stream",
)
# The SDK's body encoding (`anthropic._utils._json.openapi_dumps`) for plain JSON values.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class _Failure:
    """One failed attempt, classified: retry it or not, and the server's wait hint."""

    error: BaseException
    message: str
    transient: bool
    retryable: bool
    retry_after: float | None = None
    cause: str = "other"
    """Why, in a word from a fixed list (what the worker counts retries by)."""


class _IdleStream(Exception):
    """No stream event for longer than the request's idle timeout."""


class _DeadlineHit(Exception):
    """The request's deadline arrived while the call was running."""


class _IncompleteStream(Exception):
    """The stream ended without a stop reason (cut off before `message_delta`)."""


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The server's wait hint in seconds: `retry-after-ms`, then `retry-after` (seconds or an
    HTTP date), as the SDK reads them."""
    if headers is None:
        return None
    try:
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except (KeyError, TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def _classify_status(error: anthropic.APIStatusError) -> _Failure:
    status = error.status_code
    kind = error.type or "error"
    detail = error.api_message or error.message
    if status == 200:  # an `event: error` inside the stream
        transient = kind not in _PERMANENT_ERROR_TYPES
        cause = "overloaded" if kind == "overloaded_error" else "stream_error"
        return _Failure(error, f"stream error {kind}: {detail}", transient, transient, cause=cause)
    transient = status in _RETRYABLE_STATUSES or status >= 500
    retryable = transient
    should_retry = error.response.headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
        transient = transient or retryable
    hint = _retry_after(error.response.headers)
    message = f"{status} {kind}: {detail}"
    return _Failure(error, message, transient, retryable, hint, cause=_status_cause(status))


def _status_cause(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if status == 408:
        return "timeout"
    if status == 409:
        return "conflict"
    return "server_error" if status >= 500 else "other"


def _transient_cause(error: Exception) -> str:
    if isinstance(error, anthropic.APITimeoutError):
        return "timeout"
    if isinstance(error, anthropic.APIConnectionError):
        return "connection"
    if isinstance(error, httpx2.TransportError | _IncompleteStream | MalformedStream):
        return "stream_dropped"  # a garbled stream counts with the cut ones: it was unusable
    if isinstance(error, _IdleStream):
        return "idle_stream"
    return "malformed_tool_input"


def _transient_message(error: Exception) -> str | None:
    """A description of `error` if it is a transient failure other than an HTTP status."""
    if isinstance(error, anthropic.APIConnectionError):
        return f"connection error: {error.message}"
    if isinstance(error, httpx2.TransportError):  # raised while reading a stream's body
        return f"stream dropped: {error!r}"
    if isinstance(error, _IdleStream | _IncompleteStream):
        return str(error)
    if isinstance(error, MalformedToolInput):
        return f"malformed tool input from the model: {error}"
    if isinstance(error, MalformedStream):
        return f"malformed stream: {error}"
    return None


def _classify(error: Exception) -> _Failure | None:
    """What to do about an attempt's exception; None for exceptions that are bugs."""
    if isinstance(error, anthropic.APIStatusError):
        return _classify_status(error)
    message = _transient_message(error)
    if message is not None:
        return _Failure(
            error, message, transient=True, retryable=True, cause=_transient_cause(error)
        )
    if isinstance(error, anthropic.APIResponseValidationError):
        message = f"unexpected response shape: {error.message}"
        return _Failure(error, message, transient=False, retryable=False)
    return None


def stream_body(request: ModelRequest) -> bytes:
    """The JSON body `messages.stream(max_tokens=..., **_request_params(request))` sends: its
    keys in that method's order, `stream: true` last, encoded as the SDK encodes a body."""
    params = {"max_tokens": request.max_tokens, **_request_params(request), "stream": True}
    unordered = params.keys() - _STREAM_BODY_ORDER
    if unordered:  # a new parameter: place it where messages.stream does before sending it
        raise TypeError(f"no place in the stream body for {sorted(unordered)}")
    body = {key: params[key] for key in _STREAM_BODY_ORDER if key in params}
    return _ENCODER.encode(body).encode()


def _request_params(request: ModelRequest) -> dict[str, Any]:
    """Keyword arguments for the SDK: no tool_choice, no sampling parameters, ever."""
    params: dict[str, Any] = {"model": request.model, "messages": request.messages}
    if request.system:
        params["system"] = request.system
    if request.tools:
        params["tools"] = request.tools
    params.update(
        thinking_params(
            request.model,
            request.thinking,
            request.effort,
            request.budget_tokens,
            request.max_tokens,
        )
    )
    return params


def _stream_options(client: anthropic.AsyncAnthropic) -> dict[str, Any]:
    """Request options: `messages.stream`'s headers and, where the client sends no idempotency
    header (the Anthropic API has none), a fixed key, which only spares the SDK a `uuid4()` per
    request it would never send."""
    options: dict[str, Any] = {"headers": _STREAM_HEADERS}
    if client._idempotency_header is None:  # checked: the key stays unsent
        options["idempotency_key"] = "unsent"
    return options


@dataclass(frozen=True)
class _PreparedPost:
    """One client's `POST /v1/messages` stream request, prepared by the SDK once.

    Per request, `client.post` builds a pydantic options model, copies it twice, merges the
    default, platform, auth and stream headers and the URL, and wraps the response: about as
    much CPU as sending the request and reading its stream. None of it depends on the body. So
    the SDK builds the headers, URL and timeout once (`of`), and each request is built from them
    by the client's own HTTP client (`build_request`, as the SDK calls it: cookies and the HTTP
    client's headers merged the same way), sent, and its failures translated as the SDK does:
    the same request bytes, the same errors. A client with anything that can change a request
    per call (middleware, custom auth such as OAuth tokens, a request hook, default query
    parameters) is not prepared and goes through `client.post`.
    """

    url: httpx2.URL
    headers: httpx2.Headers
    timeout: Any

    @classmethod
    async def of(cls, client: anthropic.AsyncAnthropic) -> _PreparedPost | None:
        """What the SDK would send for every stream request of `client`; None if it may vary."""
        # No tracing condition: the SDK traces calls of its methods (a span name in the
        # options), and `client.post` of a path has none, so it never made a span here.
        base = anthropic._base_client.AsyncAPIClient
        if (
            client._middleware
            or client.custom_auth is not None
            or client.default_query
            or type(client)._prepare_request is not base._prepare_request
        ):
            return None
        if client._platform is None:  # as `client.request` does, off the loop
            client._platform = await asyncio.to_thread(anthropic._base_client.get_platform)
        options = anthropic._models.FinalRequestOptions.construct(
            method="post", url="/v1/messages", content=b"", **_stream_options(client)
        )
        options = await client._prepare_options(options)
        url = client._prepare_url(options.url)
        if "_" in url.host or url.query:  # the SDK adjusts these per request
            return None
        timeout = options.timeout
        if isinstance(timeout, anthropic.NotGiven):
            timeout = client.timeout
        return cls(url, client._build_headers(options, retries_taken=0), timeout)

    async def send(self, client: anthropic.AsyncAnthropic, body: bytes) -> httpx2.Response:
        """Send `body`; the unread 2xx response, or the SDK's status error (connection
        failures as its `APITimeoutError` / `APIConnectionError`)."""
        http = client._client
        request = http.build_request(
            headers=self.headers,
            timeout=self.timeout,
            method="post",
            url=self.url,
            params=None,
            content=body,
            files=None,
        )
        try:
            response = await http.send(request, stream=True)
        except httpx2.TimeoutException as error:
            raise anthropic.APITimeoutError(request=request) from error
        except anthropic.AnthropicError:
            raise
        except Exception as error:
            raise anthropic.APIConnectionError(request=request) from error
        if not response.is_success:
            await response.aread()  # the error's message is in the body
            raise client._make_status_error_from_response(response) from None
        return response


class AnthropicModel:
    """`ModelClient` over an `anthropic.AsyncAnthropic` built with `max_retries=0`."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic | Sequence[anthropic.AsyncAnthropic],
        *,
        max_call_attempts: int = 3,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        initial_backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_wait: float = 60.0,
        rng: random.Random | None = None,
        on_retry: Callable[[str], object] | None = None,
    ) -> None:
        """`max_retry_wait`: a server hint longer than this is not waited out inside the call;
        the call fails at once with `TransientModelError(retry_after=hint)` so the run can be
        rescheduled instead of holding a worker slot. `on_retry` is told the cause of each
        retry made inside a call (`rate_limited`, `overloaded`, `server_error`, `timeout`,
        `connection`, `stream_dropped`, ...), for the worker's metrics."""
        if max_call_attempts < 1:
            raise ValueError(f"max_call_attempts must be at least 1, got {max_call_attempts!r}")
        # Several clients spread the connections over several pools: the HTTP pool scans its
        # connections for every request, which costs more CPU than the request at hundreds of
        # concurrent streams.
        self._clients = [client] if isinstance(client, anthropic.AsyncAnthropic) else list(client)
        if not self._clients:
            raise ValueError("AnthropicModel needs at least one client")
        self._next_client = itertools.cycle(self._clients)
        self._prepared: dict[int, _PreparedPost | None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        """Per client (by id): its prepared stream request, or None where it cannot be."""
        self._max_attempts = max_call_attempts
        self._sleep = sleep
        self._clock = clock
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._max_retry_wait = max_retry_wait
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self._on_retry = on_retry

    async def aclose(self) -> None:
        """Close the SDK client and its connection pool."""
        self._enter_loop()
        for client in self._clients:
            await client.close()

    def _enter_loop(self) -> None:
        """Forget the aiohttp sessions of another event loop when used from a new one.

        An aiohttp session (unlike httpx's pool) belongs to the loop it was made on: used from
        another, every request fails as a connection error. The worker keeps one loop, but a
        model may outlive a loop (`asyncio.run` twice in a script); then the old loop's
        sessions are dropped and each transport opens a new one on this loop. Their
        connections belonged to the old loop and are released when collected.
        """
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            for client in self._clients:
                _forget_aiohttp_sessions(client)
        self._loop = loop

    async def complete(self, request: ModelRequest) -> ModelTurn:
        self._enter_loop()
        started = self._clock()
        message = await self._with_retries(request, "messages.stream", self._stream_once)
        stop_reason = message.stop_reason
        if stop_reason is None or stop_reason not in _STOP_REASONS:
            raise PermanentModelError(
                f"the model stopped for an unsupported reason: {stop_reason!r}"
            )
        return ModelTurn(
            content=message.content,
            stop_reason=cast(StopReason, stop_reason),
            usage=message.usage,
            model=message.model,
            message_id=message.id,
            stop_details=message.stop_details,
            duration_s=self._clock() - started,
        )

    async def count_tokens(self, request: ModelRequest) -> int:
        self._enter_loop()
        counted = await self._with_retries(request, "messages.count_tokens", self._count_once)
        return counted.input_tokens

    # -- one attempt --------------------------------------------------------------------------

    def _time_left(self, request: ModelRequest) -> float | None:
        return None if request.deadline is None else request.deadline - self._clock()

    async def _stream_once(self, request: ModelRequest) -> StreamedMessage:
        """Stream one call, giving up after `idle_timeout` (to 1.5 times that) without an
        event, or at the deadline, whichever comes first."""
        loop = asyncio.get_running_loop()
        bounded_by_deadline = False

        def arm(timer: asyncio.Timeout) -> None:
            nonlocal bounded_by_deadline
            now = loop.time()
            left = self._time_left(request)
            bounded_by_deadline = left is not None and left <= request.idle_timeout
            if bounded_by_deadline:
                timer.reschedule(now + max(left or 0.0, 0.0))
                return
            # Moving the timer on every event costs more CPU than the event itself; it moves
            # only when less than `idle_timeout` is left, to 1.5 times that from now.
            when = timer.when()
            if when is None or when - now < request.idle_timeout:
                timer.reschedule(now + 1.5 * request.idle_timeout)

        body = stream_body(request)
        client = next(self._next_client)
        try:
            async with asyncio.timeout(None) as timer:
                arm(timer)
                response = await self._post(client, body)
                message = await _read_stream(client, response, lambda: arm(timer))
        except TimeoutError as error:
            if not timer.expired():
                raise
            if bounded_by_deadline:
                raise _DeadlineHit from error
            raise _IdleStream(
                f"stream idle for more than {request.idle_timeout:g}s (model {request.model!r})"
            ) from error
        if message.stop_reason is None:
            raise _IncompleteStream(f"stream of {message.id!r} ended without a stop reason")
        return message

    async def _post(self, client: anthropic.AsyncAnthropic, body: bytes) -> httpx2.Response:
        """Send the stream request; the unread 2xx response, or the SDK's status error."""
        key = id(client)  # the clients live as long as this model
        if key not in self._prepared:
            self._prepared[key] = await _PreparedPost.of(client)
        prepared = self._prepared[key]
        if prepared is not None:
            return await prepared.send(client, body)
        # `cast_to=httpx2.Response` makes the SDK hand back the unread 2xx response
        # (`_process_response`); an error status is raised as the SDK's status error.
        return cast(
            httpx2.Response,
            await client.post(
                "/v1/messages",
                cast_to=httpx2.Response,
                content=body,
                options=cast(Any, _stream_options(client)),
                stream=True,
                stream_cls=anthropic.AsyncStream[Any],
            ),
        )

    async def _count_once(self, request: ModelRequest) -> anthropic.types.MessageTokensCount:
        left = self._time_left(request)
        wait = request.idle_timeout if left is None else min(request.idle_timeout, max(left, 0.0))
        params = _request_params(request)
        try:
            async with asyncio.timeout(wait):
                return await next(self._next_client).messages.count_tokens(**params)
        except TimeoutError as error:
            if left is not None and left <= request.idle_timeout:
                raise _DeadlineHit from error
            raise _IdleStream(f"count_tokens took more than {wait:g}s") from error

    # -- retries ------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, as the SDK computes it: 0.5s, 1s, 2s, ... <= 8s,
        times a factor in (0.75, 1]."""
        delay = min(self._initial_backoff * 2.0 ** (attempt - 1), self._max_backoff)
        return delay * (1 - 0.25 * self._rng.random())

    def _deadline_passed(self, request: ModelRequest, what: str) -> RunFailed:
        return RunFailed(
            "deadline_exceeded",
            f"{what} for model {request.model!r} gave up: the run's deadline passed",
        )

    async def _with_retries(
        self,
        request: ModelRequest,
        what: str,
        attempt_once: Callable[[ModelRequest], Awaitable[T]],
    ) -> T:
        attempt = 0
        while True:
            attempt += 1
            left = self._time_left(request)
            if left is not None and left <= 0:
                raise self._deadline_passed(request, what)
            try:
                return await attempt_once(request)
            except _DeadlineHit:
                raise self._deadline_passed(request, what) from None
            except Exception as error:
                failure = _classify(error)
                if failure is None:
                    raise
            if not failure.transient:
                raise PermanentModelError(f"{what} refused: {failure.message}") from failure.error
            if not failure.retryable or attempt >= self._max_attempts:
                raise TransientModelError(
                    f"{what} failed after {attempt} attempt(s): {failure.message}",
                    retry_after=failure.retry_after,
                ) from failure.error
            delay = failure.retry_after if failure.retry_after else self._backoff(attempt)
            if delay > self._max_retry_wait:
                raise TransientModelError(
                    f"{what} failed ({failure.message}); the server asks to wait {delay:.3g}s, "
                    f"longer than this call waits ({self._max_retry_wait:g}s)",
                    retry_after=failure.retry_after,
                ) from failure.error
            left = self._time_left(request)
            if left is not None and delay >= left:
                raise TransientModelError(
                    f"{what} failed ({failure.message}) and the run's deadline is {left:.3g}s "
                    f"away, too soon to wait {delay:.3g}s and retry",
                    retry_after=failure.retry_after,
                ) from failure.error
            if self._on_retry is not None:
                self._on_retry(failure.cause)
            await self._sleep(delay)


def _echoable_content(message: anthropic.types.Message) -> list[JSON]:
    """A batch result's assistant content as request params, via the SDK's `to_param()`:
    thinking blocks keep their signature and redacted thinking its data, byte for byte. (Batch
    results arrive whole, as SDK models; streamed turns are read from the raw SSE instead.)"""
    content = message.to_param()["content"]
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[JSON] = []
    for block in content:
        if isinstance(block, anthropic.BaseModel):
            blocks.append(block.to_dict(mode="json", exclude_none=True))
        else:
            blocks.append(dict(cast(Mapping[str, Any], block)))
    return blocks


def _usage(usage: anthropic.types.Usage) -> Usage:
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        # Priced higher than 5-minute writes: keep the split the API reports.
        cache_creation_1h_input_tokens=(
            usage.cache_creation.ephemeral_1h_input_tokens if usage.cache_creation else 0
        ),
    )


class AnthropicBatches:
    """`BatchTransport` on the SDK's `client.messages.batches` (see `analyzers.model.batching`).

    Every request of a batch is what `AnthropicModel` would stream, without streaming. A
    request the API errored is handed back as the error it would have been in a direct call.
    """

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self._client = client

    async def aclose(self) -> None:
        await self._client.close()

    async def submit(self, requests: Sequence[tuple[str, ModelRequest]]) -> str:
        batch = await self._call(
            "messages.batches.create",
            self._client.messages.batches.create(
                requests=[
                    cast(
                        Any,
                        {
                            "custom_id": custom_id,
                            "params": {
                                "max_tokens": request.max_tokens,
                                **_request_params(request),
                            },
                        },
                    )
                    for custom_id, request in requests
                ]
            ),
        )
        return str(batch.id)

    async def ended(self, batch_id: str) -> bool:
        batch = await self._call(
            "messages.batches.retrieve", self._client.messages.batches.retrieve(batch_id)
        )
        return batch.processing_status == "ended"

    async def results(self, batch_id: str) -> dict[str, ModelTurn | ModelError]:
        decoder = await self._call(
            "messages.batches.results", self._client.messages.batches.results(batch_id)
        )
        answers: dict[str, ModelTurn | ModelError] = {}
        async for line in decoder:
            result = line.result
            if result.type == "succeeded":
                message = result.message
                if message.stop_reason is None or message.stop_reason not in _STOP_REASONS:
                    answers[line.custom_id] = PermanentModelError(
                        f"the model stopped for an unsupported reason: {message.stop_reason!r}"
                    )
                    continue
                details = message.stop_details
                answers[line.custom_id] = ModelTurn(
                    content=_echoable_content(message),
                    stop_reason=message.stop_reason,
                    usage=_usage(message.usage),
                    model=str(message.model),
                    message_id=message.id,
                    stop_details=details.to_dict(mode="json") if details is not None else None,
                )
            elif result.type == "errored":
                kind = result.error.error.type
                text = f"batch request errored: {kind}: {result.error.error.message}"
                answers[line.custom_id] = (
                    PermanentModelError(text)
                    if kind in _PERMANENT_ERROR_TYPES
                    else TransientModelError(text)
                )
            else:  # canceled or expired: worth another round later
                answers[line.custom_id] = TransientModelError(f"batch request {result.type}")
        return answers

    @staticmethod
    async def _call(what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except Exception as error:
            failure = _classify(error)
            if failure is None:
                raise
            if not failure.transient:
                raise PermanentModelError(f"{what} refused: {failure.message}") from error
            raise TransientModelError(
                f"{what} failed: {failure.message}", retry_after=failure.retry_after
            ) from error


async def _read_stream(
    client: anthropic.AsyncAnthropic, response: httpx2.Response, on_event: Callable[[], None]
) -> StreamedMessage:
    """Read a 200 stream to its end into a message. `on_event` runs for each chunk that brings
    an event other than a ping (pings must not keep a stalled stream alive). An `error` event
    raises the SDK's status error for it, as the SDK's own stream would."""
    decoder = SSEDecoder()
    accumulator = MessageAccumulator()
    add = accumulator.add
    loads = json.loads
    try:
        async for chunk in response.aiter_bytes():
            events = decoder.feed(chunk)
            if not events:
                continue
            alive = False
            for name, data in events:
                if name is None or name == "ping":
                    continue
                if name == "error":
                    error = error_event(data)
                    raise client._make_status_error(  # the SDK's own translation
                        str(error), body=error.body, response=response
                    )
                alive = True
                if not data:
                    continue
                try:
                    parsed = loads(data)
                except ValueError as error:
                    raise MalformedStream(f"{name} event data is not JSON: {error}") from None
                add(parsed)
            if alive:
                on_event()
    finally:
        await response.aclose()
    return accumulator.message()


def _forget_aiohttp_sessions(client: anthropic.AsyncAnthropic) -> None:
    """Make each of the client's aiohttp transports open a new session on its next request
    (the vendored `AiohttpTransport` makes one lazily whenever it holds none)."""
    http = client._client
    for transport in (http._transport, *http._mounts.values()):
        if isinstance(getattr(transport, "client", None), aiohttp.ClientSession):
            transport.client = None  # type: ignore[union-attr]


HttpClientKind = Literal["aiohttp", "httpx"]
HTTP_CLIENT_KINDS: tuple[HttpClientKind, ...] = get_args(HttpClientKind)


def sdk_http_client(
    kind: HttpClientKind,
    *,
    timeout: anthropic.Timeout,
    verify: ssl.SSLContext | bool = True,
    max_idle_connections: int = 128,
) -> httpx2.AsyncClient:
    """The HTTP client an SDK client sends its requests with: the SDK's own defaults (its
    `DefaultAioHttpClient` or `DefaultAsyncHttpxClient`), with this worker's limits.

    `aiohttp` (the default everywhere) is the SDK's supported aiohttp transport (the
    `anthropic[aiohttp]` extra): an `httpx2.AsyncClient` whose requests go through aiohttp's
    connection pool and C HTTP parser. Hundreds of streams in flight cost it about half the CPU
    per call of httpx's own transport (`benchmarks/model_cpu.py`), whose pool scans every
    connection it holds on each request and release; aiohttp reuses an idle connection from a
    per-host stack and closes idle ones after the keep-alive expiry (5 s), so it needs no bound
    on idle connections. `httpx` is kept as a fallback (`POSTHOC_MODEL_HTTP_CLIENT=httpx`); its
    pool keeps at most `max_idle_connections` idle.
    """
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=max_idle_connections)
    if kind == "aiohttp":
        return anthropic.DefaultAioHttpClient(limits=limits, timeout=timeout, verify=verify)
    return anthropic.DefaultAsyncHttpxClient(limits=limits, timeout=timeout, verify=verify)


def build_anthropic_model(
    api_key: str | None = None,
    base_url: str | None = None,
    *,
    timeout: float = 600.0,
    connect_timeout: float = 5.0,
    max_call_attempts: int = 3,
    http_client: HttpClientKind = "aiohttp",
    pools: int | None = None,
    max_idle_connections: int = 128,
    on_retry: Callable[[str], object] | None = None,
) -> AnthropicModel:
    """An `AnthropicModel` with its own SDK clients (SDK retries off: the adapter owns them).

    `api_key` / `base_url` of None fall back to the SDK's own `ANTHROPIC_API_KEY` /
    `ANTHROPIC_BASE_URL`. `timeout` is the HTTP read timeout per socket read; the adapter's idle
    timeout and deadline bound a call as a whole. `http_client` picks the transport
    (`sdk_http_client`). `pools` clients share the calls round robin, each with its own
    connection pool: one by default on aiohttp, 8 on httpx.

    On httpx, `max_idle_connections` bounds the idle (keep-alive) connections kept over all
    pools. Every request added to or released from an httpx pool makes it scan its connections
    and probe each idle one's socket (a poll and a getpeername); with the SDK's default of 100
    idle per pool, a worker past a burst of hundreds of streams probed ~60 idle sockets per pool
    twice per request. With the bound a pool keeps at most `max_idle_connections / pools` (at
    least 1) idle and closes the surplus; a burst larger than that opens new connections instead
    (a TLS handshake each against the real API: hence a default of 16 per pool, not fewer).
    """
    if pools is None:
        pools = 1 if http_client == "aiohttp" else 8
    pools = max(pools, 1)
    idle_per_pool = max(1, max_idle_connections // pools)
    http_timeout = anthropic.Timeout(timeout, connect=connect_timeout)
    # One TLS context for every pool: loading the CA bundle costs ~25 ms of CPU per context.
    tls = httpx2.create_ssl_context()
    clients = [
        anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=http_timeout,
            http_client=sdk_http_client(
                http_client, timeout=http_timeout, verify=tls, max_idle_connections=idle_per_pool
            ),
        )
        for _ in range(pools)
    ]
    return AnthropicModel(clients, max_call_attempts=max_call_attempts, on_retry=on_retry)


def build_batch_model(
    api_key: str | None = None,
    base_url: str | None = None,
    *,
    gather_seconds: float = 0.2,
    poll_seconds: float = 5.0,
    timeout: float = 600.0,
) -> BatchingModel:
    """A `BatchingModel` on its own SDK client: every turn through the Message Batches API
    (token counts through the ordinary endpoint)."""
    client = anthropic.AsyncAnthropic(
        api_key=api_key, base_url=base_url, max_retries=0, timeout=anthropic.Timeout(timeout)
    )
    return BatchingModel(
        AnthropicBatches(client),
        count_with=build_anthropic_model(api_key=api_key, base_url=base_url, pools=1),
        gather_seconds=gather_seconds,
        poll_seconds=poll_seconds,
    )
