"""Which sinks a result goes to, for the outbox: the pure `routing_matches` of
`analyzers.definitions.routing`, on a result that has every output its analyzer declares.

Results recorded before every declared output was always present may lack some; they are filled
in here (empty), so `size(outputs.x) > 0` is false for them too instead of an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from analyzers.definitions.routing import routing_matches as _routing_matches
from schemas import AnalysisResult
from schemas.analyzer import SinkRoute


def routing_matches(sink: SinkRoute, result: AnalysisResult, declared: Sequence[str] = ()) -> bool:
    """Whether `sink` takes `result`: always without `when`; a failing expression raises
    `RoutingError` (an `ExpressionError`: the caller records it, so a broken route is not
    silent)."""
    missing = [name for name in declared if name not in result.outputs]
    if missing:
        outputs = {**result.outputs, **{name: [] for name in missing}}
        result = result.model_copy(update={"outputs": outputs})
    return _routing_matches(sink, result)
