"""`analyzers.run`, defined here: one analyzer on one conversation to an `AnalysisResult`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from analyzers.errors import PermanentModelError, RunFailed, TransientModelError
from analyzers.model.profiles import cost_of, profile_for
from analyzers.model.protocol import ModelClient, ModelRequest
from analyzers.procedures.matching import in_scope, procedure_applies
from analyzers.procedures.selection import Selection, select_procedures
from analyzers.procedures.tools import DecideConditionTool, ProvideParametersTool
from analyzers.runtime.output_plans import OutputPlan, model_needed, output_plans
from analyzers.runtime.output_tools import OutputRecorder
from analyzers.runtime.procedure_runner import ProcedureRunner
from analyzers.runtime.prompt import (
    FIRST_TURNS_KEPT,
    ConversationView,
    brief,
    estimate_tokens,
    render_conversation,
    system_blocks,
)
from analyzers.runtime.session import ContextOverflow, RunOptions, Session, output_tools
from analyzers.tools.base import JSON, ReadCoverage, Tool
from analyzers.tools.conversation import render_turn
from analyzers.tools.http import HttpToolRunner
from analyzers.tools.stored_results import named_tools
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from schemas.procedure_execution import ProcedureExecution
from schemas.result import AnalysisResult, Provenance, RecordedOutput, RunError, Timings

POSTHOC_VERSION = "0.1.0"
PROMPT_RESERVE_TOKENS = 24_000
"""Room left beside the conversation for instructions, tools and the agent's own tool loop."""
CHEAP_CHECK_SHARE = 0.5
"""Below this share of the limit (by a conservative estimate) tokens are not counted."""


async def run(
    spec: AnalyzerSpec,
    conversation: Conversation,
    *,
    model: ModelClient,
    procedures: Sequence[Procedure] = (),
    companions: Sequence[AnalyzerSpec] = (),
    options: RunOptions | None = None,
) -> AnalysisResult:
    """Run the procedural agent `spec` on `conversation` and return its result.

    `procedures` are the candidates for the names `spec` lists (the caller resolves them by
    tenant); which apply is decided by `analyzers.procedures.selection` (one cheap model call
    when only a trigger description can tell), and the result's `procedures` records, for every
    name, whether it applied, why, and what its steps did. `companions` are the other analyzers
    that will run on the same conversation; they no longer shape the prompt (no analyzer is
    offered another's tools: the shared prefix comes from one shared `record_output` tool), and
    the parameter stays for callers.

    A run that cannot succeed returns a `failed` result with the reason. Transient model
    failures (rate limits, overload, timeouts) raise `TransientModelError` so the caller can
    retry the run later.
    """
    options = options or RunOptions()
    started_at = options.now()
    # Every attempt made, in order: the result is the last one's, but all of them were billed.
    attempts: list[Session] = []
    error: RunError | None = None
    # Identifies the conversation's rendering (shared by its analyzers) and the result's
    # provenance: computed once.
    digest = conversation.content_hash()
    selection = await select_procedures(
        spec.procedures,
        conversation,
        procedures,
        model=model,
        model_id=spec.model.id or options.default_model,
        timeout_seconds=spec.model.timeout_seconds,
    )
    plans = output_plans(spec, conversation, procedures)
    if plans and not model_needed(spec, plans):
        # The event log decides everything (or there is nothing to judge): no model call.
        result = _result(spec, conversation, digest, [], selection, options, started_at, None)
        settled = {plan.output.name: [plan.settle([])] for plan in plans}
        return result.model_copy(update={"outputs": settled})
    runners: list[ProcedureRunner] = []
    # The second attempt only happens when the model reports that the prompt overflowed its
    # context window: it then reads a smaller window of the conversation.
    for keep_last in (None, max(len(conversation.turns) // 4, 8)):
        try:
            view = await _choose_view(spec, conversation, digest, model, options, keep_last)
            runners = []
            session = _open_session(
                spec, conversation, digest, model, companions, view, options, selection
            )
            attempts.append(session)
            await _drive(session, spec, conversation, procedures, selection, runners, plans)
        except ContextOverflow:
            error = RunError(
                type="context_window_exceeded",
                message="the prompt did not fit the model's context window, even with the "
                "conversation windowed",
            )
            continue
        except TransientModelError as exc:
            # The caller retries the run later; what its attempts (and the description check)
            # spent is billed all the same.
            exc.usage = sum((attempt.usage for attempt in attempts), selection.usage)
            exc.cost = cost_of(
                spec.model.id or options.default_model, exc.usage, options.price_factor
            )
            raise
        except RunFailed as exc:
            error = RunError(type=exc.reason, message=str(exc))
        except PermanentModelError as exc:
            error = RunError(type="model_error", message=str(exc))
        else:
            error = None
        break
    result = _result(spec, conversation, digest, attempts, selection, options, started_at, error)
    return result.model_copy(update={"procedures": _procedure_records(selection, runners)})


READ_THEN_RECORD = (
    "Start by reading the whole conversation above, its last turns and its event log included, "
    "and think about what it shows before you decide anything. Only then record your outputs, "
    "each item once, and end your turn with a one-line summary."
)
"""Closes the first message: reading comes before recording (a model asked for outputs first
tends to answer from the opening turns)."""

QUERY_THEN_RECORD = (
    "The message above describes the stored results you work over, not a conversation. Start "
    "by querying them with your tools (page through every result the task needs, and read a "
    "conversation when a result alone does not tell you enough). Only then record your "
    "outputs, each item once, and end your turn with a one-line summary."
)
"""Closes the first message of a standalone (`input: results`) analyzer."""


def _procedures_to_review(
    spec: AnalyzerSpec, conversation: Conversation, procedures: Sequence[Procedure]
) -> list[Procedure]:
    """For an analyzer that reviews the agent: the agent's procedures for this conversation,
    newest version of each, by name. Named in the event log (and in scope), or matched by
    scope, conditions or patterns (no model call: a review does not pay for the check)."""
    if not spec.review_procedures:
        return []
    named = {event.procedure_name for event in conversation.events if event.procedure_name}
    newest: dict[str, Procedure] = {}
    for procedure in procedures:
        named_here = procedure.name in named and in_scope(procedure, conversation) is None
        if named_here or procedure_applies(procedure, conversation).applies is True:
            known = newest.get(procedure.name)
            if known is None or procedure.version > known.version:
                newest[procedure.name] = procedure
    return [newest[name] for name in sorted(newest)]


def _procedure_records(
    selection: Selection, runners: Sequence[ProcedureRunner]
) -> list[ProcedureExecution]:
    """Every named procedure's record; a structured one that ran, with its steps."""
    ran = {runner.procedure.name: runner for runner in runners}
    return [
        ran[record.name].execution(record) if record.name in ran else record
        for record in selection.records
    ]


def _not_applying_note(spec: AnalyzerSpec, selection: Selection) -> str | None:
    """When the analyzer's own instructions name a procedure that does not apply, say so, so
    the brief does not tell the model to follow it."""
    named = [
        record
        for record in selection.records
        if not record.applies and record.name in spec.instructions
    ]
    if not named:
        return None
    lines = [f"- {record.name}: {record.reason}" for record in named]
    return (
        "These procedures named in your task do not apply to this conversation; do not "
        "follow them, and do not record anything as a result of them:\n" + "\n".join(lines)
    )


def _open_session(
    spec: AnalyzerSpec,
    conversation: Conversation,
    digest: str,
    model: ModelClient,
    companions: Sequence[AnalyzerSpec],
    view: ConversationView,
    options: RunOptions,
    selection: Selection,
) -> Session:
    recorder = OutputRecorder(spec.outputs, len(conversation.turns), len(conversation.events))
    coverage = ReadCoverage(len(conversation.turns))
    for shown in view.shown(len(conversation.turns)):
        if len(shown):
            coverage.mark(shown.start, shown.stop - 1)
    # Only what this analyzer may call is offered. The three built-ins (same readers, one
    # shared `record_output`) so send the same tool list, which starts the cached prefix; an
    # analyzer with HTTP tools or procedures has its own prefix.
    tools: dict[str, Tool] = {
        tool.name: tool for tool in named_tools([t for t in spec.tools if isinstance(t, str)])
    }
    for http_tool in spec.http_tools():
        tools[http_tool.name] = HttpToolRunner(http_tool)
    record, aliases = output_tools(spec, recorder)
    tools[record.name] = record
    if spec.procedures:
        structured = {p.name: p for p in selection.applied if p.form == "structured"}
        procedure_tools: list[Tool] = [ProvideParametersTool(structured), DecideConditionTool()]
        tools.update({tool.name: tool for tool in procedure_tools})
    allowed = {*tools, *(alias.name for alias in aliases)}
    text = render_conversation(conversation, view, content_hash=digest)
    system = system_blocks(text, cache_ttl=options.cache_ttl)
    return Session(
        spec,
        conversation,
        model=model,
        system=system,
        tools=list(tools.values()),
        allowed=allowed,
        recorder=recorder,
        coverage=coverage,
        options=options,
        view=view,
        aliases=aliases,
    )


async def _drive(
    session: Session,
    spec: AnalyzerSpec,
    conversation: Conversation,
    procedures: Sequence[Procedure],
    selection: Selection,
    runners: list[ProcedureRunner],
    plans: Sequence[OutputPlan] = (),
) -> None:
    chosen = selection.applied
    free_form = [p for p in chosen if p.form == "free_form"]
    structured = [p for p in chosen if p.form == "structured"]
    reviewed = _procedures_to_review(spec, conversation, procedures)
    task = brief(spec, free_form, structured, spec.tool_names(), reviewed=reviewed)
    pending: list[JSON] = [_text(task)]
    pending.extend(_text(plan.brief()) for plan in plans)
    note = _not_applying_note(spec, selection)
    if note is not None:
        pending.append(_text(note))
    for procedure in structured:
        runner = ProcedureRunner(session, procedure)
        runners.append(runner)
        pending = await runner.run(pending)
    pending.append(_text(QUERY_THEN_RECORD if spec.input == "results" else READ_THEN_RECORD))
    await session.converse(pending)
    for plan in plans:
        # The event log's decisions replace whatever the model said about them, and the output
        # exists even when the model recorded none.
        plan.settle_into(session.recorder)
    for _nudge in range(spec.model.max_nudges):
        missing = session.recorder.missing_required()
        if not missing:
            break
        names = ", ".join(output.tool_name for output in missing)
        await session.converse(
            [
                _text(
                    f"You have not recorded these required outputs yet: {names}. Record them "
                    "now; if the conversation does not let you tell, record them as unknown "
                    "with the reason."
                )
            ]
        )
    for plan in plans:
        plan.settle_into(session.recorder)  # a reminder's answer may have recorded it again
    missing = session.recorder.missing_required()
    if missing:
        raise RunFailed(
            "missing_outputs",
            f"the model ended without recording required output(s) "
            f"{[output.name for output in missing]} after {spec.model.max_nudges} reminder(s)",
        )


async def _choose_view(
    spec: AnalyzerSpec,
    conversation: Conversation,
    digest: str,
    model: ModelClient,
    options: RunOptions,
    keep_last: int | None,
) -> ConversationView:
    """Show the whole conversation when it fits; else its opening and as much of its end as fits.

    A conservative estimate decides cheaply for most conversations; near the limit the model's
    own token count decides.
    """
    turn_count = len(conversation.turns)
    if keep_last is not None:
        return _window(turn_count, keep_last)
    model_id = spec.model.id or options.default_model
    limit = spec.model.max_input_tokens or (
        profile_for(model_id).context_window - spec.model.max_tokens - PROMPT_RESERVE_TOKENS
    )
    whole = render_conversation(conversation, ConversationView(), content_hash=digest)
    if estimate_tokens(whole) <= limit * CHEAP_CHECK_SHARE:
        return ConversationView()
    counted = await model.count_tokens(
        ModelRequest(
            model=model_id,
            max_tokens=spec.model.max_tokens,
            system=[_text(whole)],
            messages=[{"role": "user", "content": "."}],
        )
    )
    if counted <= limit:
        return ConversationView()
    tokens_per_char = counted / max(len(whole), 1)
    turn_costs = [
        len(render_turn(index, turn)) * tokens_per_char + 1
        for index, turn in enumerate(conversation.turns)
    ]
    fixed = counted - sum(turn_costs)
    budget = limit - fixed - sum(turn_costs[:FIRST_TURNS_KEPT])
    kept = 0
    for cost in reversed(turn_costs[FIRST_TURNS_KEPT:]):
        if budget < cost:
            break
        budget -= cost
        kept += 1
    return _window(turn_count, max(kept, 1))


def _window(turn_count: int, keep_last: int) -> ConversationView:
    first = min(FIRST_TURNS_KEPT, turn_count)
    hidden_to = max(turn_count - keep_last, first)
    if hidden_to <= first:
        return ConversationView()
    return ConversationView(hidden_from=first, hidden_to=hidden_to)


def _result(
    spec: AnalyzerSpec,
    conversation: Conversation,
    digest: str,
    attempts: Sequence[Session],
    selection: Selection,
    options: RunOptions,
    started_at: datetime,
    error: RunError | None,
) -> AnalysisResult:
    model_id = spec.model.id or options.default_model
    session = attempts[-1] if attempts else None
    # Each attempt's spend counts once, the overflowing ones included (they were billed), and
    # so does the procedure description check when one was needed.
    usage = sum((attempt.usage for attempt in attempts), selection.usage)
    # Honest truncation: part of the conversation was left out of the prompt and the agent did
    # not read it through its tools either.
    truncated = bool(
        session is not None and session.view.windowed and not session.context.coverage.complete
    )
    return AnalysisResult(
        run_id=options.run_id,
        conversation_id=conversation.conversation_id,
        tenant_id=conversation.tenant_id,
        analyzer=spec.name,
        analyzer_version=spec.version,
        status="failed" if error else "succeeded",
        outputs=every_output(spec, session.recorder.recorded if session else {}),
        trace=[record for attempt in attempts for record in attempt.trace],
        usage=usage,
        cost=cost_of(model_id, usage, options.price_factor),
        model=model_id,
        model_turns=sum(attempt.model_turns for attempt in attempts) + selection.model_turns,
        timings=Timings(
            started_at=started_at,
            finished_at=options.now(),
            model_seconds=sum(attempt.model_seconds for attempt in attempts),
            tool_seconds=sum(attempt.tool_seconds for attempt in attempts),
        ),
        truncated=truncated,
        error=error,
        provenance=Provenance(
            analyzer_version=spec.version,
            model=model_id,
            prompt_hash=session.prompt_hash() if session else None,
            transcript_hash=digest,
            posthoc_version=POSTHOC_VERSION,
        ),
    )


def _text(text: str) -> JSON:
    return {"type": "text", "text": text}


def every_output(
    spec: AnalyzerSpec, recorded: Mapping[str, Sequence[RecordedOutput]]
) -> dict[str, list[RecordedOutput]]:
    """Every output the analyzer declares, in its order, each a list (empty when nothing was
    recorded), so routing conditions such as `size(outputs.x) > 0` never meet a missing key."""
    return {output.name: list(recorded.get(output.name, ())) for output in spec.outputs}
