"""`SharedVariables`: many expressions over the same values (every analyzer's trigger over one
conversation) give exactly what plain mappings of those values give, results and errors alike,
while each value is converted for the engine once."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzers.definitions.expressions import (
    ExpressionError,
    SharedVariables,
    compile_expression,
    conversation_variables,
)
from schemas import Conversation

EXPRESSIONS = [
    'turn_count >= 2 && outcome != "voicemail"',
    'events.exists(e, e.type in ["tool_call", "tool_use", "function_call"])',
    'size(events.filter(e, e.type in ["tool_call", "tool_use", "function_call"])) >= 2',
    "turn_count >= 2",
    "size(events)",
    "events.all(e, e.type == 'note')",
    "events.exists(e, events.exists(f, f.type == e.type && f != e))",
    "events.map(e, e.turn).filter(t, t > 1)",
    "missing_name == 1",
    "turn_count / 0",
    "events[0].type",
    "outcome",
]
# A tiny budget for some expressions, so the estimate's refusal is compared too.
BUDGETS = [None, 3]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4))
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)
events = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["tool_call", "tool_use", "note", "function_call"]),
            "turn": st.integers(0, 5),
        },
        optional={"result": json_values},
    ),
    max_size=6,
)
variables = st.fixed_dictionaries(
    {"events": events, "turn_count": st.integers(0, 5)},
    optional={"outcome": st.sampled_from(["resolved", "voicemail", "Complete"])},
)


def outcome(expression_source: str, budget: int | None, values: Any) -> tuple[str, Any]:
    expression = compile_expression(expression_source)
    if budget is not None:
        expression = type(expression)(**{**expression.__dict__, "budget": budget})
    try:
        return "value", expression.evaluate(values)
    except ExpressionError as error:
        return "error", str(error)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=variables, order=st.permutations(range(len(EXPRESSIONS))), budget_for=st.data())
def test_shared_variables_give_what_plain_mappings_give(
    values: dict[str, Any], order: list[int], budget_for: st.DataObject
) -> None:
    shared = SharedVariables(values)
    for index in order:  # in any order, so every expression sees a context others filled
        budget = budget_for.draw(st.sampled_from(BUDGETS))
        source = EXPRESSIONS[index]
        assert outcome(source, budget, shared) == outcome(source, budget, dict(values)), source


def test_each_value_is_converted_once_and_only_when_read() -> None:
    shared = SharedVariables({"events": [{"type": "note"}], "turn_count": 3})
    compile_expression("turn_count >= 2").holds(shared)
    assert set(shared._context.variables) == {"turn_count"}  # the events were never converted

    compile_expression("size(events) == 1").holds(shared)
    compile_expression("events.exists(e, e.type == 'note')").holds(shared)
    assert set(shared._context.variables) == {"turn_count", "events"}
    assert list(shared._largest) == [(frozenset({"events"}), shared_budget())]


def shared_budget() -> int:
    return compile_expression("events.exists(e, true)").budget


def test_a_conversations_triggers_agree_through_shared_variables() -> None:
    conversation = Conversation.model_validate(
        {
            "conversation_id": "c-1",
            "outcome": "resolved",
            "turns": [{"role": "user", "text": "hi"}, {"role": "agent", "text": "hello"}],
            "events": [{"type": "tool_call", "turn": 1, "name": "lookup"}],
        }
    )
    plain = conversation_variables(conversation)
    shared = SharedVariables(plain)
    for source in EXPRESSIONS[:4]:
        expression = compile_expression(source)
        assert expression.holds(shared) == expression.holds(plain)


@pytest.mark.parametrize("source", ["events.exists(e, events.exists(f, true))"])
def test_an_estimate_over_the_budget_converts_nothing(source: str) -> None:
    shared = SharedVariables({"events": list(range(2000))})
    with pytest.raises(ExpressionError, match="evaluation budget"):
        compile_expression(source).holds(shared)
    assert shared._context.variables == {}
