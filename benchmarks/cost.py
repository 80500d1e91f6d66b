"""Billed input tokens of the three built-ins on one conversation, caching layout vs uncached
(goal: at most 0.4 of uncached).

next_steps, follow_ups and quality run one after the other (the first one's cache entry exists
before the others start) on the same conversation through `analyzers.run`, the real adapter and
SDK, against the fake Messages API, whose prompt-cache simulation follows the documented rules
(5-minute entries, 20-block lookback, a minimum cacheable prefix per model, readable once the
writing response starts). Each analyzer is offered only the tools it may call; the tools + system
prefix (transcript included) is still byte-identical across the three because they record through
one shared `record_output` tool, their output schemas being in their own briefs. The report
checks that (the "shared prefix" line) and lists the tools offered.

The scripted analyst works like a model would: it reads the last turns with `get_turns`, records
its own outputs in one or two `record_output` calls (two separate turns for next_steps), then
ends with a short text, so the runtime's moving breakpoint on the newest user block is exercised
too.

Uncached layout: the same runs through a benchmark-only `ModelClient` wrapper that strips every
`cache_control` from the request before the adapter sends it, so every prompt token is billed as
plain input. Billed input tokens weigh cache writes and reads by the model's price table
(`model_profiles`: 5-minute write 1.25x, read 0.1x of base input on the built-ins' model);
dollars come from `cost_of` (input side: input + cache write + cache read).

The primary figure is `escalated_outage.json` (21 turns, a typical short call). The full run also
shows `long_technical_support.json` (330 turns), where the transcript dominates the prompt.

    python benchmarks/cost.py [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import analyzers
from analyzers.fakes import (
    FakeMessagesAPI,
    FakeReply,
    Text,
    Thinking,
    ToolCall,
    estimate_tokens,
    serve_fake_messages_api,
)
from analyzers.fakes.cache import canonical_json
from analyzers.model.anthropic import AnthropicModel, build_anthropic_model
from analyzers.model.profiles import cost_of, profile_for
from analyzers.model.protocol import ModelClient, ModelRequest, ModelTurn
from analyzers.runtime.session import RunOptions
from benchmarks._common import (
    BUILTIN_NAMES,
    JSON,
    MODEL,
    builtin_analyzers,
    example_conversation,
    verdict,
)
from schemas import AnalysisResult, AnalyzerSpec, Conversation
from schemas.usage import Usage

GOAL = 0.4
PRIMARY = "escalated_outage"
TRANSCRIPT_DOMINATES = "long_technical_support"
READ_LAST = 20
"""Turns the scripted analyst re-reads with get_turns before recording."""

# -- the scripted analyst ---------------------------------------------------------------------

_OWN_OUTPUT = re.compile(r"(?m)^### (\w+) \(")
_TURN_COUNT = re.compile(r'<transcript turns="(\d+)"')


def _values(tool: str, turns: int) -> list[JSON]:
    """The values the analyst records with `tool`, citing turns of a `turns`-turn transcript."""
    last = turns - 1
    evidence = sorted({min(1, last), turns // 2, max(last - 1, 0)})
    if tool == "record_next_step":
        return [
            {
                "value": {
                    "action": "Call the customer back to confirm the fault is fixed.",
                    "owner": "support",
                    "due": "today",
                    "reason": "The agent promised a callback once the engineers had checked.",
                },
                "evidence_turns": evidence,
            },
            {
                "value": {
                    "action": "Apply the service credit the agent offered for the outage.",
                    "owner": "billing",
                    "due": "within_48h",
                    "reason": "A credit was promised in the call but the agent cannot issue it.",
                },
                "evidence_turns": [max(last - 1, 0)],
            },
        ]
    if tool == "record_follow_up":
        return [
            {
                "value": {
                    "priority": "high",
                    "reason": "The customer's service has been failing for days and they said "
                    "they would look at other providers.",
                    "customer_ask": "A working connection and a firm date for the fix.",
                    "suggested_action": "Have a senior agent call today with the repair date.",
                },
                "evidence_turns": evidence,
            }
        ]
    if tool == "record_quality_assessment":
        return [
            {
                "value": {
                    "resolution": "partially_resolved",
                    "success": "failure",
                    "rationale": "The agent diagnosed the fault and escalated it correctly, but "
                    "the customer left without a working service or a firm date.",
                    "customer_sentiment": "negative",
                    "sentiment_trend": "stable",
                    "scores": {
                        "accuracy": 4,
                        "empathy": 4,
                        "efficiency": 3,
                        "policy_adherence": 4,
                    },
                },
                "evidence_turns": evidence,
            }
        ]
    raise ValueError(f"the scripted analyst has no values for {tool!r}")


def _texts(message: JSON) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    return [
        str(block.get("text", ""))
        for block in content or []
        if isinstance(block, dict) and block.get("type") == "text"
    ]


def scripted_analyst(body: JSON) -> FakeReply:
    """The fake's responder: get_turns, then one record call per turn, then a closing text."""
    messages: list[JSON] = body.get("messages") or []
    own = [m.group(1) for text in _texts(messages[0]) for m in _OWN_OUTPUT.finditer(text)]
    system = "\n".join(str(block.get("text", "")) for block in body.get("system") or [])
    found = _TURN_COUNT.search(system)
    turns = int(found.group(1)) if found else 1
    pending = [(name, value) for name in own for value in _values(f"record_{name}", turns)]
    answered = sum(1 for message in messages if message.get("role") == "assistant")
    if answered == 0:
        return FakeReply(
            [
                Thinking(
                    "The transcript is shown whole, but the end of the call decides what "
                    "happens next: I re-read the last turns before recording anything."
                ),
                ToolCall("get_turns", {"first": max(turns - READ_LAST, 0), "last": turns - 1}),
            ]
        )
    if answered <= len(pending):
        output, value = pending[answered - 1]
        return FakeReply(
            [
                Thinking(f"The evidence supports this; I record it as {output}."),
                ToolCall("record_output", {"output": output, **value}),
            ]
        )
    return FakeReply([Text(f"Recorded {len(pending)} output(s): {', '.join(own)}.")])


# -- the uncached layout ----------------------------------------------------------------------


def _without_cache_control(blocks: list[JSON]) -> list[JSON]:
    return [{k: v for k, v in block.items() if k != "cache_control"} for block in blocks]


def _message_without_cache_control(message: JSON) -> JSON:
    content = message.get("content")
    if not isinstance(content, list):
        return message
    return {**message, "content": _without_cache_control(content)}


@dataclass
class Uncached:
    """A `ModelClient` that sends every request with all `cache_control` markers removed."""

    inner: ModelClient

    def _strip(self, request: ModelRequest) -> ModelRequest:
        return replace(
            request,
            system=_without_cache_control(request.system),
            messages=[_message_without_cache_control(m) for m in request.messages],
            tools=_without_cache_control(request.tools),
        )

    async def complete(self, request: ModelRequest) -> ModelTurn:
        return await self.inner.complete(self._strip(request))

    async def count_tokens(self, request: ModelRequest) -> int:
        return await self.inner.count_tokens(self._strip(request))


# -- running and billing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Bill:
    """Input-side billing of one analysis."""

    analyzer: str
    model_turns: int
    usage: Usage

    @property
    def weighted_tokens(self) -> float:
        """Input tokens weighted by price: a 5-minute write costs 1.25 inputs, a 1-hour write
        2, a read 0.1 (per the model's price table, through `cost_of`)."""
        return self.input_usd * 1_000_000 / profile_for(MODEL).prices.input

    @property
    def input_usd(self) -> float:
        """Input-side dollars (uncached input, cache writes, cache reads)."""
        cost = cost_of(MODEL, self.usage)
        return cost.input_usd + cost.cache_write_usd + cost.cache_read_usd


async def _run_all(
    model: ModelClient, specs: dict[str, AnalyzerSpec], conversation: Conversation
) -> list[Bill]:
    bills = []
    for name in BUILTIN_NAMES:  # sequential: the first analysis writes the shared prefix
        spec = specs[name]
        companions = [other for key, other in specs.items() if key != name]
        result: AnalysisResult = await analyzers.run(
            spec, conversation, model=model, companions=companions, options=RunOptions()
        )
        if result.status != "succeeded" or result.model != MODEL:
            raise RuntimeError(f"{name} did not succeed on {MODEL}: {result.error}")
        bills.append(Bill(name, result.model_turns, result.usage))
    return bills


def _layout(
    conversation: Conversation, specs: dict[str, AnalyzerSpec], cached: bool
) -> tuple[list[Bill], list[JSON]]:
    """Run the three built-ins against a fresh fake (a cold cache); return their bills and the
    bodies of every request, in order."""
    api = FakeMessagesAPI(responder=scripted_analyst)
    with serve_fake_messages_api(api) as base_url:

        async def go() -> list[Bill]:
            adapter: AnthropicModel = build_anthropic_model("benchmark", base_url, timeout=60)
            try:
                model: ModelClient = adapter if cached else Uncached(adapter)
                return await _run_all(model, specs, conversation)
            finally:
                await adapter.aclose()

        bills = asyncio.run(go())
        return bills, [request.body for request in api.requests]


def _tokens(blocks: list[JSON]) -> int:
    return sum(estimate_tokens(_without_cache_control([block])[0]) for block in blocks)


def _prompt_layout(body: JSON) -> str:
    """Where the first request's prompt tokens are (the fake's count: UTF-8 bytes / 4)."""
    tools = _tokens(body.get("tools") or [])
    preamble, transcript = (_tokens([block]) for block in body["system"])
    brief = _tokens(body["messages"][0]["content"])
    shared = tools + preamble + transcript
    return (
        f"first request: tools {tools} + preamble {preamble} + conversation block {transcript} "
        f"= {shared} tokens shared by the three analyzers (transcript {transcript / shared:.0%} "
        f"of it), then next_steps' brief {brief}"
    )


def _shared_prefix(bodies: list[JSON], bills: list[Bill]) -> str:
    """Whether each analyzer's first request starts with the same tools + system bytes, and
    which tools each was offered (only its own: no other analyzer's output tools)."""
    firsts, position = [], 0
    for bill in bills:
        firsts.append(bodies[position])
        position += bill.model_turns
    prefixes = {canonical_json([body.get("tools"), body.get("system")]) for body in firsts}
    offered = sorted({str(tool["name"]) for body in firsts for tool in body.get("tools") or []})
    return (
        f"shared prefix: the {len(firsts)} analyzers' first requests have "
        f"{'IDENTICAL' if len(prefixes) == 1 else f'{len(prefixes)} DIFFERENT'} tools + system; "
        f"tools offered: {', '.join(offered)}"
    )


def _report(name: str, conversation: Conversation, specs: dict[str, AnalyzerSpec]) -> float:
    cached, bodies = _layout(conversation, specs, cached=True)
    uncached, _ = _layout(conversation, specs, cached=False)
    print(f"\n== {name}.json: {len(conversation.turns)} turns, {len(conversation.events)} events")
    print(_prompt_layout(bodies[0]))
    print(_shared_prefix(bodies, cached))
    print(
        "analyzer     turns  prompt tok  uncached   written      read  billed(cached)"
        "  billed(uncached)"
    )
    for bill, plain in zip(cached, uncached, strict=True):
        usage = bill.usage
        print(
            f"{bill.analyzer:<11} {bill.model_turns:>6}  {usage.prompt_tokens:>10}"
            f"  {usage.input_tokens:>8}  {usage.cache_creation_input_tokens:>8}"
            f"  {usage.cache_read_input_tokens:>8}  {bill.weighted_tokens:>14.0f}"
            f"  {plain.weighted_tokens:>16.0f}"
        )
    with_cache = sum(bill.weighted_tokens for bill in cached)
    without = sum(bill.weighted_tokens for bill in uncached)
    prompt_cached = sum(bill.usage.prompt_tokens for bill in cached)
    prompt_plain = sum(bill.usage.prompt_tokens for bill in uncached)
    ratio = with_cache / without
    usd_cached = sum(bill.input_usd for bill in cached)
    usd_plain = sum(bill.input_usd for bill in uncached)
    print(
        f"prompt tokens sent: {prompt_cached} with the caching layout, {prompt_plain} without "
        f"({'the same requests' if prompt_cached == prompt_plain else 'DIFFERENT requests'})"
    )
    print(
        f"billed input tokens (5m write x1.25, 1h write x2, read x0.1): {with_cache:.0f} with "
        f"caching vs "
        f"{without:.0f} uncached"
    )
    print(
        f"input-side dollars on {MODEL} (cost_of): ${usd_cached:.5f} with caching vs "
        f"${usd_plain:.5f} uncached"
    )
    print(f"ratio cached/uncached: {ratio:.3f} (goal: at most {GOAL}) -> {verdict(ratio <= GOAL)}")
    return ratio


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="the primary conversation only")
    args = parser.parse_args(argv)
    specs = builtin_analyzers()
    prices = profile_for(MODEL).prices
    print(
        f"cost benchmark: {', '.join(BUILTIN_NAMES)} in sequence on {MODEL} (input ${prices.input}"
        f"/M, 5-minute cache write ${prices.cache_write_5m}/M, cache read ${prices.cache_read}/M; "
        f"minimum cacheable prefix {profile_for(MODEL).min_cacheable_tokens} tokens)"
    )
    names = [PRIMARY] if args.smoke else [PRIMARY, TRANSCRIPT_DOMINATES]
    ratios: dict[str, float] = {}
    for name in names:
        ratios[name] = _report(name, example_conversation(name), specs)
    print(
        f"\nratio for {PRIMARY} (primary): {ratios[PRIMARY]:.3f} -> "
        f"{verdict(ratios[PRIMARY] <= GOAL)} (goal: at most {GOAL} of uncached)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
