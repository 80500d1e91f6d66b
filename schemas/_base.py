"""Shared pydantic configuration for every contract model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """A model that crosses a boundary: strict about unknown fields, immutable once built.

    Unknown fields are an error here rather than silently dropped; the few models that must keep
    unknown input (a conversation from a platform we do not know yet) move it into `metadata`
    explicitly in their own validators. Fields spelled differently in files (`if`, `schema`)
    are written back under that spelling, so a dump validates again.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )
