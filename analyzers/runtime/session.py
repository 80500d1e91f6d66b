"""The run loop: one procedural agent on one conversation, to an `AnalysisResult`.

The loop speaks to a `ModelClient` (always streaming, in the adapter), dispatches tool calls,
keeps the assistant content exactly as received (thinking blocks with their signatures), and
handles every stop reason explicitly. It knows nothing of Celery, databases or sinks.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from analyzers.errors import RunFailed
from analyzers.model.profiles import cost_of
from analyzers.model.protocol import ModelClient, ModelRequest, ModelTurn
from analyzers.runtime.output_tools import OutputRecorder, OutputTool, RecordOutputTool
from analyzers.runtime.prompt import ConversationView
from analyzers.tools.base import JSON, HttpTransport, ReadCoverage, Tool, ToolContext, ToolOutcome
from analyzers.tools.effects import EffectStore, InMemoryEffectStore, RunEffects
from analyzers.tools.stored_results import ResultsReader
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.result import ToolCallRecord
from schemas.usage import Cost, Usage

DEFAULT_MODEL = "claude-sonnet-5-5"
MAX_PAUSE_CONTINUATIONS = 3
MAX_CUTOFFS = 2
TOOL_RESULT_LIMIT = 20_000
"""Characters of one tool result sent back to the model; the trace keeps the whole output."""


@dataclass(frozen=True)
class RunOptions:
    """What a caller may set for one run besides the analyzer and the conversation."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    default_model: str = DEFAULT_MODEL
    http: HttpTransport | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)
    cache_ttl: str | None = None
    effects: EffectStore = field(default_factory=InMemoryEffectStore)
    """Where HTTP writes are recorded; the worker passes its ledger's, so a retry replays them."""
    results: ResultsReader | None = None
    """The ledger reads a standalone (`input: results`) analyzer's tools answer from; the worker
    passes one bounded to the run's selection."""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    monotonic: Callable[[], float] = time.monotonic
    price_factor: float = 1.0
    """What the model's turns cost relative to the standard price (0.5: Message Batches)."""


@dataclass
class StepContext:
    """The procedure step a tool call serves, for the trace."""

    procedure_name: str
    step_order: int


class ContextOverflow(Exception):
    """The model said the prompt no longer fits its context window."""


class Session:
    """The growing exchange with the model during one run, and everything it accumulates."""

    def __init__(
        self,
        spec: AnalyzerSpec,
        conversation: Conversation,
        *,
        model: ModelClient,
        system: list[JSON],
        tools: Sequence[Tool],
        allowed: set[str],
        aliases: Sequence[Tool] = (),
        recorder: OutputRecorder,
        coverage: ReadCoverage,
        options: RunOptions,
        view: ConversationView,
    ) -> None:
        self.spec = spec
        self.view = view
        self.conversation = conversation
        self.model = model
        self.model_id = spec.model.id or options.default_model
        self.system = system
        # Offered tools are sent to the model; aliases may be called but are not offered.
        self.tools = {tool.name: tool for tool in [*aliases, *tools]}
        self.tool_definitions = [tool.definition() for tool in sorted(tools, key=lambda t: t.name)]
        self.allowed = allowed
        self.recorder = recorder
        self.options = options
        self.context = ToolContext(
            conversation=conversation,
            coverage=coverage,
            http=options.http,
            secrets=options.secrets,
            effects=RunEffects(options.run_id, options.effects, dry_run=spec.dry_run),
            results=options.results,
        )
        self.messages: list[JSON] = []
        self.trace: list[ToolCallRecord] = []
        self.usage = Usage()
        self.model_turns = 0
        self.model_seconds = 0.0
        self.tool_seconds = 0.0
        self.deadline = options.monotonic() + spec.model.timeout_seconds
        self.step: StepContext | None = None

    @property
    def cost(self) -> Cost:
        """What the run has cost so far."""
        return cost_of(self.model_id, self.usage, self.options.price_factor)

    def prompt_hash(self) -> str:
        """Hash of the prompt as this analyzer's run began: tools, system and its first message.

        The first user message carries the analyzer's brief (instructions, procedures, outputs),
        so two analyzers on one conversation get different hashes. The system texts are hashed
        as they are (they are most of the bytes), the tool list and first message as sorted JSON.
        """
        digest = hashlib.sha256(json.dumps(self.tool_definitions, sort_keys=True).encode())
        for block in self.system:
            digest.update(b"\x00" + str(block.get("text", "")).encode())
        if self.messages:
            first = json.dumps(self.messages[0].get("content"), sort_keys=True, default=str)
            digest.update(b"\x01" + first.encode())
        return digest.hexdigest()

    async def converse(self, content: list[JSON]) -> ModelTurn:
        """Send a user message and let the model work (calling tools) until it ends its turn."""
        self.messages.append({"role": "user", "content": content})
        pauses = 0
        cutoffs = 0
        while True:
            turn = await self._call_model()
            self.messages.append({"role": "assistant", "content": turn.content})
            reason = turn.stop_reason
            if reason == "tool_use":
                results = await self._run_tool_uses(turn.tool_uses())
                self.messages.append({"role": "user", "content": results})
            elif reason in ("end_turn", "stop_sequence"):
                return turn
            elif reason == "pause_turn":
                # The API paused a long turn: send it back unchanged and let it continue.
                pauses += 1
                if pauses > MAX_PAUSE_CONTINUATIONS:
                    raise RunFailed("pause_limit", f"the model paused {pauses} times in one turn")
            elif reason == "max_tokens":
                cutoffs += 1
                if cutoffs > MAX_CUTOFFS:
                    raise RunFailed(
                        "max_tokens",
                        f"the model's answer was cut off at max_tokens "
                        f"({self.spec.model.max_tokens}) {cutoffs} times; raise model.max_tokens",
                    )
                self.messages.append({"role": "user", "content": await self._after_cutoff(turn)})
            elif reason == "refusal":
                details = turn.stop_details or {}
                raise RunFailed(
                    "model_refused",
                    f"the model refused (category {details.get('category')!r}): "
                    f"{details.get('explanation') or 'no explanation given'}",
                )
            elif reason == "model_context_window_exceeded":
                raise ContextOverflow
            else:  # pragma: no cover - the StopReason literal lists every value
                raise RunFailed("unknown_stop_reason", f"unknown stop reason {reason!r}")

    async def _after_cutoff(self, turn: ModelTurn) -> list[JSON]:
        # The last tool call of a cut-off turn may have truncated input that still parses:
        # never run it. Earlier calls in the same turn are complete and run normally.
        uses = turn.tool_uses()
        if not uses:
            return [
                _text(
                    "Your answer was cut off by the output limit. Continue where you "
                    "stopped, more briefly."
                )
            ]
        results = await self._run_tool_uses(uses[:-1])
        last = uses[-1]
        results.append(
            _tool_result(
                last["id"],
                "This call was cut off by the output limit and was not "
                "run. Call it again with a shorter input.",
                is_error=True,
            )
        )
        return results

    async def _call_model(self) -> ModelTurn:
        if self.model_turns >= self.spec.model.max_turns:
            raise RunFailed(
                "turn_limit",
                f"the run used its {self.spec.model.max_turns} model turns "
                "(model.max_turns) without finishing",
            )
        if self.options.monotonic() >= self.deadline:
            raise RunFailed(
                "deadline_exceeded",
                f"the run passed its deadline of {self.spec.model.timeout_seconds:g} s",
            )
        request = ModelRequest(
            model=self.model_id,
            max_tokens=self.spec.model.max_tokens,
            system=self.system,
            messages=_with_moving_breakpoint(self.messages),
            tools=self.tool_definitions,
            thinking=self.spec.model.thinking,
            effort=self.spec.model.effort,
            budget_tokens=self.spec.model.budget_tokens,
            deadline=self.deadline,
            idle_timeout=self.spec.model.idle_timeout_seconds,
        )
        turn = await self.model.complete(request)
        self.model_turns += 1
        self.model_seconds += turn.duration_s
        self.usage = self.usage + turn.usage
        limit = self.spec.model.max_cost_usd
        if limit is not None and self.cost.total_usd > limit:
            raise RunFailed(
                "cost_limit",
                f"the run cost ${self.cost.total_usd:.4f}, over its limit of ${limit:g} "
                "(model.max_cost_usd)",
            )
        return turn

    async def _run_tool_uses(self, uses: list[JSON]) -> list[JSON]:
        results = []
        for use in uses:
            outcome = await self.call_tool(use["name"], use.get("input") or {}, use["id"])
            results.append(_tool_result(use["id"], _as_text(outcome.output), outcome.is_error))
        budget = self.spec.model.max_output_retries
        if self.recorder.invalid_attempts > budget:
            raise RunFailed(
                "invalid_outputs",
                f"the model gave invalid output-tool input {self.recorder.invalid_attempts} "
                f"times (model.max_output_retries is {budget})",
            )
        return results

    async def call_tool(self, name: str, arguments: Any, tool_use_id: str | None) -> ToolOutcome:
        """Run one tool call, and trace it."""
        tool = self.tools.get(name)
        started_at = self.options.now()
        started = self.options.monotonic()
        if tool is None or name not in self.allowed:
            outcome = ToolOutcome(
                f"Tool {name!r} is not available to this analyzer; use only: "
                f"{sorted(self.allowed & {d['name'] for d in self.tool_definitions})}.",
                is_error=True,
            )
            kind = "builtin" if tool is None else tool.kind
        elif not isinstance(arguments, dict):
            outcome = ToolOutcome("Tool input must be a JSON object.", is_error=True)
            kind = tool.kind
        else:
            step = self.step
            self.context.procedure_step = (step.procedure_name, step.step_order) if step else None
            outcome = await tool.call(arguments, self.context)
            kind = tool.kind
        elapsed = self.options.monotonic() - started
        self.tool_seconds += elapsed
        self.trace.append(
            ToolCallRecord(
                tool_name=name,
                tool_use_id=tool_use_id,
                kind=kind,
                input=arguments if isinstance(arguments, dict) else {"input": arguments},
                output=outcome.output,
                succeeded=not outcome.is_error,
                error=_as_text(outcome.output) if outcome.is_error else None,
                duration_ms=elapsed * 1000,
                started_at=started_at,
                procedure_name=self.step.procedure_name if self.step else None,
                procedure_step_order=self.step.step_order if self.step else None,
                effect=outcome.effect,
            )
        )
        return outcome


def output_tools(spec: AnalyzerSpec, recorder: OutputRecorder) -> tuple[Tool, list[Tool]]:
    """`record_output` (offered), and the per-output `record_<name>` aliases (callable, not
    offered) of this analyzer's own outputs."""
    offered = RecordOutputTool(tuple(spec.outputs), recorder)
    return offered, [OutputTool(output, recorder) for output in spec.outputs]


def _with_moving_breakpoint(messages: list[JSON]) -> list[JSON]:
    # A cache breakpoint on the newest user block lets each turn of the tool loop read the
    # previous turns from the cache. Assistant content is never touched (thinking blocks must go
    # back unchanged), and the stored history stays clean: only the request carries it.
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        content = message["content"]
        if message["role"] != "user" or not isinstance(content, list) or not content:
            continue
        marked = [*content[:-1], {**content[-1], "cache_control": {"type": "ephemeral"}}]
        return [*messages[:position], {**message, "content": marked}, *messages[position + 1 :]]
    return messages


def _tool_result(tool_use_id: str, text: str, is_error: bool) -> JSON:
    block: JSON = {"type": "tool_result", "tool_use_id": tool_use_id, "content": text}
    if is_error:
        block["is_error"] = True
    return block


def _text(text: str) -> JSON:
    return {"type": "text", "text": text}


def _as_text(output: Any) -> str:
    text = (
        output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
    )
    if len(text) > TOOL_RESULT_LIMIT:
        return text[:TOOL_RESULT_LIMIT] + f"\n…(truncated: {len(text)} characters in all)"
    return text
