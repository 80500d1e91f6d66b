"""Shared pydantic configuration for every contract model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """A model that crosses a boundary: strict about unknown fields, immutable once built.

    Unknown fields are an error here rather than silently dropped; the few models that must keep
    unknown input (a conversation from a platform we do not know yet) move it into `metadata`
    explicitly in their own validators.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
