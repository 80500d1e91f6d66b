"""The procedural-agent runtime and the built-in analyzers.

`run(spec, conversation, model=...)` runs one analyzer on one conversation and returns an
`AnalysisResult`. It knows nothing of queues, databases or sinks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analyzers.runtime.analysis import run
    from analyzers.runtime.session import RunOptions

__all__ = ["RunOptions", "run"]


def __getattr__(name: str) -> Any:
    # Imported on first use so that `analyzers.definitions.checks` (used by `posthoc validate`)
    # does not pay for the runtime and the model adapter.
    if name == "run":
        from analyzers.runtime.analysis import run  # noqa: PLC0415 - deferred on purpose, see above

        return run
    if name == "RunOptions":
        from analyzers.runtime.session import RunOptions  # noqa: PLC0415 - deferred on purpose

        return RunOptions
    raise AttributeError(f"module 'analyzers' has no attribute {name!r}")
