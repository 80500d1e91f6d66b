"""CEL expressions (`analyzers/definitions/expressions.py`): compile errors, unknown variables,
the `{{x}}` spelling, strict booleans, wrapped evaluation errors and the variables a
conversation offers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analyzers.definitions.expressions import (
    CONVERSATION_VARIABLES,
    ExpressionError,
    compile_expression,
    conversation_variables,
)
from analyzers.definitions.loading import load_paths
from schemas import Conversation

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONVERSATIONS = REPO / "examples" / "conversations"


def sample_conversation(**fields: Any) -> Conversation:
    """A small conversation with dynamic variables and metadata."""
    data: dict[str, Any] = {
        "conversation_id": "c-1",
        "tenant_id": "acme",
        "agent_id": "bot",
        "channel": "voice",
        "started_at": "2026-11-20T10:00:00Z",
        "ended_at": "2026-11-20T10:07:12Z",
        "outcome": "escalated",
        "turns": [
            {"role": "agent", "text": "Hello"},
            {"role": "user", "text": "I want a REFUND"},
            {"role": "agent", "text": "Sure"},
        ],
        "events": [{"type": "tool_call", "name": "refund_issue", "succeeded": True}],
        "dynamic_variables": {
            "system__agent_turns": 12,
            "customer_name": "Ann",
            "outcome": "shadowed",
            "user-name": "not an identifier",
        },
        "metadata": {"region": "eu"},
    }
    return Conversation.model_validate({**data, **fields})


@pytest.mark.parametrize("source", ["1 +", "outcome ==", "(a", "a b", "x.y("])
def test_syntax_error_is_an_expression_error(source: str) -> None:
    """Text that is not CEL raises ExpressionError quoting the expression."""
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert f"{source!r} is not valid CEL" in str(info.value)


def test_unknown_variables_are_listed_with_the_available_ones() -> None:
    """With a set of known names, every other free variable is reported, sorted."""
    with pytest.raises(ExpressionError) as info:
        compile_expression("zeta > 1 && alpha && outcome == 'x'", known={"outcome", "turns"})
    message = str(info.value)
    assert "unknown variable(s) ['alpha', 'zeta']" in message
    assert "available: ['outcome', 'turns']" in message


def test_without_known_names_any_variable_compiles() -> None:
    """Without `known`, an expression compiles and lists the free variables it reads."""
    expression = compile_expression("a.b.c > 1 && d[0] == e")
    assert expression.variables == frozenset({"a", "d", "e"})


def test_system_variables_are_always_known() -> None:
    """Platform variables starting with `system__` need no declaration."""
    expression = compile_expression("system__agent_turns == 0", known=set())
    assert expression.variables == frozenset({"system__agent_turns"})


def test_macro_bound_variables_are_not_free() -> None:
    """`turns.exists(t, ...)` binds `t`; it is not an unknown variable."""
    expression = compile_expression(
        "turns.exists(t, t.role == 'user') && events.all(e, e.succeeded == true)"
        " && turns.map(x, x.text).size() > 0 && turns.filter(y, y.text != '').size() > 0",
        known=CONVERSATION_VARIABLES,
    )
    assert expression.variables == frozenset({"turns", "events"})


def test_macro_bound_name_used_outside_its_macro_is_unknown() -> None:
    """A name bound by a macro is only bound inside it: using it elsewhere is still unknown."""
    with pytest.raises(ExpressionError) as info:
        compile_expression("turns.exists(t, true) && t.role == 'user'", known={"turns"})
    assert "['t']" in str(info.value)


def test_brace_spelling_is_plain_cel() -> None:
    """`{{name}}` is the same variable as `name`, and the original text is kept for messages."""
    expression = compile_expression("{{system__agent_turns}} == 0 && {{ customer_name }} != ''")
    assert expression.variables == frozenset({"system__agent_turns", "customer_name"})
    assert expression.source == "{{system__agent_turns}} == 0 && {{ customer_name }} != ''"
    assert expression.holds({"system__agent_turns": 0, "customer_name": "Ann"}) is True


def test_brace_spelling_with_unknown_variable_quotes_the_original() -> None:
    """An unknown `{{name}}` is reported by its plain name, quoting the source as written."""
    source = '{{tier}} == "gold"'
    with pytest.raises(ExpressionError) as info:
        compile_expression(source, known={"outcome"})
    assert str(info.value).startswith(f"{source!r} uses unknown variable(s) ['tier']")


@pytest.mark.parametrize(
    ("source", "variables", "expected"),
    [
        pytest.param("x > 1", {"x": 2}, True, id="true"),
        pytest.param("x > 1", {"x": 0}, False, id="false"),
        pytest.param("name.startsWith('A')", {"name": "Ann"}, True, id="string-function"),
        pytest.param("'b' in items", {"items": ["a", "b"]}, True, id="in-list"),
        pytest.param("m.k == null", {"m": {"k": None}}, True, id="null"),
    ],
)
def test_holds_gives_the_boolean(source: str, variables: dict[str, Any], expected: bool) -> None:
    """A condition evaluates to exactly true or false."""
    assert compile_expression(source).holds(variables) is expected


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        pytest.param("x", {"x": 1}, id="int"),
        pytest.param("x", {"x": "true"}, id="string"),
        pytest.param("x", {"x": None}, id="null"),
        pytest.param("[true]", {}, id="list"),
    ],
)
def test_holds_rejects_non_booleans(source: str, variables: dict[str, Any]) -> None:
    """A condition that gives anything but a boolean is an error, not a truthy guess."""
    with pytest.raises(ExpressionError) as info:
        compile_expression(source).holds(variables)
    assert "not true or false" in str(info.value)


def test_evaluate_returns_non_booleans() -> None:
    """`evaluate` (unlike `holds`) returns any value."""
    assert compile_expression("x + 1").evaluate({"x": 2}) == 3
    assert compile_expression("'a' + b").evaluate({"b": "c"}) == "ac"


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        pytest.param("x + 1", {}, id="undefined-variable"),
        pytest.param("x + 1", {"x": "a"}, id="type-mismatch"),
        pytest.param("m.missing == 1", {"m": {"k": 1}}, id="missing-key"),
        pytest.param("int(x) > 1", {"x": "abc"}, id="bad-conversion"),
        pytest.param("x / 0 == 1", {"x": 1}, id="division-by-zero"),
        pytest.param("x % 0 == 1", {"x": 1}, id="modulo-by-zero"),
        pytest.param("items[3] == 1", {"items": [1]}, id="index-out-of-range"),
        pytest.param("x + 1 > 0", {"x": 2**63 - 1}, id="integer-overflow"),
    ],
)
def test_evaluation_errors_are_expression_errors(source: str, variables: dict[str, Any]) -> None:
    """Whatever goes wrong while evaluating becomes an ExpressionError naming the expression."""
    expression = compile_expression(source)
    with pytest.raises(ExpressionError) as info:
        expression.evaluate(variables)
    assert repr(source) in str(info.value)


@pytest.mark.parametrize("source", ["x.nosuch()", 'x.lowerAscii() == "a"', "max(1, 2) == 2"])
def test_unknown_functions_are_rejected_when_compiled(source: str) -> None:
    """A function the CEL engine does not provide is a compile-time error naming it, so
    `posthoc validate` catches it instead of the trigger failing on live conversations."""
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert "which CEL here does not provide" in str(info.value)


def test_conversation_variables_expose_derived_values() -> None:
    """Trigger expressions see turn_count, duration_seconds and datetimes for comparison."""
    variables = conversation_variables(sample_conversation())
    assert set(CONVERSATION_VARIABLES) <= set(variables)
    assert variables["turn_count"] == 3
    assert variables["duration_seconds"] == 432.0
    assert compile_expression("turn_count == 3 && duration_seconds > 400.0").holds(variables)
    assert compile_expression("ended_at > started_at").holds(variables)
    assert compile_expression("metadata.region == 'eu' && channel == 'voice'").holds(variables)
    assert compile_expression(
        "turns.exists(t, t.role == 'user' && t.text.contains('REFUND'))"
    ).holds(variables)
    assert compile_expression("events.exists(e, e.name.startsWith('refund'))").holds(variables)


def test_conversation_variables_bind_dynamic_variables_by_name() -> None:
    """Dynamic variables are readable by their own names and under `dynamic_variables`."""
    variables = conversation_variables(sample_conversation())
    assert variables["system__agent_turns"] == 12
    assert variables["customer_name"] == "Ann"
    assert compile_expression("{{system__agent_turns}} == 12").holds(variables)
    assert compile_expression("dynamic_variables.customer_name == customer_name").holds(variables)


def test_conversation_fields_win_over_dynamic_variables() -> None:
    """A dynamic variable cannot hide a conversation field of the same name, and names that
    are not identifiers are only reachable through `dynamic_variables`."""
    variables = conversation_variables(sample_conversation())
    assert variables["outcome"] == "escalated"
    assert "user-name" not in variables
    assert variables["dynamic_variables"]["user-name"] == "not an identifier"


def test_conversation_variables_are_plain_json() -> None:
    """Apart from the two datetimes, every variable is plain JSON the engine can take."""
    variables = conversation_variables(sample_conversation())
    plain = {k: v for k, v in variables.items() if k not in {"started_at", "ended_at"}}
    assert json.loads(json.dumps(plain)) == plain


def example_conversations() -> list[Conversation]:
    """Every conversation under examples/conversations."""
    return [sourced.value for sourced in load_paths([EXAMPLE_CONVERSATIONS]).conversations]


def test_example_trigger_expressions_evaluate_on_example_conversations() -> None:
    """Every trigger expression and procedure condition of the shipped examples and built-ins
    evaluates to a boolean on every example conversation (so it uses only functions the engine
    has, which compiling alone does not prove)."""
    conversations = example_conversations() if EXAMPLE_CONVERSATIONS.is_dir() else []
    if not conversations:
        pytest.skip("examples/conversations has no conversation yet")
    loaded = load_paths(
        [
            REPO / "examples" / "analyzers",
            REPO / "examples" / "procedures",
            REPO / "analyzers" / "builtin",
        ]
    )
    sources: list[tuple[str, str]] = []
    for analyzer in loaded.analyzers:
        if analyzer.value.trigger.expression is not None:
            sources.append((analyzer.value.name, analyzer.value.trigger.expression))
    for procedure in loaded.procedures:
        sources += [(procedure.value.name, c) for c in procedure.value.trigger.conditions]
    assert sources, "the examples should have trigger expressions to check"
    failures: list[str] = []
    for conversation in conversations:
        variables = conversation_variables(conversation)
        for owner, source in sources:
            try:
                compile_expression(source).holds(variables)
            except ExpressionError as exc:
                failures.append(f"{owner} on {conversation.conversation_id}: {exc}")
    assert not failures, "\n".join(failures)
