"""Hostile input on the procedure paths: trigger patterns against any text, the model's answer
to the description check, customer text inside the check's question, and whatever the model
sends `provide_parameters`. No traceback, no hang: pattern matching is one linear pass."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzers.definitions.patterns import PatternError, compile_pattern, matches
from analyzers.procedures.matching import description_question, read_description_answer
from analyzers.procedures.tools import ProvideParametersTool
from analyzers.tools.base import ReadCoverage, ToolContext
from schemas import Conversation, Procedure
from tests.analyzers.helpers import example_conversation, example_definitions

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORDS = st.sampled_from(["onboard", "vendor", "set", "up", "*", "|", "a", "new", "é", "!!", ""])
PATTERNS = st.lists(WORDS, min_size=0, max_size=12).map(" ".join) | st.text(max_size=60)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@FUZZ
@given(pattern=PATTERNS, text=st.text(max_size=3000))
def test_any_pattern_against_any_text_answers_or_names_the_problem(pattern: str, text: str) -> None:
    problem: str | None
    try:
        compiled = compile_pattern(pattern)
    except PatternError as exc:
        problem = str(exc)
    else:
        problem = None
    if problem is not None:
        assert repr(pattern) in problem
        return
    assert isinstance(matches(pattern, text), bool)
    assert len(compiled.alternatives) == pattern.count("|") + 1


def test_a_huge_hostile_text_is_one_linear_pass() -> None:
    """Every word a near miss, the window never complete: the worst case for the scan. A
    backtracking regular expression would not come back from this; the scan does."""
    hostile = "onboard " * 200_000 + "vendo"
    assert not matches("onboard * * * * vendor|onboard * onboard * vendor", hostile)
    assert matches("onboard * vendor", hostile + " vendor")


@FUZZ
@given(answer=st.text(max_size=2000) | JSONISH.map(str), names=st.lists(
    st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), min_size=1, max_size=4, unique=True
))  # fmt: skip
def test_any_answer_to_the_description_check_gives_a_verdict_per_name(
    answer: str, names: list[str]
) -> None:
    decided = read_description_answer(answer, names)
    assert set(decided) == set(names)
    for match in decided.values():
        assert isinstance(match.applies, bool)
        assert match.path == "description"
        assert len(match.reason) < 700


@FUZZ
@given(said=st.lists(st.text(max_size=400), min_size=1, max_size=5))
def test_customer_text_cannot_close_the_data_block(said: list[str]) -> None:
    seed = example_conversation("vendor_onboarding")
    turns = [seed.turns[0].model_copy(update={"role": "user", "text": s}) for s in said]
    conversation = seed.model_copy(update={"turns": turns})
    _, procedures = example_definitions()
    question = description_question(conversation, procedures[:1])
    assert question.count("<customer_turns>") == 1
    assert question.count("</customer_turns>") == 1


CONVERSATION = Conversation(
    conversation_id="c-1",
    tenant_id="globex",
    agent_id="a",
    channel="chat",
    started_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
    ended_at=datetime(2026, 11, 20, 11, tzinfo=UTC),
)


def _vendor() -> Procedure:
    _, procedures = example_definitions()
    return next(p for p in procedures if p.name == "vendor_onboarding")


VENDOR = _vendor()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arguments=st.dictionaries(st.text(max_size=10), JSONISH, max_size=4))
def test_provide_parameters_answers_any_input(arguments: dict[str, Any]) -> None:
    tool = ProvideParametersTool({VENDOR.name: VENDOR})
    context = ToolContext(conversation=CONVERSATION, coverage=ReadCoverage(0))
    outcome = asyncio.run(tool.call(arguments, context))
    assert isinstance(outcome.output, str)
    values = arguments.get("values")
    if not isinstance(values, dict) or "procedure" in arguments:
        return
    declared = {p.name for p in VENDOR.parameters}
    fits = all(k in declared and (v is None or isinstance(v, str)) for k, v in values.items())
    assert outcome.is_error is not fits
