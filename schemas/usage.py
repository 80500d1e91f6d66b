"""Token usage and cost: what one model call, or a whole run, consumed."""

from __future__ import annotations

from pydantic import Field, NonNegativeInt, model_validator

from schemas._base import Contract


class Usage(Contract):
    """Tokens billed by the model provider.

    `input_tokens` counts only the uncached remainder of the prompt, as the Messages API reports
    it; the whole prompt is `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`.
    `cache_creation_1h_input_tokens` is the part of the cache writes made with a 1-hour lifetime
    (the API's `cache_creation.ephemeral_1h_input_tokens`): they are billed at a higher rate than
    5-minute writes.
    """

    input_tokens: NonNegativeInt = 0
    output_tokens: NonNegativeInt = 0
    cache_creation_input_tokens: NonNegativeInt = 0
    cache_read_input_tokens: NonNegativeInt = 0
    cache_creation_1h_input_tokens: NonNegativeInt = Field(
        default=0, description="Of cache_creation_input_tokens, those written with a 1-hour TTL."
    )

    @model_validator(mode="after")
    def _one_hour_writes_are_writes(self) -> Usage:
        if self.cache_creation_1h_input_tokens > self.cache_creation_input_tokens:
            raise ValueError(
                f"cache_creation_1h_input_tokens ({self.cache_creation_1h_input_tokens}) exceeds "
                f"cache_creation_input_tokens ({self.cache_creation_input_tokens})"
            )
        return self

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, cached or not."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=(
                self.cache_creation_input_tokens + other.cache_creation_input_tokens
            ),
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_1h_input_tokens=(
                self.cache_creation_1h_input_tokens + other.cache_creation_1h_input_tokens
            ),
        )


class Cost(Contract):
    """What a run cost in US dollars, split the way the provider bills it."""

    input_usd: float = Field(default=0.0, ge=0)
    output_usd: float = Field(default=0.0, ge=0)
    cache_write_usd: float = Field(default=0.0, ge=0)
    cache_read_usd: float = Field(default=0.0, ge=0)

    @property
    def total_usd(self) -> float:
        """The whole bill."""
        return self.input_usd + self.output_usd + self.cache_write_usd + self.cache_read_usd
