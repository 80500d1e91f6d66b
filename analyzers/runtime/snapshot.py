"""Building an `AnalyzerSnapshot` at record time. Pure: no I/O, no clock, no model.

Decisions (documented in `docs/architecture.md` too):

- **Procedures** are resolved per name the analyzer lists: the newest version that is approved
  and in scope for the conversation's tenant and agent. That version is frozen in the snapshot;
  a newer version loaded later changes nothing for the run. Whether its trigger matches is still
  decided when the run executes, on the frozen version.
- **The agent's procedures**: an analyzer with an `adherence` or `procedure_candidate` output
  also freezes the agent's active procedures (approved, visible to its tenant and agent, newest
  version per name), so the run audits against, and records, the version in force when it was
  recorded.
- **The brief** depends on which procedures apply to the conversation, so it is rendered for the
  conversation version the run is recorded for, with the procedures whose trigger matches it
  then without a model (scope, conditions, event log, patterns). One that only its trigger
  description can decide is decided by the model when the run executes; the result's
  `procedures` records what applied and why. Snapshots are content-addressed, so every
  conversation with the same applicable procedures shares one stored snapshot (one per analyzer
  version in the common case).
- **Tool definitions** are those of the tools the analyzer may call, its output tools and (when
  it follows procedures) the procedure tools, exactly as the runtime renders them, sorted by name.
  Companions' tools, listed for the shared cache prefix but not callable, are not part of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from analyzers.procedures.matching import in_scope, procedure_applies
from analyzers.procedures.tools import DecideConditionTool, ProvideParametersTool
from analyzers.runtime.adherence_support import adherence_output, agent_procedures_for_snapshot
from analyzers.runtime.capture_support import candidate_output
from analyzers.runtime.output_tools import OutputTool
from analyzers.runtime.prompt import brief
from analyzers.tools.base import JSON, Tool
from analyzers.tools.http import HttpToolRunner
from analyzers.tools.stored_results import named_tools
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from schemas.snapshot import AnalyzerSnapshot


def build_snapshot(
    spec: AnalyzerSpec, conversation: Conversation, procedures: Sequence[Procedure]
) -> AnalyzerSnapshot:
    """The snapshot of `spec` for a run on `conversation`; `procedures` is the whole catalog."""
    resolved = resolve_procedures(spec, conversation, procedures)
    return AnalyzerSnapshot(
        spec=spec,
        procedures=resolved,
        brief=render_brief(spec, conversation, resolved),
        tool_definitions=tool_definitions(spec),
    )


class SnapshotCache:
    """`build_snapshot` for a process that records many runs of the same analyzers.

    A snapshot depends on the conversation only through which procedures resolve for it and
    which of those apply; everything else (the brief, the tool definitions) is rendered from
    those and the spec. So snapshots are kept by (spec, resolved procedures, applicable ones),
    and a conversation that resolves to the same objects gets the same snapshot object, built
    and hashed once, instead of the half millisecond each takes. Keys are object identities:
    each entry holds the objects it is keyed on, so no id is reused while it is cached.
    """

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._built: dict[tuple[int, ...], tuple[AnalyzerSnapshot, tuple[object, ...]]] = {}

    def build(
        self, spec: AnalyzerSpec, conversation: Conversation, procedures: Sequence[Procedure]
    ) -> AnalyzerSnapshot:
        """The snapshot `build_snapshot` would build (equal to it), shared where it can be."""
        resolved = resolve_procedures(spec, conversation, procedures)
        applicable = _applicable(spec, conversation, resolved)
        key = (id(spec), *map(id, resolved), -1, *map(id, applicable))
        found = self._built.get(key)
        if found is not None:
            return found[0]
        snapshot = AnalyzerSnapshot(
            spec=spec,
            procedures=resolved,
            brief=_brief_for(spec, applicable),
            tool_definitions=tool_definitions(spec),
        )
        if len(self._built) >= self._limit:
            self._built.clear()  # rare: many procedure combinations; start again
        self._built[key] = (snapshot, (spec, *resolved))
        return snapshot


def resolve_procedures(
    spec: AnalyzerSpec, conversation: Conversation, procedures: Sequence[Procedure]
) -> list[Procedure]:
    """For each procedure name of `spec`, in its order, the newest version in scope; then, for
    an analyzer that audits or learns the agent's procedures (an `adherence` or
    `procedure_candidate` output), the agent's active procedures, frozen like the others."""
    resolved = []
    for name in spec.procedures:
        candidates = [p for p in procedures if p.name == name and _in_scope(p, conversation)]
        if candidates:
            resolved.append(max(candidates, key=lambda p: p.version))
    if adherence_output(spec) is not None or candidate_output(spec) is not None:
        taken = {(p.name, p.version, p.tenant_id, p.agent_id) for p in resolved}
        resolved += [
            p
            for p in agent_procedures_for_snapshot(conversation, procedures)
            if (p.name, p.version, p.tenant_id, p.agent_id) not in taken
        ]
    return resolved


def render_brief(
    spec: AnalyzerSpec, conversation: Conversation, resolved: Sequence[Procedure]
) -> str:
    """The brief the runtime renders for this conversation from these (frozen) procedures."""
    return _brief_for(spec, _applicable(spec, conversation, resolved))


def _applicable(
    spec: AnalyzerSpec, conversation: Conversation, resolved: Sequence[Procedure]
) -> list[Procedure]:
    # Only the procedures the analyzer follows itself; the agent's (audited) ones are not its.
    return [
        p
        for p in resolved
        if p.name in spec.procedures and procedure_applies(p, conversation).applies is True
    ]


def _brief_for(spec: AnalyzerSpec, applicable: Sequence[Procedure]) -> str:
    return brief(
        spec,
        [p for p in applicable if p.form == "free_form"],
        [p for p in applicable if p.form == "structured"],
        spec.tool_names(),
    )


def tool_definitions(spec: AnalyzerSpec) -> list[JSON]:
    """The definitions of every tool `spec` may call, sorted by name."""
    tools: list[Tool] = [
        *named_tools([t for t in spec.tools if isinstance(t, str)]),
        *(HttpToolRunner(http_tool) for http_tool in spec.http_tools()),
        *(OutputTool(output, None) for output in spec.outputs),
    ]
    if spec.procedures:
        tools += [ProvideParametersTool(), DecideConditionTool()]
    return [tool.definition() for tool in sorted(tools, key=lambda tool: tool.name)]


def _in_scope(procedure: Procedure, conversation: Conversation) -> bool:
    # The scope part of matching (approval, tenant, owner agent), without the trigger: the
    # trigger is judged on the frozen version when the run executes.
    return in_scope(procedure, conversation) is None
