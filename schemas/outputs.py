"""Output models of the built-in analyzers, usable by name from any analyzer file.

An analyzer output is either a JSON Schema written in the YAML file or `model: <name>` naming one
of these. Field descriptions are written for the model: they become the output-recording tool's
schema.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Text = Annotated[str, Field(min_length=1)]


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NextStep(_Output):
    """One thing a person on the ops team should do because of this conversation."""

    action: Text = Field(description="What to do, as an imperative sentence.")
    owner: Literal[
        "support", "billing", "field_ops", "sales", "engineering", "account_manager", "other"
    ] = Field(description="Which team should do it; `other` when none of these, naming it in team.")
    team: str = Field(
        default="",
        description="When owner is other (then required): the team that should act, in a few "
        "words (for example 'legal' or 'logistics partner'). Otherwise leave it empty.",
    )
    due: Literal["today", "within_48h", "this_week", "no_deadline"] = Field(
        description="How soon it should be done."
    )
    reason: Text = Field(description="Why, in one sentence a colleague understands.")

    @model_validator(mode="after")
    def _team_names_the_other_owner(self) -> NextStep:
        if self.owner == "other" and not self.team.strip():
            raise ValueError("team: name the team when owner is other")
        return self


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
    """Scores from 1 to 5, each anchored so two reviewers give the same number."""

    accuracy: int = Field(
        ge=1,
        le=5,
        description="Were the agent's statements and actions correct? 1: a wrong statement or "
        "action that harmed the customer or the company; 2: a wrong statement that mattered, "
        "not corrected; 3: minor errors, or one corrected; 4: correct, with a vague or hedged "
        "answer; 5: every statement and action correct and checkable.",
    )
    empathy: int = Field(
        ge=1,
        le=5,
        description="Did the agent acknowledge the customer's situation? 1: dismissive or rude; "
        "2: ignored clear frustration; 3: polite but scripted; 4: acknowledged the situation "
        "and adapted; 5: acknowledged, adapted tone and pace, and the customer said so.",
    )
    efficiency: int = Field(
        ge=1,
        le=5,
        description="Did it get there without detours? 1: went in circles or never got there; "
        "2: many repeated questions or dead ends; 3: some detours; 4: one small detour; "
        "5: the shortest reasonable path.",
    )
    policy_adherence: int = Field(
        ge=1,
        le=5,
        description="Did it follow the procedures listed in the brief (or, when none are "
        "listed, sound support practice)? 1: skipped a required step with consequences; "
        "2: skipped or reordered a required step; 3: followed them with a lapse that did not "
        "matter; 4: followed them, one optional step missed; 5: followed every step in order.",
    )


QualityAssessment.model_rebuild()

OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    "next_step": NextStep,
    "follow_up": FollowUp,
    "quality_assessment": QualityAssessment,
}
"""Output models an analyzer can name with `model:` instead of writing a JSON Schema."""
