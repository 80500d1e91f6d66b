"""Which sinks a result goes to: each sink's `when` (CEL) evaluated over the result.

This is the one place routing is evaluated, so the pure `routing_matches(sink, result)` evaluator
the results work adds can replace `routing_matches` here in one edit. The variables are
`analyzers.definitions.checks.RESULT_VARIABLES`: `status`, `outputs` (every declared output is
present, empty when nothing was recorded), `conversation` (its ids), `usage`, `cost`, `error`,
`truncated`, and the run's ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analyzers.definitions.expressions import compile_expression
from schemas import AnalysisResult
from schemas.analyzer import SinkRoute


def result_variables(result: AnalysisResult, declared: Sequence[str] = ()) -> dict[str, Any]:
    """The values a `when` expression sees for `result`."""
    data = result.model_dump(mode="json")
    outputs: dict[str, Any] = {name: [] for name in declared}
    outputs.update(data["outputs"])
    return {
        "run_id": result.run_id,
        "analyzer": result.analyzer,
        "analyzer_version": result.analyzer_version,
        "status": result.status,
        "outputs": outputs,
        "conversation": {
            "conversation_id": result.conversation_id,
            "tenant_id": result.tenant_id or "",
        },
        "usage": data["usage"],
        "cost": data["cost"],
        "error": data["error"] or {},
        "truncated": result.truncated,
    }


def routing_matches(sink: SinkRoute, result: AnalysisResult, declared: Sequence[str] = ()) -> bool:
    """Whether `sink` takes `result`: always without `when`; a failing expression raises
    `ExpressionError` (the caller records it, so a broken route is not silent)."""
    if sink.when is None:
        return True
    return compile_expression(sink.when).holds(result_variables(result, declared))
