"""Every validation rule of the contracts, each with a minimal breaking input and, for the
tricky ones, the valid input that looks like it might break the rule but must not.

A case is the smallest change to a valid base document that breaks exactly one rule, so each
test also proves that the rule does not fire alongside spurious others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schemas import (
    AnalysisResult,
    AnalyzerSpec,
    Condition,
    Conversation,
    ModelSettings,
    OutputSpec,
    Procedure,
    ProcedureTrigger,
    RecordedOutput,
)
from schemas.rules import RULE_VIOLATIONS, Loc

# --------------------------------------------------------------------------------------------
# Helpers


@dataclass(frozen=True)
class Found:
    """One reported error: a rule id (or pydantic error type), where, and what it says."""

    rule: str
    loc: Loc
    message: str


def errors_of(model: type[BaseModel], data: dict[str, Any]) -> list[Found]:
    """Validate `data` expecting failure; flatten rule violations into one entry each."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    found: list[Found] = []
    for detail in info.value.errors():
        loc = tuple(detail["loc"])
        if detail["type"] == RULE_VIOLATIONS:
            for violation in detail["ctx"]["violations"]:
                found.append(
                    Found(violation["rule"], (*loc, *violation["loc"]), violation["message"])
                )
        else:
            found.append(Found(detail["type"], loc, detail["msg"]))
    return found


def assert_single(found: list[Found], rule: str, loc: Loc | None, fragment: str) -> None:
    """Exactly one error, with this rule, location (when given) and message fragment."""
    assert len(found) == 1, found
    (only,) = found
    assert only.rule == rule, found
    if loc is not None:
        assert only.loc == loc, found
    assert fragment in only.message, found


def procedure(**fields: Any) -> dict[str, Any]:
    """A minimal procedure document with `fields` on top (structured unless told otherwise)."""
    base: dict[str, Any] = {"kind": "procedure", "name": "p", "trigger": {"description": "d"}}
    return {**base, **fields}


def instruction(text: str = "do it") -> dict[str, Any]:
    """An instruction step."""
    return {"instruction": text}


def tool(name: str, arguments: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A tool step."""
    return {"tool": name, "arguments": arguments or {}, **extra}


def if_step(*steps: dict[str, Any], expression: str = "true") -> dict[str, Any]:
    """An `if` step with an expression condition."""
    return {"if": {"expression": expression}, "steps": list(steps)}


def analyzer(**fields: Any) -> dict[str, Any]:
    """A minimal analyzer document with `fields` on top."""
    base: dict[str, Any] = {
        "kind": "analyzer",
        "name": "a",
        "description": "d",
        "instructions": "i",
        "outputs": [{"name": "o", "description": "d", "schema": {"type": "object"}}],
    }
    return {**base, **fields}


def http_tool(**fields: Any) -> dict[str, Any]:
    """A minimal HTTP tool definition with `fields` on top."""
    base: dict[str, Any] = {
        "name": "lookup",
        "description": "Look something up.",
        "url": "https://api.example.com/items",
        "allowed_hosts": ["api.example.com"],
        "input_schema": {"type": "object", "properties": {"item_id": {"type": "string"}}},
    }
    return {**base, **fields}


def output(**fields: Any) -> dict[str, Any]:
    """A minimal output spec with `fields` on top."""
    return {"name": "o", "description": "d", **fields}


def conversation(**fields: Any) -> dict[str, Any]:
    """A minimal conversation with `fields` on top."""
    base: dict[str, Any] = {
        "conversation_id": "c-1",
        "tenant_id": "acme",
        "agent_id": "bot",
        "channel": "voice",
        "started_at": "2026-11-20T10:00:00Z",
        "ended_at": "2026-11-20T10:07:12Z",
    }
    return {**base, **fields}


def result(**fields: Any) -> dict[str, Any]:
    """A minimal analysis result with `fields` on top."""
    base: dict[str, Any] = {
        "run_id": "r-1",
        "conversation_id": "c-1",
        "analyzer": "a",
        "analyzer_version": "1",
        "status": "succeeded",
    }
    return {**base, **fields}


# --------------------------------------------------------------------------------------------
# Procedures

PROCEDURE_CASES = [
    pytest.param(
        procedure(content="guidance", steps=[instruction()]),
        "procedure-form",
        (),
        "not both and not neither",
        id="procedure-form-both",
    ),
    pytest.param(procedure(), "procedure-form", (), "not both", id="procedure-form-neither"),
    pytest.param(
        procedure(steps=[]), "steps-not-empty", ("steps",), "needs a step", id="steps-not-empty"
    ),
    pytest.param(
        procedure(steps=[if_step(instruction()), instruction()]),
        "if-not-first",
        ("steps", 0),
        "cannot come first",
        id="if-not-first",
    ),
    pytest.param(
        procedure(steps=[instruction(), if_step(if_step(instruction()))]),
        "if-not-nested",
        ("steps", 1, "steps", 0),
        "cannot be nested",
        id="if-not-nested",
    ),
    pytest.param(
        procedure(steps=[instruction(), if_step(instruction()), if_step(instruction())]),
        "if-not-consecutive",
        ("steps", 2),
        "steps 1 and 2",
        id="if-not-consecutive",
    ),
    pytest.param(
        procedure(
            content="c",
            parameters=[{"name": "vendor"}, {"name": "vendor"}],
        ),
        "name-unique",
        ("parameters",),
        "parameter 'vendor' is declared twice",
        id="parameter-name-unique",
    ),
    pytest.param(
        procedure(steps=[tool("lookup"), tool("lookup")]),
        "step-id-unique",
        ("steps", 1),
        "'lookup'",
        id="step-id-unique",
    ),
    pytest.param(
        procedure(steps=[tool("lookup"), if_step(tool("other", id="lookup"))]),
        "step-id-unique",
        ("steps", 1, "steps", 0),
        "'lookup'",
        id="step-id-unique-nested-id",
    ),
    pytest.param(
        procedure(steps=[tool("lookup", {"name": "{{vendor_name}}"})]),
        "template-undeclared",
        ("steps", 0, "arguments"),
        "{{vendor_name}}",
        id="template-undeclared",
    ),
    pytest.param(
        procedure(steps=[tool("lookup", {"{{vendor_name}}": "x"})]),
        "template-undeclared",
        ("steps", 0, "arguments"),
        "{{vendor_name}}",
        id="template-undeclared-in-key",
    ),
    pytest.param(
        procedure(steps=[tool("lookup", {"names": [{"first": "{{ vendor_name }}"}]})]),
        "template-undeclared",
        ("steps", 0, "arguments"),
        "{{vendor_name}}",
        id="template-undeclared-deep-in-arguments",
    ),
    pytest.param(
        procedure(steps=[instruction(), if_step(tool("create", {"name": "{{vendor_name}}"}))]),
        "template-undeclared",
        ("steps", 1, "steps", 0, "arguments"),
        "{{vendor_name}}",
        id="template-undeclared-nested-step",
    ),
    pytest.param(
        procedure(
            steps=[tool("create", {"id": "{{lookup.result.id}}"}), tool("lookup")],
        ),
        "template-undeclared",
        ("steps", 0, "arguments"),
        "{{lookup.result.id}}",
        id="template-uses-later-step-result",
    ),
    pytest.param(
        procedure(
            steps=[
                instruction(),
                if_step(tool("create", {"id": "{{lookup.result.id}}"})),
                tool("lookup"),
            ],
        ),
        "template-undeclared",
        ("steps", 1, "steps", 0, "arguments"),
        "{{lookup.result.id}}",
        id="template-nested-uses-later-step-result",
    ),
    pytest.param(
        procedure(steps=[tool("lookup", {"again": "{{lookup.result}}"})]),
        "template-undeclared",
        ("steps", 0, "arguments"),
        "{{lookup.result}}",
        id="template-uses-own-result",
    ),
    pytest.param(
        procedure(steps=[tool("lookup", id="first", arguments={"again": "{{first.result}}"})]),
        "template-undeclared",
        ("steps", 0, "arguments"),
        "{{first.result}}",
        id="template-uses-own-result-by-id",
    ),
    pytest.param(
        procedure(steps=[tool("lookup", {"x": "{{lookup_other}}"})], dynamic_variables=["lookup"]),
        "template-undeclared",
        ("steps", 0, "arguments"),
        "{{lookup_other}}",
        id="template-undeclared-prefix-of-declared-is-not-declared",
    ),
]


@pytest.mark.parametrize(("data", "rule", "loc", "fragment"), PROCEDURE_CASES)
def test_procedure_rule_is_enforced(
    data: dict[str, Any], rule: str, loc: Loc, fragment: str
) -> None:
    """Each structural procedure rule rejects its minimal breaking input with its rule id."""
    assert_single(errors_of(Procedure, data), rule, loc, fragment)


VALID_PROCEDURES = [
    pytest.param(procedure(content="Be kind."), id="free-form"),
    pytest.param(
        procedure(steps=[instruction(), if_step(instruction())]), id="if-after-instruction"
    ),
    pytest.param(
        procedure(
            steps=[tool("lookup"), if_step(instruction(), expression="lookup.result == null")]
        ),
        id="if-after-tool",
    ),
    pytest.param(
        procedure(
            steps=[
                instruction(),
                if_step(instruction()),
                instruction(),
                if_step(instruction()),
            ]
        ),
        id="two-ifs-separated-by-a-step",
    ),
    pytest.param(
        procedure(
            steps=[
                tool("lookup", id="customer"),
                if_step(tool("upsert", {"account": "{{customer.result.account_id}}"})),
            ]
        ),
        id="nested-step-uses-result-of-tool-before-if",
    ),
    pytest.param(
        procedure(
            steps=[
                instruction(),
                if_step(tool("lookup"), tool("create", {"id": "{{lookup.result.items[0].id}}"})),
            ]
        ),
        id="nested-step-uses-earlier-nested-result",
    ),
    pytest.param(
        procedure(steps=[tool("lookup"), tool("create", {"ref": "{{lookup.result}}"})]),
        id="uses-earlier-top-level-result",
    ),
    pytest.param(
        procedure(
            parameters=[{"name": "vendor_name"}],
            dynamic_variables=["customer_name"],
            steps=[
                tool(
                    "create",
                    {
                        "name": "{{ vendor_name }}",
                        "by": "{{customer_name}}",
                        "turns": "{{system__agent_turns}}",
                        "nested": [{"{{vendor_name}}": "{{system__caller_id}}"}],
                    },
                )
            ],
        ),
        id="parameters-dynamic-and-system-variables",
    ),
    pytest.param(
        procedure(steps=[tool("lookup", id="first"), tool("lookup", id="second")]),
        id="same-tool-twice-with-ids",
    ),
    pytest.param(
        procedure(steps=[tool("lookup", {"text": "literal {braces} and { {not} }"})]),
        id="braces-that-are-not-placeholders",
    ),
]


@pytest.mark.parametrize("data", VALID_PROCEDURES)
def test_valid_procedure_is_accepted(data: dict[str, Any]) -> None:
    """Inputs that sit right next to a procedure rule but respect it are accepted."""
    parsed = Procedure.model_validate(data)
    assert parsed.name == "p"
    assert parsed.form == ("free_form" if "content" in data else "structured")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({}, id="neither"),
        pytest.param(
            {"expression": "true", "natural_language": "the customer is angry"}, id="both"
        ),
    ],
)
def test_condition_needs_exactly_one_kind(data: dict[str, Any]) -> None:
    """A condition has exactly one of `expression` or `natural_language`."""
    assert_single(errors_of(Condition, data), "value_error", (), "exactly one of 'expression'")


def test_condition_error_inside_procedure_points_at_the_if() -> None:
    """An empty `if` condition inside a procedure is reported at that step's `if` field."""
    data = procedure(steps=[instruction(), {"if": {}, "steps": [instruction()]}])
    assert_single(errors_of(Procedure, data), "value_error", ("steps", 1, "if", "if"), "exactly")


def test_condition_cel_strips_braces() -> None:
    """A condition spelled with `{{name}}` gives plain CEL to the engine."""
    assert Condition(expression="{{system__agent_turns}} == 0").cel == "system__agent_turns == 0"
    assert Condition(natural_language="angry").cel is None


@pytest.mark.parametrize(
    ("step", "loc"),
    [
        pytest.param({"foo": "bar"}, ("steps", 1), id="no-kind-key"),
        pytest.param("just text", ("steps", 1), id="not-a-mapping"),
    ],
)
def test_step_without_kind_is_rejected(step: Any, loc: Loc) -> None:
    """A step with none of `instruction`, `tool` or `if` gets the `step_kind` error."""
    data = procedure(steps=[instruction(), step])
    assert_single(errors_of(Procedure, data), "step_kind", loc, "needs one of the keys")


def test_step_with_two_kinds_is_rejected() -> None:
    """A step carrying both `if` and `tool` is not silently read as one of them."""
    data = procedure(
        steps=[instruction(), {"if": {"expression": "true"}, "tool": "x", "steps": []}]
    )
    found = errors_of(Procedure, data)
    assert found
    assert any(f.rule == "extra_forbidden" and f.loc[-1] == "tool" for f in found), found


@pytest.mark.parametrize(
    ("fields", "approved"),
    [
        pytest.param({"created_by": "learned"}, False, id="learned-defaults-unapproved"),
        pytest.param({"created_by": "admin"}, True, id="admin-defaults-approved"),
        pytest.param({}, True, id="default-creator-is-admin-approved"),
        pytest.param({"created_by": "learned", "approved": True}, True, id="learned-approved"),
        pytest.param({"created_by": "admin", "approved": False}, False, id="admin-unapproved"),
    ],
)
def test_procedure_approval_default(fields: dict[str, Any], approved: bool) -> None:
    """Learned procedures start unapproved, admin ones approved, explicit values are kept."""
    parsed = Procedure.model_validate(procedure(content="c", **fields))
    assert parsed.approved is approved


def test_learned_procedure_built_from_keywords_starts_unapproved() -> None:
    """The learned default also applies when the model is built from keyword arguments."""
    parsed = Procedure(
        name="p",
        trigger=ProcedureTrigger(description="d"),
        content="c",
        created_by="learned",
    )
    assert parsed.approved is False


def test_several_procedure_violations_are_reported_together() -> None:
    """All broken rules of one procedure come back in one error, not just the first."""
    data = procedure(
        parameters=[{"name": "x"}, {"name": "x"}],
        steps=[if_step(instruction()), if_step(tool("t", {"a": "{{nope}}"}))],
    )
    rules = sorted(f.rule for f in errors_of(Procedure, data))
    assert rules == ["if-not-consecutive", "if-not-first", "name-unique", "template-undeclared"]


# --------------------------------------------------------------------------------------------
# Analyzers

ANALYZER_CASES = [
    pytest.param(
        analyzer(outputs=[output(schema={"type": "object"}), output(model="next_step")]),
        "name-unique",
        ("outputs",),
        "output 'o' appears more than once",
        id="output-name-unique",
    ),
    pytest.param(
        analyzer(tools=["get_turns", "get_turns"]),
        "name-unique",
        ("tools",),
        "tool 'get_turns' appears more than once",
        id="tool-name-unique-builtin",
    ),
    pytest.param(
        analyzer(tools=["lookup", http_tool()]),
        "name-unique",
        ("tools",),
        "tool 'lookup' appears more than once",
        id="tool-name-unique-builtin-and-http",
    ),
    pytest.param(
        analyzer(procedures=["refunds", "refunds"]),
        "name-unique",
        ("procedures",),
        "procedure 'refunds' appears more than once",
        id="procedure-name-unique",
    ),
    pytest.param(
        analyzer(tools=["record_ticket"]),
        "tool-name-reserved",
        ("tools", 0),
        "'record_'",
        id="tool-name-reserved-builtin",
    ),
    pytest.param(
        analyzer(tools=["get_turns", http_tool(name="record_thing")]),
        "tool-name-reserved",
        ("tools", 1),
        "'record_thing'",
        id="tool-name-reserved-http",
    ),
    pytest.param(
        analyzer(tools=[http_tool(url="https://evil.example.org/items")]),
        "tool-host-allowed",
        ("tools", 0, "url"),
        "'evil.example.org'",
        id="tool-host-allowed",
    ),
    pytest.param(
        analyzer(tools=[http_tool(url="https://api.example.com@evil.example.org/items")]),
        "tool-host-allowed",
        ("tools", 0, "url"),
        "'evil.example.org'",
        id="tool-host-allowed-userinfo-trick",
    ),
    pytest.param(
        analyzer(tools=[http_tool(url="https://api.example.com.evil.example.org/items")]),
        "tool-host-allowed",
        ("tools", 0, "url"),
        "'api.example.com.evil.example.org'",
        id="tool-host-allowed-suffix-trick",
    ),
    pytest.param(
        analyzer(tools=[http_tool(url="/items/{{item_id}}")]),
        "tool-host-allowed",
        ("tools", 0, "url"),
        "host None",
        id="tool-host-allowed-relative-url",
    ),
    pytest.param(
        analyzer(
            tools=[
                http_tool(
                    url="https://{{item_id}}/items",
                    allowed_hosts=["api.example.com"],
                )
            ]
        ),
        "tool-host-fixed",
        ("tools", 0, "url"),
        "must be written out",
        id="tool-host-fixed",
    ),
    pytest.param(
        analyzer(tools=[http_tool(url="https://api.example.com/items/{{sku}}")]),
        "template-undeclared",
        ("tools", 0, "url"),
        "{{sku}}",
        id="template-undeclared-url",
    ),
    pytest.param(
        analyzer(tools=[http_tool(headers={"X-Item": "{{sku}}"})]),
        "template-undeclared",
        ("tools", 0, "headers"),
        "{{sku}}",
        id="template-undeclared-headers",
    ),
    pytest.param(
        analyzer(tools=[http_tool(method="POST", body={"items": [{"sku": "{{sku}}"}]})]),
        "template-undeclared",
        ("tools", 0, "body"),
        "{{sku}}",
        id="template-undeclared-body",
    ),
    pytest.param(
        analyzer(tools=[http_tool(headers={"X-Token": "{{secret.TOKEN}}"})]),
        "template-undeclared",
        ("tools", 0, "headers"),
        "{{secret.TOKEN}}",
        id="template-undeclared-secret-misspelled",
    ),
]


@pytest.mark.parametrize(("data", "rule", "loc", "fragment"), ANALYZER_CASES)
def test_analyzer_rule_is_enforced(
    data: dict[str, Any], rule: str, loc: Loc, fragment: str
) -> None:
    """Each analyzer rule rejects its minimal breaking input with its rule id."""
    assert_single(errors_of(AnalyzerSpec, data), rule, loc, fragment)


VALID_ANALYZERS = [
    pytest.param(analyzer(), id="minimal"),
    pytest.param(
        analyzer(
            tools=[
                http_tool(
                    method="POST",
                    url="https://api.example.com:8443/items/{{item_id}}?q={{ item_id }}",
                    headers={"Authorization": "Bearer {{secrets.API_TOKEN}}"},
                    body={"id": "{{item_id}}", "{{item_id}}": ["{{secrets.OTHER}}"]},
                    # A port other than the scheme's default must be allowed explicitly.
                    allowed_hosts=["api.example.com:8443"],
                )
            ]
        ),
        id="declared-inputs-secrets-and-port",
    ),
    pytest.param(
        analyzer(tools=["get_turns", "get_events", "search_conversation"]),
        id="builtin-tools",
    ),
    pytest.param(analyzer(outputs=[output(model="quality_assessment")]), id="output-model"),
    pytest.param(
        analyzer(model={"thinking": "enabled", "budget_tokens": 2048, "max_tokens": 4096}),
        id="budget-tokens-with-thinking-enabled",
    ),
    pytest.param(
        analyzer(
            sinks=[
                {"type": "slack", "channel": "#x", "when": "status == 'failed'"},
                {"type": "webhook", "url": "https://hooks.example.com/x"},
                {"type": "jsonl", "path": "out.jsonl"},
            ]
        ),
        id="every-sink-type",
    ),
    pytest.param(analyzer(tools=["recorder"]), id="tool-name-starting-with-record-without-_"),
]


@pytest.mark.parametrize("data", VALID_ANALYZERS)
def test_valid_analyzer_is_accepted(data: dict[str, Any]) -> None:
    """Inputs that sit right next to an analyzer rule but respect it are accepted."""
    parsed = AnalyzerSpec.model_validate(data)
    assert parsed.name == "a"
    assert len(parsed.tools) == len(data.get("tools", []))


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(output(), "exactly one of 'schema'", id="neither-schema-nor-model"),
        pytest.param(
            output(schema={"type": "object"}, model="next_step"),
            "exactly one of 'schema'",
            id="both-schema-and-model",
        ),
        pytest.param(
            output(model="vendor_check"),
            "'vendor_check' is not a built-in output model",
            id="unknown-model",
        ),
    ],
)
def test_output_spec_shape_source(data: dict[str, Any], fragment: str) -> None:
    """An output has exactly one of a JSON Schema or a known built-in model."""
    assert_single(errors_of(OutputSpec, data), "value_error", (), fragment)


def test_output_spec_tool_name_and_model_schema() -> None:
    """An output's recording tool is `record_<name>` and a named model supplies its schema."""
    spec = OutputSpec.model_validate(output(name="follow_up", model="follow_up"))
    assert spec.tool_name == "record_follow_up"
    assert spec.value_schema()["title"] == "FollowUp"


@pytest.mark.parametrize(
    ("data", "rule", "fragment"),
    [
        pytest.param(
            {"budget_tokens": 2048},
            "value_error",
            "applies only with thinking: enabled",
            id="budget-without-enabled-thinking",
        ),
        pytest.param(
            {"thinking": "disabled", "budget_tokens": 2048},
            "value_error",
            "applies only with thinking: enabled",
            id="budget-with-thinking-disabled",
        ),
        pytest.param(
            {"thinking": "enabled", "budget_tokens": 16000, "max_tokens": 16000},
            "value_error",
            "must be below max_tokens",
            id="budget-equal-to-max-tokens",
        ),
        pytest.param(
            {"thinking": "enabled", "budget_tokens": 1023},
            "greater_than_equal",
            "1024",
            id="budget-below-minimum",
        ),
        pytest.param({"max_turns": 0}, "greater_than", "0", id="max-turns-zero"),
        pytest.param({"effort": "extreme"}, "literal_error", "'max'", id="unknown-effort"),
    ],
)
def test_model_settings_rules(data: dict[str, Any], rule: str, fragment: str) -> None:
    """Model settings reject budgets that cannot work and out-of-range limits."""
    found = errors_of(ModelSettings, data)
    assert len(found) == 1, found
    assert found[0].rule == rule
    assert fragment in found[0].message


def test_model_settings_budget_just_below_max_tokens_is_fine() -> None:
    """The largest allowed thinking budget is one token below max_tokens."""
    settings = ModelSettings(thinking="enabled", budget_tokens=4095, max_tokens=4096)
    assert settings.budget_tokens == 4095


@pytest.mark.parametrize(
    ("sink", "rule"),
    [
        pytest.param({"type": "email", "to": "x@example.com"}, "union_tag_invalid", id="bad-type"),
        pytest.param({"channel": "#x"}, "union_tag_not_found", id="no-type"),
        pytest.param({"type": "slack"}, "missing", id="slack-without-channel"),
        pytest.param(
            {"type": "jsonl", "path": "x", "channel": "#x"}, "extra_forbidden", id="extra"
        ),
    ],
)
def test_sink_discriminator(sink: dict[str, Any], rule: str) -> None:
    """A sink is chosen by its `type`; unknown or missing types and wrong fields are errors."""
    found = errors_of(AnalyzerSpec, analyzer(sinks=[sink]))
    assert len(found) == 1, found
    assert found[0].rule == rule
    assert found[0].loc[:2] == ("sinks", 0)


def test_tool_that_is_neither_name_nor_definition_is_rejected() -> None:
    """A tool entry that is a number gets the `tool_kind` error."""
    found = errors_of(AnalyzerSpec, analyzer(tools=[5]))
    assert_single(found, "tool_kind", ("tools", 0), "built-in tool's name or an HTTP tool")


def test_http_tool_needs_allowed_hosts() -> None:
    """An HTTP tool without any allowed host is rejected."""
    found = errors_of(AnalyzerSpec, analyzer(tools=[http_tool(allowed_hosts=[])]))
    assert len(found) == 1, found
    assert found[0].rule == "too_short"
    assert found[0].loc[-1] == "allowed_hosts"


def test_analyzer_needs_an_output() -> None:
    """An analyzer that records nothing is rejected."""
    found = errors_of(AnalyzerSpec, analyzer(outputs=[]))
    assert_single(found, "too_short", ("outputs",), "at least 1")


# --------------------------------------------------------------------------------------------
# Conversations

CONVERSATION_CASES = [
    pytest.param(
        conversation(started_at="2026-11-20T10:00:00Z", ended_at="2026-11-20T09:59:59Z"),
        "ended-after-started",
        ("ended_at",),
        "is before started_at",
        id="ended-before-started",
    ),
    pytest.param(
        conversation(
            turns=[{"role": "user", "text": "hi"}],
            events=[{"type": "x"}, {"type": "tool_call", "turn_index": 1}],
        ),
        "turn-index-in-range",
        ("events", 1, "turn_index"),
        "turn_index is 1 but the conversation has 1 turn(s)",
        id="event-turn-index-out-of-range",
    ),
    pytest.param(
        conversation(events=[{"type": "transfer", "turn_index": 0}]),
        "turn-index-in-range",
        ("events", 0, "turn_index"),
        "has 0 turn(s)",
        id="event-turn-index-without-turns",
    ),
    pytest.param(
        conversation(started_at="2026-11-20T10:00:00"),
        "timezone_aware",
        ("started_at",),
        "timezone",
        id="naive-started-at",
    ),
    pytest.param(
        conversation(turns=[{"role": "user", "text": "hi", "at": "2026-11-20T10:00:03"}]),
        "timezone_aware",
        ("turns", 0, "at"),
        "timezone",
        id="naive-turn-at",
    ),
    pytest.param(
        conversation(events=[{"type": "x", "at": "2026-11-20T10:00:03"}]),
        "timezone_aware",
        ("events", 0, "at"),
        "timezone",
        id="naive-event-at",
    ),
    pytest.param(
        conversation(turns=[{"role": "bot", "text": "hi"}]),
        "literal_error",
        ("turns", 0, "role"),
        "'agent', 'user' or 'system'",
        id="bad-role",
    ),
    pytest.param(
        conversation(channel="fax"), "literal_error", ("channel",), "'voice'", id="bad-channel"
    ),
    pytest.param(
        conversation(outcome=""),
        "string_too_short",
        ("outcome",),
        "1 character",
        id="outcome-empty",
    ),
    pytest.param(
        conversation(outcome="x" * 101),
        "string_too_long",
        ("outcome",),
        "100 characters",
        id="outcome-too-long",
    ),
    pytest.param(
        {"tenant_id": "acme", "turns": []},
        "missing",
        ("conversation_id",),
        "required",
        id="no-conversation-id",
    ),
    pytest.param(
        conversation(conversation_id="   "),
        "string_too_short",
        ("conversation_id",),
        "1 character",
        id="blank-id",
    ),
    pytest.param(
        conversation(events=[{"type": ""}]),
        "string_too_short",
        ("events", 0, "type"),
        "1 character",
        id="blank-event-type",
    ),
    pytest.param(
        conversation(events=[{"type": "x", "duration_ms": -1}]),
        "greater_than_equal",
        ("events", 0, "duration_ms"),
        "0",
        id="negative-duration",
    ),
    pytest.param(
        conversation(tenant_id=None), "string_type", ("tenant_id",), "string", id="null-tenant"
    ),
]


@pytest.mark.parametrize(("data", "rule", "loc", "fragment"), CONVERSATION_CASES)
def test_conversation_rule_is_enforced(
    data: dict[str, Any], rule: str, loc: Loc, fragment: str
) -> None:
    """Each conversation rule rejects its minimal breaking input with the expected error."""
    assert_single(errors_of(Conversation, data), rule, loc, fragment)


def test_conversation_reports_every_broken_rule() -> None:
    """A conversation that ends too early and has a dangling event reports both."""
    data = conversation(
        started_at="2026-11-20T10:00:00Z",
        ended_at="2026-11-20T09:00:00Z",
        events=[{"type": "x", "turn_index": 0}, {"type": "y", "turn_index": 5}],
    )
    found = sorted((f.rule, f.loc) for f in errors_of(Conversation, data))
    assert found == [
        ("ended-after-started", ("ended_at",)),
        ("turn-index-in-range", ("events", 0, "turn_index")),
        ("turn-index-in-range", ("events", 1, "turn_index")),
    ]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(conversation(), id="minimal"),
        pytest.param(
            conversation(started_at="2026-11-20T10:00:00Z", ended_at="2026-11-20T10:00:00Z"),
            id="zero-length",
        ),
        pytest.param(
            conversation(
                started_at="2026-11-20T10:00:00+01:00", ended_at="2026-11-20T09:30:00+00:00"
            ),
            id="ended-after-started-in-other-offset",
        ),
        pytest.param(
            conversation(
                turns=[{"role": "user", "text": "a"}, {"role": "agent", "text": "b"}],
                events=[{"type": "tool_call", "turn_index": 1}],
            ),
            id="turn-index-last-turn",
        ),
        pytest.param(conversation(outcome="customer_hung_up"), id="outcome-not-well-known"),
        pytest.param(conversation(outcome="EarlyDisconnect"), id="outcome-camel-case"),
        pytest.param(conversation(outcome="hung up"), id="outcome-with-space"),
        pytest.param(conversation(channel="sms"), id="channel-sms"),
    ],
)
def test_valid_conversation_is_accepted(data: dict[str, Any]) -> None:
    """Conversations right next to a rule but respecting it are accepted."""
    parsed = Conversation.model_validate(data)
    duration = parsed.duration_seconds
    assert duration is not None
    assert duration >= 0
    assert parsed.outcome == data.get("outcome", "unknown")  # kept verbatim


def test_conversation_defaults() -> None:
    """An unspecified outcome is `unknown` and lists start empty."""
    parsed = Conversation.model_validate(conversation())
    assert parsed.outcome == "unknown"
    assert parsed.turns == []
    assert parsed.events == []
    assert parsed.duration_seconds == 432.0


def test_minimal_conversation_is_an_id_and_turns() -> None:
    """Without tenant, agent, channel or times, defaults fill in and nothing is invented."""
    parsed = Conversation.model_validate(
        {"conversation_id": "c-1", "turns": [{"role": "user", "text": "hi"}]}
    )
    assert parsed.tenant_id == "default"
    assert parsed.agent_id is None
    assert parsed.channel is None
    assert parsed.started_at is None
    assert parsed.ended_at is None
    assert parsed.duration_seconds is None
    assert parsed.outcome == "unknown"


def test_times_come_from_the_turns_when_absent() -> None:
    """The first and last turn times bound a conversation that gives no times of its own."""
    parsed = Conversation.model_validate(
        {
            "conversation_id": "c-1",
            "turns": [
                {"role": "agent", "text": "a", "at": "2026-11-20T10:00:05Z"},
                {"role": "user", "text": "b"},
                {"role": "user", "text": "c", "at": "2026-11-20T10:01:00Z"},
            ],
        }
    )
    assert parsed.started_at == datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC)
    assert parsed.ended_at == datetime(2026, 11, 20, 10, 1, 0, tzinfo=UTC)
    assert parsed.duration_seconds == 55.0
    again = Conversation.model_validate_json(parsed.model_dump_json())
    assert again == parsed


def test_given_times_are_kept_over_turn_times() -> None:
    """A time the conversation states wins; only the missing end is taken from the turns."""
    parsed = Conversation.model_validate(
        {
            "conversation_id": "c-1",
            "started_at": "2026-11-20T09:59:00Z",
            "turns": [{"role": "agent", "text": "a", "at": "2026-11-20T10:00:05Z"}],
        }
    )
    assert parsed.started_at == datetime(2026, 11, 20, 9, 59, 0, tzinfo=UTC)
    assert parsed.ended_at == datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Results

RESULT_CASES = [
    pytest.param(result(status="failed"), "a failed result has an error", id="failed-no-error"),
    pytest.param(
        result(error={"type": "x", "message": "y"}),
        "a failed result has an error",
        id="succeeded-with-error",
    ),
    pytest.param(result(status="skipped"), "skipped result has a skip_reason", id="skip-no-reason"),
    pytest.param(
        result(skip_reason="sampled out"),
        "skipped result has a skip_reason",
        id="succeeded-with-skip-reason",
    ),
    pytest.param(
        result(status="failed", error={"type": "x", "message": "y"}, skip_reason="why"),
        "skipped result has a skip_reason",
        id="failed-with-skip-reason",
    ),
]


@pytest.mark.parametrize(("data", "fragment"), RESULT_CASES)
def test_result_status_matches_details(data: dict[str, Any], fragment: str) -> None:
    """A failed result has an error and only it; a skipped one a skip_reason and only it."""
    assert_single(errors_of(AnalysisResult, data), "value_error", (), fragment)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(result(), id="succeeded"),
        pytest.param(
            result(status="failed", error={"type": "deadline_exceeded", "message": "late"}),
            id="failed",
        ),
        pytest.param(result(status="skipped", skip_reason="sampled out"), id="skipped"),
    ],
)
def test_consistent_result_is_accepted(data: dict[str, Any]) -> None:
    """Each status with exactly its own details is accepted."""
    assert AnalysisResult.model_validate(data).status == data["status"]


@pytest.mark.parametrize("value", [0, False, "", [], {"a": 1}])
def test_unknown_output_with_value_is_rejected(value: Any) -> None:
    """An output recorded as unknown cannot also carry a value, even a falsy one."""
    found = errors_of(RecordedOutput, {"unknown": True, "value": value})
    assert_single(found, "value_error", (), "an unknown output has no value")


def test_unknown_output_without_value_is_accepted() -> None:
    """`unknown` with a reason and no value is a first-class answer."""
    recorded = RecordedOutput(unknown=True, unknown_reason="not discussed", evidence_turns=[2])
    assert recorded.value is None
    assert recorded.evidence_turns == [2]


def test_evidence_turns_are_not_negative() -> None:
    """Evidence turn numbers are 0-based positions and cannot be negative."""
    found = errors_of(RecordedOutput, {"value": 1, "evidence_turns": [-1]})
    assert_single(found, "greater_than_equal", ("evidence_turns", 0), "0")
