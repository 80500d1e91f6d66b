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


StepStatus = Literal[
    "done",
    "done_out_of_order",
    "wrong_parameters",
    "skipped",
    "skipped_condition_false",
    "not_verifiable",
]
"""What the agent did with one procedure step (see `analyzers.procedures.adherence`)."""


class StepVerdict(_Output):
    """One step of the agent's procedure and what the agent did with it."""

    step: str = Field(
        max_length=16,
        description="The step's position in the procedure: '3', or '3.1' for the first step "
        "nested in step 3.",
    )
    kind: Literal["instruction", "tool", "if"] = Field(description="The step's kind.")
    status: StepStatus = Field(
        description="done; done_out_of_order (done, but before an earlier step); "
        "wrong_parameters; skipped; skipped_condition_false (its condition did not hold, so it "
        "was rightly not done; for an `if` step: the condition did not hold); not_verifiable "
        "(the conversation does not let you tell)."
    )
    event_index: int | None = Field(
        default=None, ge=0, description="The event (0-based) that shows the step done, if any."
    )
    evidence_turns: list[int] = Field(
        default_factory=list, description="The turns (0-based) your status rests on."
    )
    note: str = Field(default="", max_length=2000, description="Why, in one sentence.")


class Adherence(_Output):
    """Whether the agent followed its procedure, step by step.

    The runtime fills `procedure`, `procedure_version`, `verdict` and `score`, and decides every
    tool step and every `if` with an expression from the event log; the model's statuses for
    those are replaced. The model records only the steps it is asked to judge.
    """

    procedure: str = Field(default="", description="Filled by the runtime.")
    procedure_version: int | None = Field(default=None, description="Filled by the runtime.")
    verdict: Literal["followed", "deviated", "not_applicable", "unknown"] = Field(
        default="unknown", description="Filled by the runtime."
    )
    score: float = Field(default=0.0, ge=0.0, le=1.0, description="Filled by the runtime.")
    steps: list[StepVerdict] = Field(
        default_factory=list,
        description="One entry per step you were asked to judge (the runtime adds the others).",
    )


class InstructionText(_Output):
    """The instruction text of one step of a captured procedure."""

    step: str = Field(max_length=16, description="The step number as shown: '2' or '3.1'.")
    instruction: Text = Field(description="What the agent does in this step, imperatively.")


class ProcedureCandidate(_Output):
    """The words of a procedure learned from this conversation; its steps, tools and argument
    templates come from the event log and are filled by the runtime."""

    name: Text = Field(
        max_length=64,
        description="lower_snake_case name of the task, such as vendor_onboarding.",
    )
    trigger_description: Text = Field(
        description="When the procedure applies, as 'When the customer asks to ...'."
    )
    patterns: list[Text] = Field(
        default_factory=list,
        max_length=10,
        description="Trigger patterns: `*` is any few words, `|` separates alternatives "
        "('onboard * vendor|add new vendor').",
    )
    description: str = Field(default="", description="What the procedure accomplishes.")
    instructions: list[InstructionText] = Field(
        default_factory=list, description="An instruction text for each step you were shown."
    )


QualityAssessment.model_rebuild()

OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    "next_step": NextStep,
    "follow_up": FollowUp,
    "quality_assessment": QualityAssessment,
    "adherence": Adherence,
    "procedure_candidate": ProcedureCandidate,
}
"""Output models an analyzer can name with `model:` instead of writing a JSON Schema."""
