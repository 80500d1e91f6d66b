"""Model profiles: the thinking settings each model accepts, and what usage costs."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from analyzers.fakes.validation import ApiError, check_thinking
from analyzers.model.profiles import (
    PROFILES,
    cost_of,
    is_known_model,
    profile_for,
    thinking_params,
)
from analyzers.model.protocol import Effort, ThinkingMode
from schemas.usage import Usage

# Reference section 6: every id in the SDK 2.11 `Model` literal.
SDK_MODEL_IDS = [
    "claude-fable-5-2",
    "claude-mythos-5-2",
    "claude-haiku-5-5",
    "claude-sonnet-5-5",
    "claude-fable-5-1",
    "claude-opus-5-5",
    "claude-mythos-5-1",
    "claude-sonnet-5",
    "claude-fable-5",
    "claude-mythos-5",
    "claude-opus-5",
    "claude-opus-4-8",
    "claude-opus-4-7",
    "claude-mythos-preview",
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "claude-haiku-4-5-20251001",
    "claude-opus-4-5",
    "claude-opus-4-5-20251101",
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
]
REFUSE_BUDGET = [
    "claude-opus-4-7",
    "claude-opus-4-8",
    "claude-opus-5",
    "claude-opus-5-5",
    "claude-sonnet-5",
    "claude-sonnet-5-5",
    "claude-fable-5",
    "claude-fable-5-1",
    "claude-fable-5-2",
    "claude-mythos-5",
    "claude-mythos-5-1",
    "claude-mythos-5-2",
    "claude-haiku-5-5",
]
SAMPLING = {"temperature", "top_p", "top_k"}


@pytest.mark.parametrize("model", SDK_MODEL_IDS)
def test_every_model_the_sdk_names_is_known(model: str) -> None:
    assert is_known_model(model)
    assert profile_for(model).known


def test_a_dated_snapshot_id_resolves_to_its_alias() -> None:
    assert profile_for("claude-haiku-4-5-20251001") is PROFILES["claude-haiku-4-5"]


@pytest.mark.parametrize("model", REFUSE_BUDGET)
def test_claude_4_7_and_later_refuse_budget_thinking(model: str) -> None:
    assert profile_for(model).budget_thinking == "refused"
    params = thinking_params(model, "enabled", budget_tokens=4096, max_tokens=16_000)
    assert params["thinking"] == {"type": "adaptive"}


def test_the_table_matches_the_reference_for_the_current_lineup() -> None:
    opus = profile_for("claude-opus-5-5")
    assert (opus.context_window, opus.max_output_tokens) == (1_000_000, 128_000)
    assert opus.thinking_off is None
    assert opus.default_effort == "medium"
    assert (opus.prices.input, opus.prices.output, opus.prices.cache_read) == (4.0, 20.0, 0.20)
    haiku = profile_for("claude-haiku-4-5")
    assert (haiku.context_window, haiku.max_output_tokens) == (200_000, 64_000)
    assert haiku.budget_thinking == "only"
    assert profile_for("claude-sonnet-5-5").thinking_off == "between_tools"


def test_budget_thinking_is_used_only_where_it_is_the_only_mode() -> None:
    params = thinking_params("claude-haiku-4-5", "enabled", budget_tokens=4096, max_tokens=8192)

    assert params == {"thinking": {"type": "enabled", "budget_tokens": 4096}}


def test_a_budget_is_clamped_into_the_accepted_range() -> None:
    too_big = thinking_params("claude-sonnet-4-5", "enabled", budget_tokens=50_000, max_tokens=8192)
    too_small = thinking_params("claude-sonnet-4-5", "enabled", budget_tokens=10, max_tokens=8192)
    no_room = thinking_params("claude-sonnet-4-5", "enabled", budget_tokens=2048, max_tokens=1024)

    assert too_big["thinking"]["budget_tokens"] == 8191
    assert too_small["thinking"]["budget_tokens"] == 1024
    assert no_room["thinking"] == {"type": "disabled"}


def test_adaptive_on_a_budget_only_model_gets_a_budget_from_the_effort() -> None:
    low = thinking_params("claude-haiku-4-5", "adaptive", "low", max_tokens=32_000)
    high = thinking_params("claude-haiku-4-5", "adaptive", "high", max_tokens=32_000)

    assert low["thinking"]["budget_tokens"] < high["thinking"]["budget_tokens"]
    assert "output_config" not in low  # Haiku 4.5 knows no effort


def test_effort_travels_in_output_config() -> None:
    params = thinking_params("claude-sonnet-5-5", "adaptive", "xhigh")

    assert params == {"thinking": {"type": "adaptive"}, "output_config": {"effort": "xhigh"}}


@pytest.mark.parametrize(
    ("model", "effort", "expected_thinking", "expected_effort"),
    [
        ("claude-opus-4-8", None, {"type": "disabled"}, None),
        ("claude-sonnet-5-5", "max", {"type": "between_tools"}, "low"),
        ("claude-sonnet-5-5", "medium", {"type": "between_tools"}, "medium"),
        ("claude-opus-5-5", None, {"type": "adaptive"}, "low"),
        ("claude-fable-5-1", "high", {"type": "adaptive"}, "low"),
        ("claude-opus-5", "max", {"type": "disabled"}, "high"),
    ],
)
def test_disabled_thinking_becomes_what_the_model_accepts(
    model: str,
    effort: Effort | None,
    expected_thinking: dict[str, str],
    expected_effort: str | None,
) -> None:
    params = thinking_params(model, "disabled", effort)

    assert params["thinking"] == expected_thinking
    assert params.get("output_config", {}).get("effort") == expected_effort


def test_an_unknown_model_is_treated_as_a_current_adaptive_model() -> None:
    profile = profile_for("claude-future-9")

    assert not profile.known
    assert not is_known_model("claude-future-9")
    assert profile.budget_thinking == "refused"
    assert thinking_params("claude-future-9", "enabled", budget_tokens=4096)["thinking"] == {
        "type": "adaptive"
    }
    assert thinking_params("claude-future-9", "disabled")["thinking"] == {"type": "adaptive"}


@pytest.mark.parametrize("model", sorted(PROFILES))
def test_every_setting_produced_is_one_the_model_accepts(model: str) -> None:
    """Cross-check against the fake API's validation rules, for every mode, effort and size."""
    profile = profile_for(model)
    efforts: list[Effort | None] = [None, *get_args(Effort)]
    modes: tuple[ThinkingMode, ...] = get_args(ThinkingMode)
    for mode, effort, max_tokens in itertools.product(modes, efforts, (1000, 1025, 16_000)):
        params = thinking_params(model, mode, effort, budget_tokens=None, max_tokens=max_tokens)
        assert not SAMPLING & set(params)
        body = {"model": model, "max_tokens": max_tokens, "messages": [], **params}
        try:
            check_thinking(body, profile)
        except ApiError as refused:  # pragma: no cover - the assertion explains
            pytest.fail(f"{mode}/{effort}/{max_tokens} on {model}: {refused.message}")


def test_cost_splits_the_bill_the_way_the_provider_does() -> None:
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=100_000,
        cache_creation_input_tokens=200_000,
        cache_read_input_tokens=2_000_000,
    )

    cost = cost_of("claude-sonnet-5-5", usage)

    assert cost.input_usd == pytest.approx(2.0)
    assert cost.output_usd == pytest.approx(1.0)
    assert cost.cache_write_usd == pytest.approx(0.5)
    assert cost.cache_read_usd == pytest.approx(0.4)
    assert cost.total_usd == pytest.approx(3.9)


def test_cache_writes_are_priced_by_their_lifetime() -> None:
    """1-hour writes cost 2x base input, 5-minute writes 1.25x (reference section 4)."""
    usage = Usage(cache_creation_input_tokens=200_000, cache_creation_1h_input_tokens=150_000)

    cost = cost_of("claude-sonnet-5-5", usage)

    assert cost.cache_write_usd == pytest.approx(0.05 * 2.5 + 0.15 * 4.0)
    for profile in PROFILES.values():
        assert profile.prices.cache_write_5m == pytest.approx(1.25 * profile.prices.input)
        assert profile.prices.cache_write_1h == pytest.approx(2.0 * profile.prices.input)


def test_usage_cannot_claim_more_one_hour_writes_than_writes() -> None:
    with pytest.raises(ValueError, match="cache_creation_1h_input_tokens"):
        Usage(cache_creation_input_tokens=10, cache_creation_1h_input_tokens=11)


def test_an_unknown_model_is_priced_at_the_most_expensive_known_rates() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)

    unknown = cost_of("claude-future-9", usage).total_usd

    assert unknown >= max(cost_of(model, usage).total_usd for model in PROFILES)
    assert cost_of("claude-haiku-4-5-20251001", usage).total_usd == pytest.approx(6.0)
