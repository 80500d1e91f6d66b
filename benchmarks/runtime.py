"""CPU per analysis of the runtime vs the bare SDK calls it must make (goal: ratio at most 1.2).

One analysis is `analyzers.run(follow_ups, conversation, ...)` with the built-in follow_ups
analyzer (next_steps and quality as companions, as the worker runs it) on the first 60 turns of
`examples/conversations/long_technical_support.json`, through the real Anthropic adapter and SDK
over HTTP to the fake Messages API. The fake answers with zero latency and exactly three model
turns: thinking + `get_turns`, thinking + `record_output` (a follow_up), a closing text.

The baseline makes the same three `client.messages.stream(...)` calls with a bare
`anthropic.AsyncAnthropic` (built like the adapter's), replaying the request bodies the runtime
sent. The fake's request ids end with a digest of each raw body: the benchmark checks that the
replay is byte for byte what the runtime sent before it times anything.

CPU is `time.process_time()` of this process. The fake server runs in a spawned child process,
so its CPU (uvicorn, SSE rendering, validation, cache simulation) counts on neither side: both
figures are the client side only. Each round times N analyses and N baseline replays, in
alternating order; the ratio is the median over rounds of CPU(runtime) / CPU(baseline).

A third figure, the runtime's own CPU, runs the same analysis with the model calls answered
in-process from the turns recorded above (no HTTP, no SDK): what the runtime adds by itself.
With `--profile`, or when the goal is missed, a cProfile of that path shows where it goes.

    python benchmarks/runtime.py [--smoke] [--rounds R] [--analyses N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anthropic

import analyzers
from analyzers.fakes import FakeReply, Text, Thinking, ToolCall
from analyzers.model.anthropic import AnthropicModel
from analyzers.model.protocol import ModelClient, ModelRequest, ModelTurn
from analyzers.runtime.session import RunOptions
from benchmarks._common import (
    JSON,
    RemoteFakeAPI,
    builtin_analyzers,
    example_conversation,
    fake_api_in_child_process,
    first_turns,
    median,
    verdict,
)
from schemas import AnalyzerSpec, Conversation

GOAL = 1.2
TURNS = 60
MODEL_TURNS = 3
ANALYZER = "follow_ups"

FOLLOW_UP: JSON = {
    "value": {
        "priority": "high",
        "reason": (
            "The loft mesh point keeps dropping its wireless backhaul (14 reconnects in a day) "
            "and the customer has had two weeks of outages while working from home."
        ),
        "customer_ask": "A stable connection upstairs, or a technician visit.",
        "suggested_action": (
            "Book a technician to run an Ethernet backhaul to the loft mesh point and call the "
            "customer back today to confirm the slot."
        ),
    },
    "evidence_turns": [1, 16, 41, 57],
}


def three_turns(body: JSON) -> FakeReply:
    """The fake's responder: exactly three model turns per analysis, keyed on how many
    assistant turns the request already holds."""
    answered = sum(1 for message in body.get("messages", []) if message.get("role") == "assistant")
    if answered == 0:
        return FakeReply(
            [
                Thinking(
                    "The customer reports two weeks of wifi dropouts upstairs. The transcript "
                    "is shown whole, but I want to re-read the troubleshooting in the last "
                    "twenty turns before deciding whether a person must follow up."
                ),
                ToolCall("get_turns", {"first": 40, "last": 59}),
            ]
        )
    if answered == 1:
        return FakeReply(
            [
                Thinking(
                    "The loft satellite reconnects constantly and the agent could not fix it "
                    "remotely; the customer works from home and is frustrated. That needs a "
                    "person today: a technician visit for a wired backhaul."
                ),
                ToolCall("record_output", {"output": "follow_up", **FOLLOW_UP}),
            ]
        )
    return FakeReply([Text("Recorded one high-priority follow-up: book a technician visit.")])


def _client(base_url: str) -> anthropic.AsyncAnthropic:
    # Built exactly as `build_anthropic_model` builds the adapter's client.
    return anthropic.AsyncAnthropic(
        api_key="benchmark",
        base_url=base_url,
        max_retries=0,
        timeout=anthropic.Timeout(600.0, connect=5.0),
    )


@dataclass
class Recording:
    """A `ModelClient` that passes calls through and keeps the turns."""

    inner: ModelClient
    turns: list[ModelTurn] = field(default_factory=list)

    async def complete(self, request: ModelRequest) -> ModelTurn:
        turn = await self.inner.complete(request)
        self.turns.append(turn)
        return turn

    async def count_tokens(self, request: ModelRequest) -> int:
        return await self.inner.count_tokens(request)


@dataclass
class Replayed:
    """A `ModelClient` that answers from recorded turns, in order, without any I/O."""

    turns: Sequence[ModelTurn]
    _next: int = 0

    async def complete(self, request: ModelRequest) -> ModelTurn:
        turn = self.turns[self._next % len(self.turns)]
        self._next += 1
        return turn

    async def count_tokens(self, request: ModelRequest) -> int:
        raise AssertionError("a 60-turn conversation fits without counting tokens")


class Bench:
    """The three sides of the comparison, on one event loop; one connection pool per client."""

    def __init__(
        self,
        fake: RemoteFakeAPI,
        spec: AnalyzerSpec,
        companions: list[AnalyzerSpec],
        conversation: Conversation,
    ) -> None:
        self.fake = fake
        self.spec = spec
        self.companions = companions
        self.conversation = conversation
        self.model = AnthropicModel(_client(fake.base_url))
        self.raw = _client(fake.base_url)
        self.replay: list[dict[str, Any]] = []
        self.turns: list[ModelTurn] = []

    async def aclose(self) -> None:
        await self.model.aclose()
        await self.raw.close()

    async def _analysis(self, model: ModelClient) -> None:
        result = await analyzers.run(
            self.spec,
            self.conversation,
            model=model,
            companions=self.companions,
            options=RunOptions(),
        )
        if result.status != "succeeded" or result.model_turns != MODEL_TURNS:
            raise RuntimeError(
                f"expected a succeeded run of {MODEL_TURNS} model turns, got {result.status} "
                f"after {result.model_turns}: {result.error}"
            )

    async def analysis(self) -> None:
        """One analysis through the runtime, the adapter and the SDK."""
        await self._analysis(self.model)

    async def runtime_alone(self) -> None:
        """One analysis with the model's turns replayed in-process."""
        await self._analysis(Replayed(self.turns))

    async def bare_calls(self) -> None:
        """The same three streamed calls with the bare SDK."""
        for params in self.replay:
            async with self.raw.messages.stream(**params) as stream:
                await stream.get_final_message()

    async def capture(self) -> list[str]:
        """Run one analysis and keep its request bodies (for the baseline) and model turns (for
        the in-process replay); check the baseline sends byte-identical bodies. Returns the
        digests of the runtime's request bodies."""
        self.fake.reset()
        recording = Recording(self.model)
        await self._analysis(recording)
        self.turns = recording.turns
        bodies = self.fake.bodies()
        runtime_digests = self.fake.body_digests()
        if len(bodies) != MODEL_TURNS:
            raise RuntimeError(f"expected {MODEL_TURNS} requests, the runtime sent {len(bodies)}")
        # The SDK adds `stream: true` itself; everything else is passed as it was received.
        self.replay = [{k: v for k, v in body.items() if k != "stream"} for body in bodies]
        self.fake.reset()
        await self.bare_calls()
        replay_digests = self.fake.body_digests()
        if replay_digests != runtime_digests:
            raise RuntimeError(
                "the baseline's request bodies differ from the runtime's: "
                f"{replay_digests} vs {runtime_digests}"
            )
        return runtime_digests


async def _cpu_of(work: Callable[[], Awaitable[None]], times: int) -> float:
    """CPU seconds of this process for `times` sequential runs of `work`."""
    gc.collect()
    started = time.process_time()
    for _ in range(times):
        await work()
    return time.process_time() - started


@dataclass
class Figures:
    """CPU seconds per round of each side."""

    runtime: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    alone: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [r / b for r, b in zip(self.runtime, self.baseline, strict=True)]


async def _measure(bench: Bench, rounds: int, analyses: int) -> Figures:
    figures = Figures()
    for round_number in range(rounds):
        bench.fake.reset()  # keep the fake's request log short
        sides = [(figures.runtime, bench.analysis), (figures.baseline, bench.bare_calls)]
        if round_number % 2:
            sides.reverse()
        for into, work in sides:
            into.append(await _cpu_of(work, analyses))
        figures.alone.append(await _cpu_of(bench.runtime_alone, analyses))
    return figures


async def _profile(bench: Bench, analyses: int, top: int) -> str:
    """Where the runtime's own CPU goes: cProfile over analyses with the model replayed."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(analyses):
        await bench.runtime_alone()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"cProfile of {analyses} analyses, model turns replayed in-process\n")
    out.write("-- posthoc code by cumulative time --\n")
    stats.sort_stats("cumulative").print_stats(r"/(analyzers|schemas)/", top)
    out.write("-- all code by own time --\n")
    stats.sort_stats("tottime").print_stats(top)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())


async def _run(args: argparse.Namespace, fake: RemoteFakeAPI) -> Figures:
    specs = builtin_analyzers()
    spec = specs[ANALYZER]
    companions = [s for name, s in specs.items() if name != ANALYZER]
    conversation = first_turns(example_conversation("long_technical_support"), TURNS)
    bench = Bench(fake, spec, companions, conversation)
    try:
        digests = await bench.capture()
        sizes = [len(json.dumps(params)) for params in bench.replay]
        print(
            f"requests per analysis: {len(digests)}, {sizes} bytes of JSON; the baseline's bodies "
            f"are byte-identical (sha256 {', '.join(d[:8] for d in digests)})"
        )
        for _ in range(args.warmup):  # lazy imports, SDK caches, the connection pools
            await bench.analysis()
            await bench.bare_calls()
            await bench.runtime_alone()
        figures = await _measure(bench, args.rounds, args.analyses)
        if args.profile or (median(figures.ratios()) > GOAL and not args.smoke):
            print(await _profile(bench, max(args.analyses, 100), args.top))
        return figures
    finally:
        await bench.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="a short run, for CI")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 15)")
    parser.add_argument("--analyses", type=int, default=None, help="analyses per round (30)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed analyses first (5)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the runtime")
    parser.add_argument("--top", type=int, default=20, help="profile lines to print")
    args = parser.parse_args(argv)
    # On a shared 2-core machine single rounds vary by +-15%: many rounds keep the median steady.
    args.rounds = args.rounds or (3 if args.smoke else 15)
    args.analyses = args.analyses or (3 if args.smoke else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)

    print(
        f"runtime CPU benchmark: {ANALYZER} on {TURNS} turns of long_technical_support, "
        f"{MODEL_TURNS} model turns per analysis, zero-latency fake in a child process; "
        f"{args.rounds} rounds x {args.analyses} analyses{' (smoke)' if args.smoke else ''}"
    )
    with fake_api_in_child_process(three_turns) as fake:
        figures = asyncio.run(_run(args, fake))

    def per_analysis(seconds: list[float]) -> list[float]:
        return [1000 * cpu / args.analyses for cpu in seconds]

    runtime, baseline = per_analysis(figures.runtime), per_analysis(figures.baseline)
    alone, ratios = per_analysis(figures.alone), figures.ratios()
    print("round  runtime ms  bare SDK ms  ratio  runtime alone ms")
    for index, row in enumerate(zip(runtime, baseline, ratios, alone, strict=True)):
        print(f"{index:>5}  {row[0]:>10.2f}  {row[1]:>11.2f}  {row[2]:>5.3f}  {row[3]:>16.2f}")
    ratio = median(ratios)
    print(
        f"median CPU per analysis: runtime {median(runtime):.2f} ms, bare SDK calls "
        f"{median(baseline):.2f} ms; the runtime alone (model replayed in-process) "
        f"{median(alone):.2f} ms"
    )
    print(
        f"median ratio runtime/bare SDK: {ratio:.3f} (goal: at most {GOAL}) -> "
        f"{verdict(ratio <= GOAL)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
