"""What posthoc knows about each Claude model: limits, thinking rules and prices.

Pure data and pure functions, no SDK import, so the run loop, the cost report and the fake
Messages API all read the same table. Sources: `reference/anthropic-api.md` sections 1.2, 4 and 6
(model pages and the pricing page as of 2026-11). Values marked UNCONFIRMED there are filled in
conservatively and say so in a comment.

An id we do not know is treated as a current model (adaptive thinking only, budget thinking
refused, forced tool use refused, thinking cannot be turned off) and priced at the most expensive
known rates, so an unknown id never crashes a run and never under-reports its cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from analyzers.model.protocol import Effort, ThinkingMode
from schemas.usage import Cost, Usage

ThinkingDisplay = Literal["summarized", "omitted"]

MIN_BUDGET_TOKENS = 1024
"""The smallest `thinking.budget_tokens` the API accepts."""

# How much of a budget each effort buys on models that only know budget thinking. The ratios
# follow the docs' guidance (start at the minimum, raise for harder tasks); the absolute values
# are ours.
_BUDGET_FOR_EFFORT: dict[str, int] = {
    "low": 2_048,
    "medium": 8_192,
    "high": 16_384,
    "xhigh": 32_768,
    "max": 65_536,
}

# `between_tools` (Sonnet 5.5's lowest setting) accepts only these efforts.
_BETWEEN_TOOLS_EFFORTS = ("low", "medium", "high")


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens, the way the provider bills them."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float


@dataclass(frozen=True)
class ModelProfile:
    """One model's limits and rules.

    `budget_thinking`: "only" (the model knows no adaptive thinking), "deprecated" (accepted, but
    adaptive is preferred and the SDK warns), "refused" (400 on Claude 4.7 and later).
    `thinking_off`: how to ask for no thinking: "disabled", "between_tools" (Sonnet 5.5), or
    None when thinking cannot be turned off. `thinks_when_omitted`: whether a request without
    `thinking` runs adaptive thinking (Opus 5, Sonnet 5/5.5, Fable, Mythos) or none (4.x).
    """

    model_id: str
    context_window: int
    max_output_tokens: int
    budget_thinking: Literal["only", "deprecated", "refused"]
    thinking_off: Literal["disabled", "between_tools"] | None
    default_effort: Effort | None
    prices: Prices
    supports_effort: bool = True
    forced_tool_choice_refused: bool = True
    thinking_display_default: ThinkingDisplay = "omitted"
    min_cacheable_tokens: int = 1024
    thinks_when_omitted: bool = False
    known: bool = True

    @property
    def adaptive_thinking(self) -> bool:
        """Whether `thinking.type: adaptive` is accepted."""
        return self.budget_thinking != "only"


_M = 1_000_000
_K = 1_000

_FABLE_PRICES = Prices(10.0, 50.0, 12.5, 20.0, 0.25)
_OPUS_5_5_PRICES = Prices(4.0, 20.0, 5.0, 8.0, 0.20)
_SONNET_5_PRICES = Prices(2.0, 10.0, 2.5, 4.0, 0.20)
_HAIKU_5_5_PRICES = Prices(0.10, 0.50, 0.125, 0.20, 0.01)  # UNCONFIRMED (third-party tracker)
_OPUS_PRICES = Prices(5.0, 25.0, 6.25, 10.0, 0.50)
_SONNET_4_PRICES = Prices(3.0, 15.0, 3.75, 6.0, 0.30)
_HAIKU_4_5_PRICES = Prices(1.0, 5.0, 1.25, 2.0, 0.10)
# The most expensive known rate in every column: what an unknown model id is charged.
_CONSERVATIVE_PRICES = Prices(10.0, 50.0, 12.5, 20.0, 1.0)


def _current(
    model_id: str,
    prices: Prices,
    *,
    thinking_off: Literal["disabled", "between_tools"] | None,
    default_effort: Effort = "high",
    min_cacheable_tokens: int = 1024,
    forced_tool_choice_refused: bool = True,
    thinks_when_omitted: bool = True,
) -> ModelProfile:
    """A Claude 4.7-or-later model: 1M context, 128K output, adaptive thinking only."""
    return ModelProfile(
        model_id=model_id,
        context_window=1 * _M,
        max_output_tokens=128 * _K,
        budget_thinking="refused",
        thinking_off=thinking_off,
        default_effort=default_effort,
        prices=prices,
        forced_tool_choice_refused=forced_tool_choice_refused,
        min_cacheable_tokens=min_cacheable_tokens,
        thinks_when_omitted=thinks_when_omitted,
    )


_PROFILES: tuple[ModelProfile, ...] = (
    # Fable and Mythos 5.x: thinking always on; forced tool use refused. 5.2 ids exist in the SDK
    # literal but are undocumented: profiled like 5.1.
    _current("claude-fable-5-2", _FABLE_PRICES, thinking_off=None, min_cacheable_tokens=512),
    _current("claude-fable-5-1", _FABLE_PRICES, thinking_off=None, min_cacheable_tokens=512),
    _current("claude-fable-5", _FABLE_PRICES, thinking_off=None, min_cacheable_tokens=512),
    _current("claude-mythos-5-2", _FABLE_PRICES, thinking_off=None, min_cacheable_tokens=512),
    _current("claude-mythos-5-1", _FABLE_PRICES, thinking_off=None, min_cacheable_tokens=512),
    _current("claude-mythos-5", _FABLE_PRICES, thinking_off=None, min_cacheable_tokens=512),
    # Opus 5.5 cannot disable thinking; its default effort is medium. Cache minimum UNCONFIRMED.
    _current("claude-opus-5-5", _OPUS_5_5_PRICES, thinking_off=None, default_effort="medium"),
    _current("claude-sonnet-5-5", _SONNET_5_PRICES, thinking_off="between_tools"),
    # Haiku 5.5: forced tool use and cache minimum UNCONFIRMED; refused/1024 assumed.
    _current(
        "claude-haiku-5-5", _HAIKU_5_5_PRICES, thinking_off="disabled", default_effort="medium"
    ),
    _current(
        "claude-opus-5",
        _OPUS_PRICES,
        thinking_off="disabled",
        min_cacheable_tokens=512,
        forced_tool_choice_refused=False,
    ),
    _current(
        "claude-sonnet-5",
        _SONNET_5_PRICES,
        thinking_off="disabled",
        forced_tool_choice_refused=False,
    ),
    _current(
        "claude-opus-4-8",
        _OPUS_PRICES,
        thinking_off="disabled",
        forced_tool_choice_refused=False,
        thinks_when_omitted=False,
    ),
    _current(
        "claude-opus-4-7",
        _OPUS_PRICES,
        thinking_off="disabled",
        min_cacheable_tokens=2048,
        forced_tool_choice_refused=False,
        thinks_when_omitted=False,
    ),
    ModelProfile(
        model_id="claude-mythos-preview",
        context_window=1 * _M,
        max_output_tokens=128 * _K,
        budget_thinking="deprecated",
        thinking_off="disabled",
        default_effort="high",
        prices=_FABLE_PRICES,  # UNCONFIRMED: priced like Mythos 5.1
        min_cacheable_tokens=2048,
    ),
    ModelProfile(
        model_id="claude-opus-4-6",
        context_window=1 * _M,
        max_output_tokens=128 * _K,
        budget_thinking="deprecated",
        thinking_off="disabled",
        default_effort="high",
        prices=_OPUS_PRICES,
        forced_tool_choice_refused=False,
        thinking_display_default="summarized",
        min_cacheable_tokens=4096,
    ),
    ModelProfile(
        model_id="claude-sonnet-4-6",
        context_window=1 * _M,
        max_output_tokens=128 * _K,
        budget_thinking="deprecated",
        thinking_off="disabled",
        default_effort="high",
        prices=_SONNET_4_PRICES,
        forced_tool_choice_refused=False,
        thinking_display_default="summarized",
    ),
    ModelProfile(
        model_id="claude-opus-4-5",
        context_window=200 * _K,  # UNCONFIRMED
        max_output_tokens=64 * _K,  # UNCONFIRMED
        budget_thinking="only",
        thinking_off="disabled",
        default_effort="high",
        prices=_OPUS_PRICES,
        forced_tool_choice_refused=False,
        thinking_display_default="summarized",
        min_cacheable_tokens=4096,
    ),
    ModelProfile(
        model_id="claude-sonnet-4-5",
        context_window=200 * _K,
        max_output_tokens=64 * _K,  # UNCONFIRMED
        budget_thinking="only",
        thinking_off="disabled",
        default_effort=None,
        prices=_SONNET_4_PRICES,
        supports_effort=False,
        forced_tool_choice_refused=False,
        thinking_display_default="summarized",
    ),
    ModelProfile(
        model_id="claude-haiku-4-5",
        context_window=200 * _K,
        max_output_tokens=64 * _K,
        budget_thinking="only",
        thinking_off="disabled",
        default_effort=None,
        prices=_HAIKU_4_5_PRICES,
        supports_effort=False,
        forced_tool_choice_refused=False,
        thinking_display_default="summarized",
        min_cacheable_tokens=4096,
    ),
)

PROFILES: dict[str, ModelProfile] = {profile.model_id: profile for profile in _PROFILES}
"""Every known model by id (dated snapshot ids resolve through `profile_for`)."""

_DATED_SUFFIX = re.compile(r"-\d{8}$")


def is_known_model(model: str) -> bool:
    """Whether `model` (or its undated alias) is in the table."""
    return _DATED_SUFFIX.sub("", model) in PROFILES


def profile_for(model: str) -> ModelProfile:
    """The profile of `model`; a dated snapshot id (`claude-haiku-4-5-20251001`) resolves to its
    alias. An unknown id gets the conservative fallback profile with `known=False`."""
    profile = PROFILES.get(model) or PROFILES.get(_DATED_SUFFIX.sub("", model))
    if profile is not None:
        return profile
    return ModelProfile(
        model_id=model,
        context_window=200 * _K,
        max_output_tokens=64 * _K,
        budget_thinking="refused",
        thinking_off=None,
        default_effort=None,
        prices=_CONSERVATIVE_PRICES,
        thinks_when_omitted=True,
        known=False,
    )


def _budget_for(effort: Effort | None, budget_tokens: int | None, max_tokens: int) -> int | None:
    """A valid budget (1024 <= budget < max_tokens), or None when max_tokens leaves no room."""
    if max_tokens <= MIN_BUDGET_TOKENS:
        return None
    wanted = budget_tokens if budget_tokens is not None else _BUDGET_FOR_EFFORT[effort or "high"]
    return max(MIN_BUDGET_TOKENS, min(wanted, max_tokens - 1))


def thinking_params(
    model: str,
    mode: ThinkingMode,
    effort: Effort | None = None,
    budget_tokens: int | None = None,
    max_tokens: int = 16_384,
) -> dict[str, Any]:
    """The wire `thinking` and `output_config` for a request, as keyword arguments.

    Budget ("enabled") thinking is sent only to models that know nothing else; elsewhere the
    request becomes adaptive thinking steered by effort, because 4.7+ models refuse budgets
    with a 400 and 4.6 models have deprecated them. "disabled" becomes `between_tools` on Sonnet
    5.5 and adaptive at low effort on models whose thinking cannot be turned off. Sampling
    parameters are never produced: API version 2026-10-21 refuses them on every model.
    """
    profile = profile_for(model)
    thinking: dict[str, Any]
    if mode == "disabled":
        if profile.thinking_off == "disabled":
            thinking = {"type": "disabled"}
            if effort in ("xhigh", "max") and profile.model_id == "claude-opus-5":
                effort = "high"  # Opus 5 disables thinking only at effort <= high
        elif profile.thinking_off == "between_tools":
            thinking = {"type": "between_tools"}
            if effort not in _BETWEEN_TOOLS_EFFORTS:
                effort = "low"
        else:
            thinking = {"type": "adaptive"}
            effort = "low"
    elif profile.budget_thinking == "only":
        budget = _budget_for(effort, budget_tokens, max_tokens)
        thinking = (
            {"type": "disabled"} if budget is None else {"type": "enabled", "budget_tokens": budget}
        )
    else:
        thinking = {"type": "adaptive"}

    params: dict[str, Any] = {"thinking": thinking}
    if effort is not None and profile.supports_effort:
        params["output_config"] = {"effort": effort}
    return params


BATCH_PRICE_FACTOR = 0.5
"""The Message Batches API bills every token at half the standard rate."""


def cost_of(model: str, usage: Usage, price_factor: float = 1.0) -> Cost:
    """What `usage` cost on `model` at standard rates, times `price_factor`
    (`BATCH_PRICE_FACTOR` for turns sent through the Message Batches API).

    Cache writes are priced by their lifetime, as the API reports them: 1-hour writes at the
    1-hour rate (2x base input), the rest at the 5-minute rate (1.25x).
    """
    prices = profile_for(model).prices
    one_hour = usage.cache_creation_1h_input_tokens
    five_minutes = usage.cache_creation_input_tokens - one_hour
    scale = price_factor / _M
    return Cost(
        input_usd=usage.input_tokens * prices.input * scale,
        output_usd=usage.output_tokens * prices.output * scale,
        cache_write_usd=(five_minutes * prices.cache_write_5m + one_hour * prices.cache_write_1h)
        * scale,
        cache_read_usd=usage.cache_read_input_tokens * prices.cache_read * scale,
    )
