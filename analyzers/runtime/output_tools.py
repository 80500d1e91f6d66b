"""Output recording: how an agent hands over its structured results.

The model is offered one tool, `record_output`, the same for every analyzer, so the tool list (the
start of the cached prompt prefix) is shared by every analyzer of a conversation while none is
offered another analyzer's outputs. Its input names the output and carries that output's
recording input: the value (per the output's schema), or `unknown` with a reason, and the
evidence (turn and event numbers). Each output's recording schema is written into the analyzer's
own brief (`recording_schema`). A call to `record_<name>` for one of the analyzer's own outputs is
still accepted (`OutputTool`), so a model that names the output's tool directly is not refused.
Every input is validated here and problems go back to the model as an error tool_result that
lists them.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import ValidationError

from analyzers.tools.base import JSON, ToolContext, ToolKind, ToolOutcome
from schemas.analyzer import OutputSpec
from schemas.outputs import OUTPUT_MODELS
from schemas.result import RecordedOutput

# Keywords the Messages API's strict tool mode accepts (reference/anthropic-api.md section 2).
_STRICT_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "allOf",
        "$ref",
        "$defs",
        "description",
        "title",
        "format",
        "default",
    }
)
_STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)


def strict_compatible(schema: Any) -> bool:
    """Whether the API can enforce `schema` itself with `strict: true`."""
    if isinstance(schema, list):
        return all(strict_compatible(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    is_object = schema.get("type") == "object" or "properties" in schema
    own_rules_ok = (
        not set(schema) - _STRICT_KEYWORDS
        and schema.get("format", "date") in _STRICT_FORMATS
        and (not is_object or schema.get("additionalProperties", True) is False)
    )
    children = [
        *(schema.get("properties") or {}).values(),
        *(schema.get("$defs") or {}).values(),
        *(schema[key] for key in ("items", "anyOf", "allOf") if key in schema),
    ]
    return own_rules_ok and all(strict_compatible(child) for child in children)


def _validator(output: OutputSpec) -> Draft202012Validator:
    return _cached_validator(output.model_dump_json())


@functools.lru_cache(maxsize=512)
def _cached_validator(output_json: str) -> Draft202012Validator:
    return Draft202012Validator(_recording_schema(output_json))


def recording_schema(output: OutputSpec) -> JSON:
    """The recording input of `output` (value or unknown, and evidence), besides `output`."""
    return _recording_schema(output.model_dump_json())


@functools.lru_cache(maxsize=512)
def _recording_schema(output_json: str) -> JSON:
    # The input schema of `record_<name>`: the value (or unknown) plus evidence turns. Keyed by
    # the output's JSON, so every run of an analyzer shares one schema (read-only) and one
    # validator.
    output = OutputSpec.model_validate_json(output_json)
    value_schema = output.value_schema()
    definitions = value_schema.pop("$defs", None)
    schema: JSON = {
        "type": "object",
        "properties": {
            "value": value_schema,
            "unknown": {
                "type": "boolean",
                "description": "true only when the conversation does not let you tell; "
                "then leave out value and give unknown_reason.",
            },
            "unknown_reason": {
                "type": "string",
                "description": "Why the answer cannot be told from the conversation.",
            },
            "evidence_turns": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "Numbers of the transcript turns this rests on, as shown in [n].",
            },
            "evidence_events": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "Numbers of the events this rests on, as shown in [eN] (give N): "
                "a refund issued, a record created, a tool that failed.",
            },
        },
        "required": ["evidence_turns"],
        "additionalProperties": False,
    }
    if definitions:
        schema["$defs"] = definitions
    return schema


@dataclass
class OutputRecorder:
    """Collects recorded outputs for one run and validates each recording."""

    outputs: list[OutputSpec]
    turn_count: int
    event_count: int
    recorded: dict[str, list[RecordedOutput]] = field(default_factory=dict)
    invalid_attempts: int = 0

    def __post_init__(self) -> None:
        self._validators = {output.name: _validator(output) for output in self.outputs}

    def missing_required(self) -> list[OutputSpec]:
        """Required outputs that have not been recorded yet."""
        return [o for o in self.outputs if o.required and not self.recorded.get(o.name)]

    def record(self, output: OutputSpec, arguments: JSON) -> ToolOutcome:
        """Validate and keep one recording, or explain to the model what to fix."""
        problems = self._problems(output, arguments)
        if problems:
            self.invalid_attempts += 1
            listing = "\n".join(f"- {problem}" for problem in problems)
            return ToolOutcome(
                f"Not recorded: the input of {output.tool_name} has {len(problems)} problem(s):\n"
                f"{listing}\nFix them and call {output.tool_name} again.",
                is_error=True,
            )
        unknown = bool(arguments.get("unknown", False))
        value = RecordedOutput(
            value=None if unknown else arguments.get("value"),
            unknown=unknown,
            unknown_reason=arguments.get("unknown_reason") if unknown else None,
            evidence_turns=sorted(set(arguments.get("evidence_turns", []))),
            evidence_events=sorted(set(arguments.get("evidence_events", []))),
        )
        existing = self.recorded.setdefault(output.name, [])
        if output.cardinality == "many" and not unknown:
            for number, earlier in enumerate(existing):
                if _same_item(earlier.value, value.value):
                    # Refused without counting as invalid: the item is already in the result.
                    return ToolOutcome(
                        f"Not recorded: this is the same item as {output.name} number "
                        f"{number + 1} already recorded. Record each item once.",
                        is_error=True,
                    )
        if output.cardinality == "one" and existing:
            existing[:] = [value]
            return ToolOutcome(f"Recorded {output.name}, replacing the earlier value.")
        existing.append(value)
        return ToolOutcome(f"Recorded {output.name} ({len(existing)} so far).")

    def _problems(self, output: OutputSpec, arguments: JSON) -> list[str]:
        problems = [
            f"{_path(error.absolute_path)}: {error.message}"
            for error in sorted(
                self._validators[output.name].iter_errors(arguments), key=lambda e: e.path
            )
        ]
        unknown = arguments.get("unknown") is True
        if unknown and "value" in arguments and arguments["value"] is not None:
            problems.append("value: leave it out when unknown is true")
        if unknown and not arguments.get("unknown_reason"):
            problems.append("unknown_reason: say why the answer cannot be told")
        if not unknown and "value" not in arguments:
            problems.append("value: required unless unknown is true")
        if not problems and not unknown and output.model is not None:
            # A named model may have rules JSON Schema cannot say (`team` when owner is other).
            problems += _model_problems(output.model, arguments.get("value"))
        problems += _out_of_range(arguments, "evidence_turns", "turn", self.turn_count)
        problems += _out_of_range(arguments, "evidence_events", "event", self.event_count)
        return problems


def _model_problems(model_name: str, value: Any) -> list[str]:
    try:
        OUTPUT_MODELS[model_name].model_validate(value)
    except ValidationError as exc:
        return [f"value: {error['msg'].removeprefix('Value error, ')}" for error in exc.errors()]
    return []


def _same_item(first: Any, second: Any) -> bool:
    """Whether two values are the same item, ignoring case and spacing in their texts."""
    return bool(_normalised(first) == _normalised(second))


def _normalised(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.casefold().split())
    if isinstance(value, dict):
        return {key: _normalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    return value


def _out_of_range(arguments: JSON, key: str, what: str, count: int) -> list[str]:
    cited = arguments.get(key, [])
    if not isinstance(cited, list):  # the schema check already reports the wrong type
        return []
    wrong = [
        n for n in cited if isinstance(n, int) and not isinstance(n, bool) and not 0 <= n < count
    ]
    if not wrong:
        return []
    valid = f"0 to {count - 1}" if count else f"it has no {what}s"
    return [f"{key}: {wrong} are not {what} numbers of this conversation ({valid})"]


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(input)"


@dataclass(frozen=True)
class OutputTool:
    """The `record_<name>` tool of one output, bound to the run's recorder."""

    output: OutputSpec
    recorder: OutputRecorder | None

    @property
    def name(self) -> str:
        """`record_<output name>`."""
        return self.output.tool_name

    @property
    def kind(self) -> ToolKind:
        """Output tools are traced as `output`."""
        return "output"

    def definition(self) -> JSON:
        """The tool definition; strict when the API can enforce the whole schema."""
        return _definition(self.output.model_dump_json())

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        """Record the value (validated) for this run."""
        if self.recorder is None:
            return ToolOutcome(f"{self.name} is not an output of this analyzer.", is_error=True)
        return self.recorder.record(self.output, arguments)


@functools.lru_cache(maxsize=512)
def _definition(output_json: str) -> JSON:
    output = OutputSpec.model_validate_json(output_json)
    schema = _recording_schema(output_json)
    many = (
        "Call it once per item."
        if output.cardinality == "many"
        else "Call it once; a second call replaces the first."
    )
    definition: JSON = {
        "name": output.tool_name,
        "description": f"Record the output '{output.name}': {output.description} {many}",
        "input_schema": schema,
    }
    if strict_compatible(schema):
        definition["strict"] = True
    return definition


RECORD_OUTPUT = "record_output"
"""The one output-recording tool the model is offered."""

_RECORD_OUTPUT_DEFINITION: JSON = {
    "name": RECORD_OUTPUT,
    "description": "Record one of the outputs your brief lists. Set output to its name and give "
    "the rest of the input as that output's input schema in the brief says: value (or unknown "
    "true with unknown_reason) and evidence_turns, plus evidence_events when an event proves "
    "it. Each call is checked; a rejected call lists what to fix.",
    "input_schema": {
        "type": "object",
        "properties": {
            "output": {"type": "string", "description": "The output's name, as in your brief."},
            "value": {"description": "The value, shaped as the output's schema says."},
            "unknown": {"type": "boolean"},
            "unknown_reason": {"type": "string"},
            "evidence_turns": {"type": "array", "items": {"type": "integer"}},
            "evidence_events": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["output", "evidence_turns"],
    },
}


@dataclass(frozen=True)
class RecordOutputTool:
    """`record_output`, bound to one run's outputs and recorder."""

    outputs: tuple[OutputSpec, ...]
    recorder: OutputRecorder

    @property
    def name(self) -> str:
        """Always `record_output`."""
        return RECORD_OUTPUT

    @property
    def kind(self) -> ToolKind:
        """Output tools are traced as `output`."""
        return "output"

    def definition(self) -> JSON:
        """One definition for every analyzer (a shared prompt prefix). Not strict: the value's
        shape differs per output, so every input is validated here instead."""
        return copy.deepcopy(_RECORD_OUTPUT_DEFINITION)

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        """Record the value for the named output, validated against that output's schema."""
        name = arguments.get("output")
        output = next((o for o in self.outputs if o.name == name), None)
        if output is None:
            own = ", ".join(o.name for o in self.outputs)
            self.recorder.invalid_attempts += 1
            return ToolOutcome(
                f"Not recorded: output must name one of your outputs ({own}), not {name!r}.",
                is_error=True,
            )
        rest = {key: value for key, value in arguments.items() if key != "output"}
        return self.recorder.record(output, rest)
