"""Sink routing: whether a result goes to a sink, decided by the sink's CEL `when`. Pure.

The expression sees the result the way a reader of the JSON does: `status`, `outputs` (every
declared output, a list, empty when nothing was recorded), `usage`, `cost`, `error`,
`truncated`, and `conversation` when the caller passes it. Because every declared output is
present, `size(outputs.next_step) > 0` on a run that found nothing is simply false.
"""

from __future__ import annotations

from typing import Any

from analyzers.definitions.checks import RESULT_VARIABLES
from analyzers.definitions.expressions import (
    ExpressionError,
    compile_expression,
    conversation_variables,
)
from schemas.analyzer import SinkRoute
from schemas.conversation import Conversation
from schemas.result import AnalysisResult


class RoutingError(ExpressionError):
    """A sink's `when` could not be evaluated against a result (not the same as false)."""


def result_variables(
    result: AnalysisResult, conversation: Conversation | None = None
) -> dict[str, Any]:
    """What a sink's `when` reads about `result` (and its conversation, when given)."""
    data = result.model_dump(mode="json")
    variables = {name: data.get(name) for name in RESULT_VARIABLES if name in data}
    # Without the conversation, its ids are still known from the result itself.
    variables["conversation"] = (
        conversation_variables(conversation)
        if conversation is not None
        else {"conversation_id": result.conversation_id, "tenant_id": result.tenant_id or ""}
    )
    # A run that did not fail has no error: an empty map, so `error.type` reads as absent
    # rather than failing on null.
    variables["error"] = data.get("error") or {}
    return variables


def routing_matches(
    sink: SinkRoute, result: AnalysisResult, conversation: Conversation | None = None
) -> bool:
    """Whether `result` goes to `sink`: always when it has no `when`, else its CEL verdict.

    Raises `RoutingError`, naming the sink and the expression, when the condition cannot be
    evaluated (for example it indexes `outputs.x[0]` of an empty output without checking its
    size first): a broken rule is reported, never taken as a silent "no".
    """
    if sink.when is None:
        return True
    try:
        return compile_expression(sink.when).holds(result_variables(result, conversation))
    except ExpressionError as exc:
        raise RoutingError(f"{sink.type} sink: {exc}") from exc
