"""Chaining (`after:`): whether a finished run starts a child analyzer, and what the child is
told of its parent. Pure functions.

The child's `when` reads the parent's result like a sink's `when` (`status`, `outputs`,
`conversation`); the parent's outputs go into the child's instructions as JSON, so they are in
the child's brief and frozen in its snapshot with everything else it runs with.
"""

from __future__ import annotations

import json

from analyzers.definitions.expressions import ExpressionError, compile_expression
from analyzers.definitions.routing import result_variables
from analyzers.definitions.triggers import Decision, analyzer_applies
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.result import AnalysisResult

PARENT_OUTPUTS_HEADING = "## What the analyzer before you found"
MAX_PARENT_OUTPUT_CHARS = 20_000


def chained_after(parent: str, analyzers: list[AnalyzerSpec]) -> list[AnalyzerSpec]:
    """The analyzers that run after `parent`, by name order."""
    return sorted(
        (spec for spec in analyzers if spec.after is not None and spec.after.analyzer == parent),
        key=lambda spec: spec.name,
    )


def child_applies(
    child: AnalyzerSpec, parent: AnalysisResult, conversation: Conversation
) -> Decision:
    """Whether `child` runs after this parent result: the parent succeeded, the child's `when`
    holds on the parent's result, and the child's own trigger matches the conversation."""
    if child.after is None or child.after.analyzer != parent.analyzer:
        return Decision(False, f"{child.name} does not run after {parent.analyzer}")
    if parent.status != "succeeded":
        return Decision(False, f"{parent.analyzer} did not succeed ({parent.status})")
    if child.after.when is not None:
        try:
            holds = compile_expression(child.after.when).holds(
                result_variables(parent, conversation)
            )
        except ExpressionError as exc:
            return Decision(False, f"after.when could not be evaluated: {exc}")
        if not holds:
            return Decision(False, f"after.when is false: {child.after.when}")
    return analyzer_applies(child, conversation)


def with_parent_outputs(child: AnalyzerSpec, parent: AnalysisResult) -> AnalyzerSpec:
    """The child with its parent's outputs appended to its instructions."""
    outputs = {
        name: [value.model_dump(mode="json", exclude_defaults=True) for value in values]
        for name, values in parent.outputs.items()
    }
    text = json.dumps(outputs, indent=1, sort_keys=True, ensure_ascii=False)
    if len(text) > MAX_PARENT_OUTPUT_CHARS:
        text = text[:MAX_PARENT_OUTPUT_CHARS] + "\n... (cut)"
    section = (
        f"\n\n{PARENT_OUTPUTS_HEADING} ({parent.analyzer} {parent.analyzer_version}, "
        f"run {parent.run_id})\n\n```json\n{text}\n```"
    )
    return child.model_copy(update={"instructions": child.instructions + section})
