"""The Anthropic adapter: `ModelClient` on the official `anthropic` SDK.

This is the only module in posthoc that imports `anthropic`. It always streams, never forces
`tool_choice` (refused with thinking), asks `model_profiles` for the thinking settings the model
accepts, and returns assistant content converted with the SDK's own `Message.to_param()`, so
thinking signatures and redacted thinking go back to the API exactly as received.

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
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast, get_args

import anthropic
import httpx2

from analyzers.errors import PermanentModelError, RunFailed, TransientModelError
from analyzers.model.profiles import thinking_params
from analyzers.model.protocol import JSON, ModelRequest, ModelTurn, StopReason
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
_TOOL_JSON_ERROR = "Unable to parse tool parameter JSON"


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
    if isinstance(error, httpx2.TransportError | _IncompleteStream):
        return "stream_dropped"
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
    if isinstance(error, ValueError) and str(error).startswith(_TOOL_JSON_ERROR):
        return f"malformed tool input from the model: {error}"
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


def _echoable_content(message: anthropic.types.Message) -> list[JSON]:
    """The assistant content as request params, via the SDK's `to_param()`: thinking blocks keep
    their signature and redacted thinking its data, byte for byte."""
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
        for client in self._clients:
            await client.close()

    async def complete(self, request: ModelRequest) -> ModelTurn:
        started = self._clock()
        message = await self._with_retries(request, "messages.stream", self._stream_once)
        stop_reason = message.stop_reason
        if stop_reason is None or stop_reason not in _STOP_REASONS:
            raise PermanentModelError(
                f"the model stopped for an unsupported reason: {stop_reason!r}"
            )
        details = message.stop_details
        return ModelTurn(
            content=_echoable_content(message),
            stop_reason=stop_reason,
            usage=_usage(message.usage),
            model=str(message.model),
            message_id=message.id,
            stop_details=details.to_dict(mode="json") if details is not None else None,
            duration_s=self._clock() - started,
        )

    async def count_tokens(self, request: ModelRequest) -> int:
        counted = await self._with_retries(request, "messages.count_tokens", self._count_once)
        return counted.input_tokens

    # -- one attempt --------------------------------------------------------------------------

    def _time_left(self, request: ModelRequest) -> float | None:
        return None if request.deadline is None else request.deadline - self._clock()

    async def _stream_once(self, request: ModelRequest) -> anthropic.types.Message:
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

        params = _request_params(request)
        try:
            async with asyncio.timeout(None) as timer:
                arm(timer)
                async with next(self._next_client).messages.stream(
                    max_tokens=request.max_tokens, **params
                ) as stream:
                    async for _event in stream:
                        arm(timer)
                    message: anthropic.types.Message = await stream.get_final_message()
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


def build_anthropic_model(
    api_key: str | None = None,
    base_url: str | None = None,
    *,
    timeout: float = 600.0,
    connect_timeout: float = 5.0,
    max_call_attempts: int = 3,
    pools: int = 8,
    on_retry: Callable[[str], object] | None = None,
) -> AnthropicModel:
    """An `AnthropicModel` with its own SDK clients (SDK retries off: the adapter owns them).

    `api_key` / `base_url` of None fall back to the SDK's own `ANTHROPIC_API_KEY` /
    `ANTHROPIC_BASE_URL`. `timeout` is the HTTP read timeout per socket read; the adapter's idle
    timeout and deadline bound a call as a whole. `pools` clients share the calls round robin,
    each with its own connection pool.
    """
    clients = [
        anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=anthropic.Timeout(timeout, connect=connect_timeout),
        )
        for _ in range(max(pools, 1))
    ]
    return AnthropicModel(clients, max_call_attempts=max_call_attempts, on_retry=on_retry)
