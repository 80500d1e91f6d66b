"""Errors of the analyzer runtime, grouped by who must act.

    AnalyzerError
    ├── ConfigError            fix the analyzer or procedure files
    ├── ModelError             the model call failed
    │   ├── TransientModelError    retry later: rate limit, overload, timeout, dropped stream
    │   └── PermanentModelError    the request itself is wrong: auth, bad request, refused model
    └── RunFailed              the run ended without valid outputs (budget spent, refusal, ...)

Messages are lower case, specific, and show the offending value with `!r`.
"""

from __future__ import annotations

from schemas.usage import Cost, Usage


class AnalyzerError(Exception):
    """Base of every error the analyzer runtime raises on purpose."""


class ConfigError(AnalyzerError):
    """An analyzer, procedure or tool definition is invalid: fix the file, a retry will not help."""


class ModelError(AnalyzerError):
    """A call to the model failed."""


class TransientModelError(ModelError):
    """A model call failed for a reason that may pass: retry the call or the run later.

    `retry_after` is the server's hint in seconds (from `retry-after-ms` or `retry-after`), if any.
    `usage` and `cost` are what the run had spent when it stopped: `analyzers.run` fills them in
    before the error leaves it, so an attempt that failed transiently is still billed in the
    ledger.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        usage: Usage | None = None,
        cost: Cost | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.usage = usage or Usage()
        self.cost = cost or Cost()


class PermanentModelError(ModelError):
    """The model will never accept this request as it is (bad request, auth, unknown model)."""


class RunFailed(AnalyzerError):
    """The run ended without the outputs it must produce. `reason` is a stable, short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
