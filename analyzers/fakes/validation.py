"""The request checks the real Messages API makes, with its status codes and error wording.

Each failed check raises `ApiError`, which the server turns into the real error body
`{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}`. Messages are
copied from the real API where the reference quotes them and written in its style elsewhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from analyzers.fakes.cache import MAX_BREAKPOINTS, count_breakpoints, prompt_blocks
from analyzers.fakes.replies import JSON
from analyzers.fakes.sse import Signer
from analyzers.model.profiles import MIN_BUDGET_TOKENS, ModelProfile

CURRENT_API_VERSION = "2026-10-21"
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
THINKING_TYPES = ("adaptive", "disabled", "enabled", "between_tools")
EFFORTS = ("low", "medium", "high", "xhigh", "max")
_THINKING_KINDS = ("thinking", "redacted_thinking")

_TOOL_LOOP_THINKING = (
    "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
    "`{found}`. When `thinking` is enabled, a final `assistant` message must start with a "
    "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We "
    "recommend you include thinking blocks from previous turns. To avoid this requirement, "
    "disable `thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


@dataclass
class ApiError(Exception):
    """A request the fake refuses, as the real API would."""

    status: int
    error_type: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def check_auth(headers: Mapping[str, str], api_key: str | None) -> None:
    """401 unless the request carries `Authorization: Bearer <key>` (SDK 2.x) or `x-api-key`
    (SDK 0.x); when `api_key` is set, the key must match it."""
    authorization = headers.get("authorization", "")
    key = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
    key = key or headers.get("x-api-key", "").strip()
    if not key or (api_key is not None and key != api_key):
        raise ApiError(401, "authentication_error", "invalid authentication credentials")


def _content_blocks(message: JSON) -> list[JSON]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [block for block in content if isinstance(block, dict)]
    return []


def check_shape(body: object, *, counting: bool = False) -> JSON:
    """The fields every request needs (`max_tokens` too, unless `counting` tokens); returns
    the body as a dict."""
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object")
    for field in ("model", "messages") if counting else ("model", "max_tokens", "messages"):
        if field not in body:
            raise invalid(f"{field}: Field required")
    if not isinstance(body["model"], str):
        raise invalid("model: Input should be a valid string")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise invalid(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if not isinstance(content, str | list):
            raise invalid(f"messages.{index}.content: Input should be a valid string or list")
        if isinstance(content, list):
            for block_index, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    raise invalid(f"messages.{index}.content.{block_index}.type: Field required")
    return body


def check_sampling(body: JSON, headers: Mapping[str, str], profile: ModelProfile) -> None:
    version = headers.get("anthropic-version", CURRENT_API_VERSION)
    legacy = version < CURRENT_API_VERSION and profile.budget_thinking != "refused"
    for param in SAMPLING_PARAMS:
        if param in body and not legacy:
            raise invalid(
                f"{param}: sampling parameters are not supported "
                f"(anthropic-version {version}, model {body['model']}); remove `{param}`"
            )


def thinking_is_on(body: JSON, profile: ModelProfile) -> bool:
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        return profile.thinks_when_omitted
    return thinking.get("type") in ("enabled", "adaptive")


def check_thinking(body: JSON, profile: ModelProfile) -> None:
    """Thinking mode, budget and effort against the model's rules; forced tool_choice."""
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise invalid("max_tokens: Input should be a valid integer greater than or equal to 0")
    if max_tokens > profile.max_output_tokens:
        raise invalid(
            f"max_tokens: {max_tokens} > {profile.max_output_tokens}, which is the maximum "
            f"allowed number of output tokens for {body['model']}"
        )
    output_config = body.get("output_config") or {}
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    if effort is not None and (effort not in EFFORTS or not profile.supports_effort):
        raise invalid(f"output_config.effort: effort {effort!r} is not supported for this model")
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if thinking is not None and kind not in THINKING_TYPES:
        raise invalid(
            f"thinking.type: Input tag {kind!r} found using 'type' does not match any of the "
            "expected tags: 'adaptive', 'disabled', 'enabled', 'between_tools'"
        )
    unsupported = (
        (kind == "enabled" and profile.budget_thinking == "refused")
        or (kind == "adaptive" and not profile.adaptive_thinking)
        or (kind == "disabled" and profile.thinking_off != "disabled")
        or (kind == "between_tools" and profile.thinking_off != "between_tools")
        or (kind == "between_tools" and effort in ("xhigh", "max"))
        or (
            kind == "disabled"
            and profile.model_id == "claude-opus-5"
            and effort in ("xhigh", "max")
        )
    )
    if unsupported:
        advice = (
            ' Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
            if kind == "enabled"
            else ""
        )
        raise invalid(f'"thinking.type.{kind}" is not supported for this model.{advice}')
    if kind == "enabled" and isinstance(thinking, dict):
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < MIN_BUDGET_TOKENS:
            raise invalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to "
                f"{MIN_BUDGET_TOKENS}"
            )
        if budget >= max_tokens:
            raise invalid(
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                "documentation at https://docs.claude.com/en/docs/build-with-claude/"
                "extended-thinking#max-tokens-and-context-window-size"
            )
    tool_choice = body.get("tool_choice")
    forced = isinstance(tool_choice, dict) and tool_choice.get("type") in ("any", "tool")
    if forced and (
        kind == "enabled" or (thinking_is_on(body, profile) and profile.forced_tool_choice_refused)
    ):
        raise invalid("Thinking may not be enabled when tool_choice forces tool use.")


def check_cache_breakpoints(body: JSON) -> None:
    """At most four breakpoints, and no 1-hour entry after a 5-minute one."""
    found = count_breakpoints(body)
    if found > MAX_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {found}."
        )
    ttls = [block.ttl for block in prompt_blocks(body) if block.ttl is not None]
    if any(earlier < later for earlier, later in itertools.pairwise(ttls)):
        raise invalid(
            "cache_control: a block with ttl='1h' must not come after a block with ttl='5m'"
        )


def check_echoed_thinking(body: JSON, signer: Signer) -> None:
    """Every thinking block sent back must be exactly as the server produced it."""
    for index, message in enumerate(body["messages"]):
        if message["role"] != "assistant":
            continue
        for block_index, block in enumerate(_content_blocks(message)):
            where = f"messages.{index}.content.{block_index}"
            if block["type"] == "thinking" and not signer.thinking_is_valid(
                block.get("thinking"), block.get("signature")
            ):
                raise invalid(f"{where}: Invalid `signature` in `thinking` block")
            if block["type"] == "redacted_thinking" and not signer.redacted_is_valid(
                block.get("data")
            ):
                raise invalid(f"{where}: Invalid `data` in `redacted_thinking` block")


def check_tool_pairing(body: JSON) -> None:
    """Each tool_use is answered by a tool_result in the very next (user) message, and each
    tool_result answers a tool_use of the message before it."""
    messages: list[JSON] = body["messages"]
    for index, message in enumerate(messages):
        blocks = _content_blocks(message)
        if message["role"] == "assistant":
            used = [str(block.get("id")) for block in blocks if block["type"] == "tool_use"]
            if not used or index + 1 >= len(messages):
                continue
            following = messages[index + 1]
            answered = {
                str(block.get("tool_use_id"))
                for block in _content_blocks(following)
                if block["type"] == "tool_result"
            }
            missing = [tool_id for tool_id in used if tool_id not in answered]
            if following["role"] != "user" or missing:
                raise invalid(
                    f"messages.{index + 1}: `tool_use` ids were found without `tool_result` "
                    f"blocks immediately after: {', '.join(missing or used)}. Each `tool_use` "
                    "block must have a corresponding `tool_result` block in the next message."
                )
        else:
            previous = _content_blocks(messages[index - 1]) if index else []
            used_before = {
                str(block.get("id")) for block in previous if block["type"] == "tool_use"
            }
            for block_index, block in enumerate(blocks):
                if block["type"] == "tool_result" and block.get("tool_use_id") not in used_before:
                    raise invalid(
                        f"messages.{index}.content.{block_index}: unexpected `tool_use_id` found "
                        f"in `tool_result` blocks: {block.get('tool_use_id')}. Each "
                        "`tool_result` block must have a corresponding `tool_use` block in the "
                        "previous message."
                    )


def check_tool_loop_thinking(
    body: JSON, profile: ModelProfile, issued_with_thinking: Callable[[str], bool]
) -> None:
    """With thinking on, the assistant turn a tool loop continues must start with thinking.

    Under budget thinking this is always enforced (the model always thinks first). Under
    adaptive thinking the model may skip thinking, so the fake only refuses a turn whose
    thinking it knows it produced and the client dropped (`issued_with_thinking(tool_use_id)`).
    """
    if not thinking_is_on(body, profile):
        return
    messages: list[JSON] = body["messages"]
    if not messages or messages[-1]["role"] != "user":
        return
    last_blocks = _content_blocks(messages[-1])
    if not any(block["type"] == "tool_result" for block in last_blocks):
        return
    turn_start = -1
    for index, message in enumerate(messages):
        blocks = _content_blocks(message)
        if message["role"] == "user" and any(block["type"] != "tool_result" for block in blocks):
            turn_start = index
    first_assistant = next(
        (i for i in range(turn_start + 1, len(messages)) if messages[i]["role"] == "assistant"),
        None,
    )
    if first_assistant is None:
        return
    blocks = _content_blocks(messages[first_assistant])
    found = blocks[0]["type"] if blocks else "text"
    if found in _THINKING_KINDS:
        return
    thinking: Any = body.get("thinking")
    budget_mode = isinstance(thinking, dict) and thinking.get("type") == "enabled"
    dropped = any(
        issued_with_thinking(str(block.get("id")))
        for block in blocks
        if block["type"] == "tool_use"
    )
    if budget_mode or dropped:
        raise invalid(_TOOL_LOOP_THINKING.format(index=first_assistant, found=found))
