"""Whether a procedure applies: each matching path, and the record a run keeps of it.

Paths, in order: scope, trigger conditions, the event log, trigger patterns (tolerant of word
order and inflection), and the trigger description read by the model in one cheap call.

The seed's pattern `onboard * vendor|add new vendor|register vendor` does not match the seed's
own wording "I need to get a new vendor set up" (none of onboard/add/register is said); the
seed's conversation is matched through its event log, which names `vendor_onboarding`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from analyzers.errors import TransientModelError
from analyzers.procedures.matching import procedure_applies
from analyzers.procedures.selection import CHECK_MAX_TOKENS, Selection, select_procedures
from analyzers.testing import ScriptedModel, reply, text, tool_call
from schemas import Conversation, Procedure
from tests.analyzers.helpers import example_conversation, example_definitions, run

SEED_WORDS = "Hi! I need to get a new vendor set up, TechCorp."


def vendor_procedure(**trigger: Any) -> Procedure:
    _, procedures = example_definitions()
    seed = next(p for p in procedures if p.name == "vendor_onboarding")
    if not trigger:
        return seed
    data = seed.model_dump(by_alias=True)
    data["trigger"] = {**data["trigger"], **trigger}
    return Procedure.model_validate(data)


def vendor_conversation(*customer: str, events: bool = False) -> Conversation:
    """The seed's conversation; with `customer` texts as its customer turns and, unless
    `events`, without its event log (so the log cannot decide)."""
    seed = example_conversation("vendor_onboarding")
    turns = list(seed.turns)
    if customer:
        users = [i for i, t in enumerate(turns) if t.role == "user"]
        for index, said in zip(users, customer, strict=False):
            turns[index] = turns[index].model_copy(update={"text": said})
        for index in users[len(customer) :]:
            turns[index] = turns[index].model_copy(update={"text": "Thanks."})
    return seed.model_copy(update={"turns": turns, "events": seed.events if events else []})


def select(conversation: Conversation, model: ScriptedModel, *procedures: Procedure) -> Selection:
    return asyncio.run(
        select_procedures(
            [p.name for p in procedures] or ["vendor_onboarding"],
            conversation,
            procedures,
            model=model,
            model_id="claude-sonnet-5-5",
        )
    )


def test_the_seed_conversation_matches_through_its_event_log() -> None:
    match = procedure_applies(vendor_procedure(), example_conversation("vendor_onboarding"))
    assert (match.applies, match.path) == (True, "event_log")
    assert "event e0" in match.reason


def test_the_seed_pattern_alone_leaves_the_seed_wording_to_the_description() -> None:
    """Without the event log, the seed's pattern cannot decide "get a new vendor set up"."""
    match = procedure_applies(vendor_procedure(), vendor_conversation(SEED_WORDS))
    assert (match.applies, match.path) == (None, "description")


@pytest.mark.parametrize(
    ("patterns", "said"),
    [
        (["onboard * vendor|add new vendor|register vendor"], "We are onboarding a new vendor."),
        (["onboard * vendor|add new vendor|register vendor"], "Can the vendor be registered?"),
        (["set up * vendor"], SEED_WORDS),
    ],
)
def test_a_pattern_matches_across_inflection_and_word_order(patterns: list[str], said: str) -> None:
    match = procedure_applies(vendor_procedure(patterns=patterns), vendor_conversation(said))
    assert (match.applies, match.path) == (True, "pattern")
    assert "matches turn 1" in match.reason


def test_patterns_read_only_what_the_customer_said() -> None:
    """The agent says "I can onboard TechCorp" (turn 2); that is not the customer asking."""
    conversation = vendor_conversation("Hello.", "My name is Priya.")
    match = procedure_applies(vendor_procedure(patterns=["onboard * techcorp"]), conversation)
    assert match.applies is None


def test_scope_and_conditions_decide_before_the_event_log() -> None:
    seed = example_conversation("vendor_onboarding")
    other_agent = seed.model_copy(update={"agent_id": "helpdesk"})
    match = procedure_applies(vendor_procedure(), other_agent)
    assert (match.applies, match.path) == (False, "scope")
    failing = vendor_procedure(conditions=['channel == "voice"'])
    match = procedure_applies(failing, seed)
    assert (match.applies, match.path) == (False, "condition")
    broken = vendor_procedure(conditions=["dynamic_variables.vendor_id > 3"])
    match = procedure_applies(broken, seed)
    assert (match.applies, match.path) == (False, "condition")
    assert "could not be evaluated" in match.reason


def test_the_description_decides_in_one_cheap_call() -> None:
    model = ScriptedModel(
        [
            reply(
                text(
                    "Here is my answer:\n```json\n"
                    '{"vendor_onboarding": {"applies": true, "reason": "turn 1 asks for it"}}\n```'
                )
            )
        ]
    )
    selection = select(vendor_conversation(SEED_WORDS), model, vendor_procedure())

    [record] = selection.records
    assert (record.applies, record.path, record.status) == (True, "description", "not_started")
    assert "turn 1 asks for it" in record.reason
    assert [p.name for p in selection.applied] == ["vendor_onboarding"]
    assert selection.model_turns == 1
    [request] = model.requests
    assert request.max_tokens == CHECK_MAX_TOKENS
    assert request.thinking == "disabled"
    assert not request.tools
    question = request.messages[0]["content"][0]["text"]
    assert "When an employee asks to onboard, add or register a new vendor." in question
    assert SEED_WORDS in question
    assert "I can onboard TechCorp for you" not in question  # the agent's words are not sent


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ('{"vendor_onboarding": {"applies": false, "reason": "a refund"}}', "a refund"),
        ("I think it probably applies.", "could not be read"),
        ('{"vendor_onboarding": "maybe"}', "no clear verdict"),
        ('{"other": true}', "no clear verdict"),
    ],
)
def test_a_no_or_an_unreadable_answer_means_not_applied(answer: str, fragment: str) -> None:
    selection = select(
        vendor_conversation(SEED_WORDS), ScriptedModel([reply(text(answer))]), vendor_procedure()
    )
    [record] = selection.records
    assert (record.applies, record.path, record.status) == (False, "description", "not_applied")
    assert fragment in record.reason
    assert selection.applied == []


def test_a_failed_check_means_not_applied_and_never_crashes() -> None:
    failure = TransientModelError("overloaded; request said Priya TechCorp")
    selection = select(
        vendor_conversation(SEED_WORDS), ScriptedModel([failure]), vendor_procedure()
    )
    [record] = selection.records
    assert (record.applies, record.path) == (False, "description")
    assert "TransientModelError" in record.reason
    assert "Priya" not in record.reason  # the exception's text is not repeated
    assert selection.model_turns == 0


def test_undefined_names_are_recorded() -> None:
    selection = asyncio.run(
        select_procedures(
            ["ghost"],
            example_conversation("vendor_onboarding"),
            [],
            model=ScriptedModel([]),
            model_id="claude-sonnet-5-5",
        )
    )
    [record] = selection.records
    assert (record.name, record.applies, record.path) == ("ghost", False, "undefined")


def test_a_named_procedure_that_does_not_apply_is_recorded_not_followed_not_in_the_prompt() -> None:
    """The analyzer names vendor_onboarding and its instructions say to follow it; on a
    conversation it does not fit, the model says no: the result records why, no step runs, the
    brief carries no section or outline of it, and the brief says not to follow it."""
    analyzers_by_name, procedures = example_definitions()
    spec = analyzers_by_name["vendor_onboarding_check"]
    conversation = vendor_conversation("Can I get my laptop repaired?", "Thanks, bye.")
    model = ScriptedModel(
        [
            reply(text('{"vendor_onboarding": {"applies": false, "reason": "a repair"}}')),
            reply(
                tool_call(
                    "record_vendor_check",
                    {"unknown": True, "unknown_reason": "no vendor", "evidence_turns": []},
                )
            ),
            reply(text("Recorded.")),
        ]
    )
    result = run(spec, conversation, model, procedures=procedures)

    assert result.status == "succeeded", result.error
    [record] = result.procedures
    assert (record.applies, record.path, record.status) == (False, "description", "not_applied")
    assert record.steps == []
    assert not any(t.procedure_name for t in result.trace)
    brief = "\n".join(block["text"] for block in model.requests[1].messages[0]["content"])
    assert "## Procedure vendor_onboarding" not in brief
    assert "the runtime calls vendor_lookup" not in brief
    assert "procedures named in your task do not apply" in brief
    assert "- vendor_onboarding: the trigger description: a repair" in brief
    # The check is billed with the run.
    assert result.model_turns == 3
