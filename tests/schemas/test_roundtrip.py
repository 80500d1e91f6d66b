"""Property tests: every valid contract survives a trip through JSON unchanged, and the JSON a
model emits is accepted by the JSON Schema the model publishes (the one `posthoc schema` prints
and editors use).

Strategies are written by hand so that they only build valid values: structured procedures put
their `if` steps where the rules allow and only use placeholders that are in scope.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from schemas import (
    OUTPUT_MODELS,
    AnalysisResult,
    AnalyzerSpec,
    Conversation,
    Procedure,
)
from schemas.analyzer import OUTPUT_TOOL_PREFIX
from schemas.conversation import WELL_KNOWN_OUTCOMES

EXAMPLES = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------
# Building blocks

WORD_CHARACTERS = string.ascii_letters + string.digits + "éßø漢字"
TEXT_CHARACTERS = WORD_CHARACTERS + " .,;:!?-'\"/()#@{}\n"

names = st.from_regex(r"\A[a-z_][a-z0-9_]{0,15}\Z")
"""Valid parameter, tool, output and procedure names."""

words = st.text(alphabet=WORD_CHARACTERS, min_size=1, max_size=12)
text = st.text(alphabet=TEXT_CHARACTERS, max_size=40)
non_empty_text = text.map(str.strip).filter(bool)
"""Text that the `strip_whitespace` constrained types keep exactly as it is."""

slugs = st.one_of(st.sampled_from(WELL_KNOWN_OUTCOMES), st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z"))

OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
aware_datetimes = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from(OFFSETS),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=8,
)
json_objects = st.dictionaries(text, json_values, max_size=3)


def unique_names(min_size: int = 0, max_size: int = 3) -> st.SearchStrategy[list[str]]:
    """A list of distinct names."""
    return st.lists(names, min_size=min_size, max_size=max_size, unique=True)


def placeholder(name: str) -> str:
    """`{{name}}`, sometimes written with inner spaces."""
    return "{{" + name + "}}"


# --------------------------------------------------------------------------------------------
# Conversations


@st.composite
def conversations(draw: st.DrawFn) -> Conversation:
    """A valid conversation: ends after it starts, events point at turns that exist."""
    started = draw(aware_datetimes)
    ended = started + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=3)))
    turns = draw(
        st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["agent", "user", "system"]), "text": text},
                optional={"at": aware_datetimes, "metadata": json_objects},
            ),
            max_size=4,
        )
    )
    turn_index = st.integers(0, len(turns) - 1) if turns else st.none()
    events = draw(
        st.lists(
            st.fixed_dictionaries(
                {"type": words},
                optional={
                    "name": st.one_of(st.none(), names),
                    "arguments": st.one_of(st.none(), json_objects),
                    "result": json_values,
                    "succeeded": st.one_of(st.none(), st.booleans()),
                    "duration_ms": st.one_of(st.none(), st.integers(0, 10**7)),
                    "at": st.one_of(st.none(), aware_datetimes),
                    "turn_index": st.one_of(st.none(), turn_index),
                    "procedure_name": st.one_of(st.none(), names),
                    "procedure_step_order": st.one_of(st.none(), st.integers(0, 50)),
                    "metadata": json_objects,
                },
            ),
            max_size=3,
        )
    )
    data: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {
                "conversation_id": non_empty_text,
                "tenant_id": non_empty_text,
                "agent_id": non_empty_text,
                "channel": st.sampled_from(["voice", "chat", "sms", "email", "other"]),
            },
            optional={
                "agent_version": st.one_of(st.none(), text),
                "outcome": slugs,
                "termination_reason": st.one_of(st.none(), text),
                "dynamic_variables": json_objects,
                "metadata": json_objects,
            },
        )
    )
    return Conversation.model_validate(
        {**data, "started_at": started, "ended_at": ended, "turns": turns, "events": events}
    )


# --------------------------------------------------------------------------------------------
# Procedures


@st.composite
def arguments_using(draw: st.DrawFn, scope: list[str]) -> dict[str, Any]:
    """Tool arguments whose placeholders only use names in `scope` (and system variables)."""
    usable = [*scope, "system__agent_turns"]
    values = st.one_of(
        text.filter(lambda value: "{{" not in value),
        st.sampled_from(usable).map(placeholder),
        st.sampled_from(usable).map(lambda name: "id: {{ " + name + ".result.items[0] }}"),
        st.integers(),
        st.booleans(),
    )
    return draw(st.dictionaries(names, values, max_size=3))


@st.composite
def structured_steps(draw: st.DrawFn, declared: list[str]) -> list[dict[str, Any]]:
    """Steps that respect every structural rule.

    No `if` first, none nested, none right after another; tool results get distinct names and
    placeholders only refer to declared names and results of tool steps that ran before.
    """
    scope = list(declared)
    used_results: set[str] = set()

    def tool_step() -> dict[str, Any]:
        tool_name = draw(names)
        step_id = draw(st.one_of(st.none(), names))
        result_name = step_id or tool_name
        if result_name in used_results:
            step_id = f"s{len(used_results)}_{result_name}"[:64]
            result_name = step_id
        step: dict[str, Any] = {"tool": tool_name, "arguments": draw(arguments_using(scope))}
        if step_id is not None:
            step["id"] = step_id
        if draw(st.booleans()):
            step["instruction"] = draw(text)
        if draw(st.booleans()):
            step["optional"] = draw(st.booleans())
        used_results.add(result_name)
        scope.append(result_name)
        return step

    def plain_step() -> dict[str, Any]:
        if draw(st.booleans()):
            return tool_step()
        step: dict[str, Any] = {"instruction": draw(non_empty_text)}
        if draw(st.booleans()):
            step["optional"] = True
        return step

    steps = [plain_step()]
    for _ in range(draw(st.integers(0, 4))):
        if steps[-1].get("if") is None and draw(st.booleans()):
            condition = draw(
                st.one_of(
                    st.sampled_from([*scope, "true"]).map(lambda name: f"{name} != null"),
                    non_empty_text.map(lambda words: {"natural_language": words}),
                )
            )
            if isinstance(condition, str):
                condition = {"expression": condition}
            nested = [plain_step() for _ in range(draw(st.integers(1, 3)))]
            steps.append({"if": condition, "steps": nested})
        else:
            steps.append(plain_step())
    return steps


@st.composite
def procedures(draw: st.DrawFn) -> Procedure:
    """A valid free-form or structured procedure."""
    parameter_names = draw(unique_names())
    # A name may be a parameter or a dynamic variable, not both (that would be ambiguous).
    dynamic_variables = [
        name for name in draw(unique_names(max_size=2)) if name not in parameter_names
    ]
    parameters = [
        draw(
            st.fixed_dictionaries(
                {"name": st.just(name)},
                optional={
                    "description": text,
                    "type": st.sampled_from(
                        ["string", "integer", "number", "boolean", "object", "array"]
                    ),
                    "required": st.booleans(),
                },
            )
        )
        for name in parameter_names
    ]
    data: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {
                "name": names,
                "trigger": st.fixed_dictionaries(
                    {"description": non_empty_text},
                    optional={
                        "patterns": st.lists(non_empty_text, max_size=2),
                        "conditions": st.lists(non_empty_text, max_size=2),
                    },
                ),
            },
            optional={
                "version": st.integers(1, 1000),
                "description": text,
                "tenant_id": st.one_of(st.none(), words),
                "agent_id": st.one_of(st.none(), words),
                "shared": st.booleans(),
                "approved": st.booleans(),
                "created_by": st.sampled_from(["admin", "learned"]),
                "created_at": st.one_of(st.none(), aware_datetimes),
            },
        )
    )
    data["parameters"] = parameters
    data["dynamic_variables"] = dynamic_variables
    if draw(st.booleans()):
        data["content"] = draw(non_empty_text)
    else:
        data["steps"] = draw(structured_steps([*parameter_names, *dynamic_variables]))
    return Procedure.model_validate(data)


# --------------------------------------------------------------------------------------------
# Analyzers

BUILTIN_TOOLS = ["get_turns", "get_events", "search_conversation"]
tool_names = names.filter(lambda name: not name.startswith(OUTPUT_TOOL_PREFIX))


@st.composite
def http_tools(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """An HTTP tool whose host is allowed and whose templates use only declared inputs."""
    inputs = draw(unique_names(max_size=3))
    host = draw(st.sampled_from(["api.example.com", "crm.acme.example", "localhost"]))
    usable = [*inputs, "secrets.TOKEN"]
    pieces = st.one_of(
        st.from_regex(r"\A[a-z0-9]{1,8}\Z"), st.sampled_from(usable).map(placeholder)
    )
    path = "/".join(draw(st.lists(pieces, max_size=3)))
    port = draw(st.sampled_from(["", ":8443"]))
    tool: dict[str, Any] = {
        "name": name,
        "description": draw(non_empty_text),
        "method": draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"])),
        "url": f"https://{host}{port}/{path}",
        "headers": draw(st.dictionaries(words, pieces, max_size=2)),
        "body": draw(st.one_of(st.none(), st.dictionaries(words, pieces, max_size=2))),
        "input_schema": {
            "type": "object",
            "properties": {item: {"type": "string"} for item in inputs},
        },
        # An entry without a port allows the default one only: pin the port when there is one.
        "allowed_hosts": [host + port, *draw(st.lists(words, max_size=1))],
    }
    if draw(st.booleans()):
        tool["timeout_seconds"] = draw(st.floats(0.1, 120))
    if draw(st.booleans()):
        tool["effect"] = draw(st.sampled_from(["read", "write"]))
        tool["idempotency_header"] = draw(st.sampled_from(["Idempotency-Key", "X-Request-Id"]))
    return tool


@st.composite
def model_settings(draw: st.DrawFn) -> dict[str, Any]:
    """Model settings whose thinking budget, when given, fits."""
    data: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "id": st.one_of(st.none(), words),
                "effort": st.one_of(
                    st.none(), st.sampled_from(["low", "medium", "high", "xhigh", "max"])
                ),
                "max_turns": st.integers(1, 100),
                "max_output_retries": st.integers(0, 5),
                "max_nudges": st.integers(0, 5),
                "timeout_seconds": st.floats(1, 3600),
                "idle_timeout_seconds": st.floats(1, 600),
                "max_cost_usd": st.one_of(st.none(), st.floats(0.01, 100)),
                "max_input_tokens": st.one_of(st.none(), st.integers(1, 10**6)),
            },
        )
    )
    max_tokens = draw(st.integers(1, 64_000))
    data["max_tokens"] = max_tokens
    if max_tokens > 1025 and draw(st.booleans()):
        data["thinking"] = "enabled"
        data["budget_tokens"] = draw(st.integers(1024, max_tokens - 1))
    else:
        data["thinking"] = draw(st.sampled_from(["adaptive", "enabled", "disabled"]))
    return data


sinks = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("slack"), "channel": non_empty_text},
        optional={"mention": st.lists(words, max_size=2), "when": non_empty_text},
    ),
    st.fixed_dictionaries(
        {"type": st.just("webhook"), "url": st.just("https://hooks.example.com/posthoc")},
        optional={"secret": st.just("{{secrets.HOOK}}"), "when": non_empty_text},
    ),
    st.fixed_dictionaries(
        {"type": st.just("jsonl"), "path": non_empty_text},
        optional={"when": non_empty_text},
    ),
)


@st.composite
def outputs(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """An output with either a JSON Schema or a built-in model."""
    data: dict[str, Any] = {"name": name, "description": draw(non_empty_text)}
    if draw(st.booleans()):
        data["model"] = draw(st.sampled_from(sorted(OUTPUT_MODELS)))
    else:
        data["schema"] = {
            "type": "object",
            "properties": {field: {"type": "string"} for field in draw(unique_names())},
        }
    if draw(st.booleans()):
        data["cardinality"] = draw(st.sampled_from(["one", "many"]))
    if draw(st.booleans()):
        data["required"] = draw(st.booleans())
    return data


@st.composite
def analyzers(draw: st.DrawFn) -> AnalyzerSpec:
    """A valid analyzer."""
    builtin = draw(st.lists(st.sampled_from(BUILTIN_TOOLS), unique=True, max_size=3))
    http_names = draw(
        st.lists(tool_names.filter(lambda name: name not in BUILTIN_TOOLS), unique=True, max_size=2)
    )
    tools: list[Any] = [*builtin, *(draw(http_tools(name)) for name in http_names)]
    tools = draw(st.permutations(tools))
    output_names = draw(unique_names(min_size=1, max_size=3))
    data: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"name": names, "description": non_empty_text, "instructions": non_empty_text},
            optional={
                "version": st.text(alphabet=WORD_CHARACTERS + ".-", min_size=1, max_size=10),
                "trigger": st.fixed_dictionaries(
                    {},
                    optional={
                        "outcomes": st.lists(slugs, max_size=2),
                        "channels": st.lists(st.sampled_from(["voice", "chat"]), max_size=2),
                        "agents": st.lists(words, max_size=2),
                        "tenants": st.lists(words, max_size=2),
                        "expression": st.one_of(st.none(), non_empty_text),
                        "sample_rate": st.floats(0, 1),
                    },
                ),
                "procedures": unique_names(),
                "model": model_settings(),
                "sinks": st.lists(sinks, max_size=3),
                "dry_run": st.booleans(),
            },
        )
    )
    data["tools"] = tools
    data["outputs"] = [draw(outputs(name)) for name in output_names]
    return AnalyzerSpec.model_validate(data)


# --------------------------------------------------------------------------------------------
# Results

recorded_outputs: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(
        dict,
        value=json_values,
        evidence_turns=st.lists(st.integers(0, 200), max_size=3),
    ),
    st.builds(
        dict,
        unknown=st.just(True),
        unknown_reason=st.one_of(st.none(), text),
        evidence_turns=st.lists(st.integers(0, 200), max_size=3),
    ),
)

tool_calls = st.fixed_dictionaries(
    {"tool_name": words, "succeeded": st.booleans()},
    optional={
        "tool_use_id": st.one_of(st.none(), words),
        "kind": st.sampled_from(["builtin", "http", "output", "procedure"]),
        "input": json_objects,
        "output": json_values,
        "error": st.one_of(st.none(), text),
        "duration_ms": st.floats(0, 10**6),
        "started_at": st.one_of(st.none(), aware_datetimes),
        "procedure_name": st.one_of(st.none(), names),
        "procedure_step_order": st.one_of(st.none(), st.integers(0, 30)),
    },
)

non_negative = st.integers(0, 10**9)
money = st.floats(0, 1000)


@st.composite
def results(draw: st.DrawFn) -> AnalysisResult:
    """A valid analysis result of any status, with matching error or skip reason."""
    status = draw(st.sampled_from(["succeeded", "failed", "skipped"]))
    data: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {
                "run_id": words,
                "conversation_id": words,
                "analyzer": names,
                "analyzer_version": words,
            },
            optional={
                "tenant_id": st.one_of(st.none(), words),
                "outputs": st.dictionaries(names, st.lists(recorded_outputs, max_size=2)),
                "trace": st.lists(tool_calls, max_size=3),
                "usage": st.fixed_dictionaries(
                    {
                        "input_tokens": non_negative,
                        "output_tokens": non_negative,
                        "cache_creation_input_tokens": non_negative,
                        "cache_read_input_tokens": non_negative,
                    }
                ),
                "cost": st.fixed_dictionaries(
                    {
                        "input_usd": money,
                        "output_usd": money,
                        "cache_write_usd": money,
                        "cache_read_usd": money,
                    }
                ),
                "model": st.one_of(st.none(), words),
                "model_turns": st.integers(0, 50),
                "truncated": st.booleans(),
                "provenance": st.one_of(
                    st.none(),
                    st.fixed_dictionaries(
                        {"analyzer_version": words},
                        optional={
                            "model": words,
                            "prompt_hash": st.from_regex(r"\A[0-9a-f]{64}\Z"),
                            "spec_hash": st.from_regex(r"\A[0-9a-f]{64}\Z"),
                            "transcript_hash": st.from_regex(r"\A[0-9a-f]{64}\Z"),
                            "posthoc_version": words,
                        },
                    ),
                ),
            },
        )
    )
    if draw(st.booleans()):
        started = draw(aware_datetimes)
        data["timings"] = {
            "started_at": started,
            "finished_at": started + draw(st.timedeltas(timedelta(0), timedelta(hours=1))),
            "model_seconds": draw(st.floats(0, 3600)),
            "tool_seconds": draw(st.floats(0, 3600)),
        }
    data["status"] = status
    if status == "failed":
        data["error"] = draw(
            st.fixed_dictionaries(
                {"type": words, "message": text}, optional={"retryable": st.booleans()}
            )
        )
    if status == "skipped":
        data["skip_reason"] = draw(text)
    return AnalysisResult.model_validate(data)


# --------------------------------------------------------------------------------------------
# The properties


def json_round_trip(value: BaseModel) -> tuple[Any, BaseModel]:
    """Dump to JSON text, load it back, validate it again: the emitted JSON and the new model."""
    emitted = json.loads(json.dumps(value.model_dump(mode="json")))
    return emitted, type(value).model_validate(emitted)


def assert_round_trips(value: BaseModel) -> None:
    """The value survives the JSON trip unchanged and its JSON fits the published schema."""
    emitted, again = json_round_trip(value)
    assert again == value
    validator = Draft202012Validator(type(value).model_json_schema())
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(emitted)]
    assert problems == []


@pytest.mark.parametrize("model", [Conversation, Procedure, AnalyzerSpec, AnalysisResult])
def test_published_schema_is_valid_draft_2020_12(model: type[BaseModel]) -> None:
    """Each contract's JSON Schema is itself a valid Draft 2020-12 schema."""
    Draft202012Validator.check_schema(model.model_json_schema())


@EXAMPLES
@given(conversations())
def test_conversation_round_trips_through_json(conversation: Conversation) -> None:
    """A valid conversation comes back equal from its JSON, which fits its schema."""
    assert_round_trips(conversation)


@EXAMPLES
@given(procedures())
def test_procedure_round_trips_through_json(procedure: Procedure) -> None:
    """A valid free-form or structured procedure comes back equal from its JSON, which fits
    its schema."""
    assert_round_trips(procedure)


def test_procedure_with_if_step_round_trips_through_json() -> None:
    """A structured procedure with an `if` step comes back from the JSON it emits (the
    hand-picked case of the property above, so a failure names the culprit)."""
    procedure = Procedure.model_validate(
        {
            "name": "p",
            "trigger": {"description": "d"},
            "steps": [
                {"instruction": "look"},
                {"if": {"expression": "true"}, "steps": [{"instruction": "act"}]},
            ],
        }
    )
    emitted = json.loads(json.dumps(procedure.model_dump(mode="json")))
    assert "if" in emitted["steps"][1], emitted["steps"][1]
    assert Procedure.model_validate(emitted) == procedure


@EXAMPLES
@given(analyzers())
def test_analyzer_round_trips_through_json(analyzer: AnalyzerSpec) -> None:
    """A valid analyzer comes back equal from its JSON, which fits its schema."""
    assert_round_trips(analyzer)


def test_analyzer_output_schema_is_emitted_under_its_published_name() -> None:
    """An output's JSON Schema is emitted as `schema`, the key the analyzer schema and YAML use
    (the hand-picked case of the property above)."""
    spec = AnalyzerSpec.model_validate(
        {
            "name": "a",
            "description": "d",
            "instructions": "i",
            "outputs": [{"name": "o", "description": "d", "schema": {"type": "object"}}],
        }
    )
    emitted, _ = json_round_trip(spec)
    assert emitted["outputs"][0].get("schema") == {"type": "object"}, emitted["outputs"][0]


@EXAMPLES
@given(results())
def test_result_round_trips_through_json(result: AnalysisResult) -> None:
    """A valid succeeded, failed or skipped result comes back equal from its JSON, which fits
    its schema."""
    assert_round_trips(result)


# --------------------------------------------------------------------------------------------
# Unknown conversation fields go into metadata

BASE_CONVERSATION: dict[str, Any] = {
    "conversation_id": "c-1",
    "tenant_id": "acme",
    "agent_id": "bot",
    "channel": "voice",
    "started_at": "2026-11-20T10:00:00Z",
    "ended_at": "2026-11-20T10:07:12Z",
    "turns": [{"role": "user", "text": "hi"}],
    "events": [{"type": "tool_call"}],
}


def test_unknown_conversation_fields_move_into_metadata() -> None:
    """Unknown fields of a conversation, a turn and an event land in that object's metadata."""
    data = {
        **BASE_CONVERSATION,
        "call_sid": "CA123",
        "metadata": {"region": "eu"},
        "turns": [{"role": "user", "text": "hi", "confidence": 0.93, "words": [{"w": "hi"}]}],
        "events": [{"type": "tool_call", "latency_ms": 12, "metadata": {"trace": "t-1"}}],
    }
    parsed = Conversation.model_validate(data)
    assert parsed.metadata == {"region": "eu", "call_sid": "CA123"}
    assert parsed.turns[0].metadata == {"confidence": 0.93, "words": [{"w": "hi"}]}
    assert parsed.events[0].metadata == {"trace": "t-1", "latency_ms": 12}


def test_unknown_fields_survive_a_round_trip() -> None:
    """A conversation with unknown fields keeps them, in metadata, through a JSON round trip."""
    data = {**BASE_CONVERSATION, "call_sid": "CA123", "metadata": None}
    parsed = Conversation.model_validate(data)
    _, again = json_round_trip(parsed)
    assert isinstance(again, Conversation)
    assert again.metadata == {"call_sid": "CA123"}
    assert again == parsed


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        pytest.param(
            {**BASE_CONVERSATION, "call_sid": "x", "metadata": {"call_sid": "y"}},
            (),
            id="conversation",
        ),
        pytest.param(
            {
                **BASE_CONVERSATION,
                "turns": [
                    {"role": "user", "text": "hi", "call_sid": "x", "metadata": {"call_sid": 1}}
                ],
            },
            ("turns", 0),
            id="turn",
        ),
        pytest.param(
            {
                **BASE_CONVERSATION,
                "events": [{"type": "t", "call_sid": "x", "metadata": {"call_sid": 1}}],
            },
            ("events", 0),
            id="event",
        ),
    ],
)
def test_unknown_field_colliding_with_metadata_is_an_error(
    data: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    """An unknown field that would overwrite a metadata key is an error naming the key."""
    with pytest.raises(ValidationError) as info:
        Conversation.model_validate(data)
    (error,) = info.value.errors()
    assert tuple(error["loc"]) == loc
    assert "['call_sid']" in error["msg"]
    assert "overwrite" in error["msg"]
