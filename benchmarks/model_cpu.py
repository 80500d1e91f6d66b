"""CPU per model call: the model adapter and `posthoc run`, against the raw-HTTP floor (goal: at
most 2.5x the floor for both).

The calls are the three a `follow_ups` analysis makes on the first 60 turns of
`examples/conversations/long_technical_support.json` (the `benchmarks/runtime.py` scenario: a
zero-latency fake Messages API in a spawned child process, so its CPU counts on no side;
thinking + `get_turns`, thinking + `record_output`, a closing text). Sides, all in this process:

- floor: `benchmarks._common.raw_http_model_call`, one keep-alive `httpx2` POST of the adapter's
  exact body bytes per call with the SSE `data:` lines parsed, nothing else;
- adapter: `AnthropicModel.complete(request)` built as the worker builds it
  (`build_anthropic_model`), the same requests;
- bare SDK: `client.messages.stream(...)` + `get_final_message()` of the same body (what the
  adapter cost before it read the raw stream), for reference;
- `posthoc run`: the CLI's batch (`execute_batch`: intake, the embedded SQLite ledger, the
  engine, the runtime, the adapter) in this process, per model call, start-up excluded: the
  CPU of a batch of 2N conversations minus that of N, over 3N calls.

Before timing, the fake's body digests prove the floor, the adapter and the bare SDK send
byte-identical bodies. Each round alternates the order of the sides; figures are medians over
rounds of CPU(side) / CPU(floor) in the same round.

    python benchmarks/model_cpu.py [--smoke] [--rounds R] [--analyses N] [--batch N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anthropic
import httpx2
from rich.console import Console

import analyzers
from analyzers.model.anthropic import AnthropicModel, build_anthropic_model, stream_body
from analyzers.model.protocol import ModelClient, ModelRequest, ModelTurn
from analyzers.runtime.session import RunOptions
from benchmarks._common import (
    RemoteFakeAPI,
    builtin_analyzers,
    example_conversation,
    fake_api_in_child_process,
    first_turns,
    floor_headers,
    median,
    raw_http_model_call,
    verdict,
)
from benchmarks.runtime import ANALYZER, MODEL_TURNS, TURNS, three_turns
from worker.cli.commands import load_catalog, load_settings
from worker.cli.run_batch import EXIT_OK, execute_batch

GOAL = 2.5
API_KEY = "benchmark"


@dataclass
class Recording:
    """A `ModelClient` that passes calls through and keeps the requests."""

    inner: ModelClient
    requests: list[ModelRequest] = field(default_factory=list)

    async def complete(self, request: ModelRequest) -> ModelTurn:
        self.requests.append(request)
        return await self.inner.complete(request)

    async def count_tokens(self, request: ModelRequest) -> int:
        return await self.inner.count_tokens(request)


class Calls:
    """The three calls of one analysis, made by each side."""

    def __init__(self, fake: RemoteFakeAPI) -> None:
        self.fake = fake
        self.url = fake.base_url.rstrip("/") + "/v1/messages"
        self.model: AnthropicModel = build_anthropic_model(API_KEY, fake.base_url)
        self.sdk = anthropic.AsyncAnthropic(
            api_key=API_KEY,
            base_url=fake.base_url,
            max_retries=0,
            timeout=anthropic.Timeout(600.0, connect=5.0),
        )
        self.http = httpx2.AsyncClient(timeout=600.0)
        self.headers = floor_headers(API_KEY)
        self.requests: list[ModelRequest] = []
        self.bodies: list[bytes] = []

    async def aclose(self) -> None:
        await self.model.aclose()
        await self.sdk.close()
        await self.http.aclose()

    async def capture(self) -> None:
        """Run one analysis through the adapter and keep its requests."""
        specs = builtin_analyzers()
        recording = Recording(self.model)
        result = await analyzers.run(
            specs[ANALYZER],
            first_turns(example_conversation("long_technical_support"), TURNS),
            model=recording,
            companions=[spec for name, spec in specs.items() if name != ANALYZER],
            options=RunOptions(),
        )
        if result.status != "succeeded" or len(recording.requests) != MODEL_TURNS:
            raise RuntimeError(f"expected {MODEL_TURNS} calls, got {len(recording.requests)}")
        self.requests = recording.requests
        self.bodies = [stream_body(request) for request in self.requests]

    async def floor(self) -> None:
        for body in self.bodies:
            await raw_http_model_call(self.http, self.url, body, self.headers)

    async def adapter(self) -> None:
        for request in self.requests:
            await self.model.complete(request)

    async def bare_sdk(self) -> None:
        for body in self.bodies:
            params = json.loads(body)
            del params["stream"]  # the SDK adds it itself, last, as in the adapter's body
            async with self.sdk.messages.stream(**params) as stream:
                await stream.get_final_message()

    async def check_identical_bodies(self) -> list[str]:
        digests = []
        for side in (self.floor, self.adapter, self.bare_sdk):
            self.fake.reset()
            await side()
            digests.append(self.fake.body_digests())
        if not digests[0] == digests[1] == digests[2]:
            raise RuntimeError(f"the sides sent different bodies: {digests}")
        self.fake.reset()
        return digests[0]


async def _cpu_of(work: Callable[[], Awaitable[None]], times: int) -> float:
    gc.collect()
    started = time.process_time()
    for _ in range(times):
        await work()
    return time.process_time() - started


@dataclass
class Figures:
    """CPU seconds per round of each side (the `posthoc run` figure is per model call)."""

    floor: list[float] = field(default_factory=list)
    adapter: list[float] = field(default_factory=list)
    bare_sdk: list[float] = field(default_factory=list)
    run_per_call: list[float] = field(default_factory=list)
    floor_per_call: list[float] = field(default_factory=list)


async def _measure_calls(calls: Calls, args: argparse.Namespace, figures: Figures) -> None:
    await calls.capture()
    digests = await calls.check_identical_bodies()
    sizes = [len(body) for body in calls.bodies]
    print(
        f"calls per analysis: {len(digests)}, bodies of {sizes} bytes, byte-identical on all "
        f"sides (sha256 {', '.join(d[:8] for d in digests)})"
    )
    sides = [
        (figures.floor, calls.floor),
        (figures.adapter, calls.adapter),
        (figures.bare_sdk, calls.bare_sdk),
    ]
    for _ in range(args.warmup):
        for _, work in sides:
            await work()
    for round_number in range(args.rounds):
        calls.fake.reset()
        ordered = sides[round_number % 3 :] + sides[: round_number % 3]
        for into, work in ordered:
            into.append(await _cpu_of(work, args.analyses))


# -- `posthoc run` ------------------------------------------------------------------------------


def _write_conversations(folder: Path, count: int) -> list[Path]:
    conversation = first_turns(example_conversation("long_technical_support"), TURNS)
    data = conversation.model_dump(mode="json")
    paths = []
    for number in range(count):
        path = folder / f"conversation-{number}.json"
        path.write_text(json.dumps({**data, "conversation_id": f"bench-{number}"}))
        paths.append(path)
    return paths


def _batch_cpu(base_url: str, folder: Path, inputs: list[Path], name: str) -> float:
    """CPU seconds of one `posthoc run --analyzer follow_ups --no-deliver` over `inputs` on a
    fresh embedded ledger; the model is built (8 SDK clients) before the clock starts."""
    # As the CLI loads them (warnings only: the progress bar and summary say what happened).
    settings = load_settings(quiet=True).model_copy(
        update={"database_url": f"sqlite:///{folder / name}.sqlite3"}
    )
    catalog = load_catalog(settings)
    model = build_anthropic_model(API_KEY, base_url)
    gc.collect()
    started = time.process_time()
    code = execute_batch(
        settings=settings,
        catalog=catalog,
        model=model,
        http=None,
        inputs=inputs,
        analyzer_names=[ANALYZER],
        out=None,
        concurrency=settings.concurrency,
        console=Console(file=io.StringIO()),
        deliver=False,
    )
    cpu = time.process_time() - started
    if code != EXIT_OK:
        raise RuntimeError(f"posthoc run exited with {code}")
    return cpu


def _measure_run(fake: RemoteFakeAPI, args: argparse.Namespace, figures: Figures) -> None:
    with tempfile.TemporaryDirectory(prefix="posthoc-model-cpu-") as tmp:
        folder = Path(tmp)
        inputs = _write_conversations(folder, 2 * args.batch)
        if not args.smoke:  # first-use costs (lazy imports, caches) out of the first round
            _batch_cpu(fake.base_url, folder, inputs[:1], "warmup")
        for round_number in range(args.rounds):
            fake.reset()
            small = _batch_cpu(fake.base_url, folder, inputs[: args.batch], f"s{round_number}")
            large = _batch_cpu(fake.base_url, folder, inputs, f"l{round_number}")
            figures.run_per_call.append((large - small) / (args.batch * MODEL_TURNS))
            floor = asyncio.run(_floor_alone(fake, args.analyses))
            figures.floor_per_call.append(floor)


async def _floor_alone(fake: RemoteFakeAPI, analyses: int) -> float:
    """The floor's CPU per call, measured beside each `posthoc run` round."""
    calls = Calls(fake)
    try:
        await calls.capture()
        await calls.floor()
        cpu = await _cpu_of(calls.floor, analyses)
        return cpu / (analyses * MODEL_TURNS)
    finally:
        await calls.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="a short run, for CI")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 9)")
    parser.add_argument("--analyses", type=int, default=None, help="analyses per round (30)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed analyses first (5)")
    parser.add_argument("--batch", type=int, default=None, help="posthoc run batch N (20)")
    args = parser.parse_args(argv)
    # The smoke run (CI) only proves the benchmark runs: its figures are not meaningful.
    args.rounds = args.rounds or (1 if args.smoke else 9)
    args.analyses = args.analyses or (2 if args.smoke else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    args.batch = args.batch or (1 if args.smoke else 20)

    print(
        f"model CPU benchmark: {ANALYZER} on {TURNS} turns, {MODEL_TURNS} calls per analysis, "
        f"zero-latency fake in a child process; {args.rounds} rounds x {args.analyses} analyses, "
        f"posthoc run batches of {args.batch} and {2 * args.batch}"
        f"{' (smoke)' if args.smoke else ''}"
    )
    figures = Figures()
    with fake_api_in_child_process(three_turns) as fake:
        calls_loop_figures = asyncio.run(_calls(fake, args, figures))
        _measure_run(fake, args, calls_loop_figures)

    calls = args.analyses * MODEL_TURNS

    def per_call(seconds: list[float]) -> list[float]:
        return [1000 * cpu / calls for cpu in seconds]

    floor, adapter, bare = (
        per_call(figures.floor),
        per_call(figures.adapter),
        per_call(figures.bare_sdk),
    )
    adapter_ratios = [a / f for a, f in zip(adapter, floor, strict=True)]
    sdk_ratios = [b / f for b, f in zip(bare, floor, strict=True)]
    print("round  floor ms  adapter ms  bare SDK ms  adapter/floor  bare SDK/floor")
    for index, row in enumerate(zip(floor, adapter, bare, adapter_ratios, sdk_ratios, strict=True)):
        print(
            f"{index:>5}  {row[0]:>8.3f}  {row[1]:>10.3f}  {row[2]:>11.3f}  {row[3]:>13.2f}  "
            f"{row[4]:>14.2f}"
        )
    run_ms = [1000 * cpu for cpu in figures.run_per_call]
    run_floor = [1000 * cpu for cpu in figures.floor_per_call]
    run_ratios = [r / f for r, f in zip(run_ms, run_floor, strict=True)]
    print("round  posthoc run ms/call  floor ms/call  ratio")
    for index, (run, run_floor_ms, ratio) in enumerate(
        zip(run_ms, run_floor, run_ratios, strict=True)
    ):
        print(f"{index:>5}  {run:>19.3f}  {run_floor_ms:>13.3f}  {ratio:>5.2f}")
    adapter_ratio, run_ratio = median(adapter_ratios), median(run_ratios)

    def judged(met: bool) -> str:
        return "smoke run, too small to judge" if args.smoke else verdict(met)

    print(
        f"median CPU per model call: floor {median(floor):.3f} ms, adapter {median(adapter):.3f} "
        f"ms, bare SDK stream {median(bare):.3f} ms, posthoc run {median(run_ms):.3f} ms"
    )
    print(
        f"median ratio adapter/floor: {adapter_ratio:.2f} (goal: at most {GOAL}) -> "
        f"{judged(adapter_ratio <= GOAL)}; bare SDK/floor: {median(sdk_ratios):.2f}"
    )
    print(
        f"median ratio posthoc run/floor per model call: {run_ratio:.2f} (goal: at most {GOAL}) "
        f"-> {judged(run_ratio <= GOAL)}"
    )
    return 0


async def _calls(fake: RemoteFakeAPI, args: argparse.Namespace, figures: Figures) -> Figures:
    calls = Calls(fake)
    try:
        await _measure_calls(calls, args, figures)
    finally:
        await calls.aclose()
    return figures


if __name__ == "__main__":
    sys.exit(main())
