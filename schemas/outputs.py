"""Output models of the built-in analyzers, usable by name from any analyzer file.

An analyzer output is either a JSON Schema written in the YAML file or `model: <name>` naming one
of these. Field descriptions are written for the model: they become the output-recording tool's
schema.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Text = Annotated[str, Field(min_length=1)]


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NextStep(_Output):
    """One thing a person on the ops team should do because of this conversation."""

    action: Text = Field(description="What to do, as an imperative sentence.")
    owner: Literal["support", "billing", "field_ops", "sales", "engineering", "account_manager"] = (
        Field(description="Which team should do it.")
    )
    due: Literal["today", "within_48h", "this_week", "no_deadline"] = Field(
        description="How soon it should be done."
    )
    reason: Text = Field(description="Why, in one sentence a colleague understands.")


class FollowUp(_Output):
    """A high-priority follow-up someone must act on, for a Slack notification."""

    priority: Literal["urgent", "high", "normal"] = Field(
        description="urgent: act within the hour (churn, legal, safety, outage); "
        "high: today; normal: when convenient."
    )
    reason: Text = Field(description="What happened and why it needs a person.")
    customer_ask: str = Field(default="", description="What the customer asked for, if anything.")
    suggested_action: Text = Field(description="The first thing the person should do.")


class QualityAssessment(_Output):
    """How well the agent handled the conversation."""

    resolution: Literal["resolved", "partially_resolved", "unresolved", "not_applicable"]
    success: Literal["success", "failure", "unknown"] = Field(
        description="Did the conversation achieve what the customer came for?"
    )
    rationale: Text = Field(description="Two or three sentences that justify the verdict.")
    customer_sentiment: Literal["positive", "neutral", "negative", "mixed"]
    sentiment_trend: Literal["improved", "stable", "worsened"]
    scores: QualityScores


class QualityScores(_Output):
    """Scores from 1 (poor) to 5 (excellent)."""

    accuracy: int = Field(ge=1, le=5, description="Were the agent's statements correct?")
    empathy: int = Field(ge=1, le=5, description="Did the agent acknowledge the customer?")
    efficiency: int = Field(ge=1, le=5, description="Did it get there without detours?")
    policy_adherence: int = Field(ge=1, le=5, description="Did it follow the procedures?")


QualityAssessment.model_rebuild()

OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    "next_step": NextStep,
    "follow_up": FollowUp,
    "quality_assessment": QualityAssessment,
}
"""Output models an analyzer can name with `model:` instead of writing a JSON Schema."""
