"""A stand-in analyst that plays a procedural agent's turns without a model.

`posthoc demo` uses it when no API key is configured, so the whole pipeline runs end to end with
plausible outputs. posthoc offers one output-recording tool, `record_output`, and describes each
output (with its input schema) in the brief; older layouts offered one `record_*` tool per output,
which the analyst still plays. Within a turn it:

1. thinks, and calls `get_turns` if that read-only tool is offered and not yet called;
2. records every output not yet recorded successfully, with input generated from its schema
   (strings quoted from the transcript, valid turn indices as evidence);
3. ends the turn with a short text.

A `record_*` call answered with an error `tool_result` counts as not recorded, so the analyst
tries again with a fresh input. Everything is derived from a hash of the request: the same
request always gets the same reply.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import re
import uuid
from collections.abc import Callable
from typing import Any

from analyzers.fakes.cache import canonical_json
from analyzers.fakes.replies import JSON, FakeBlock, FakeReply, Text, Thinking, ToolCall

RECORD_PREFIX = "record_"
RECORD_OUTPUT = "record_output"
READ_TOOL = "get_turns"
_SENTENCE = re.compile(r"[^.!?\n]{12,}[.!?]?")
# `[12] user 10:03:11: text` is how posthoc renders a turn (`conversation_tools.render_turn`);
# `<transcript turns="40">` heads the transcript block.
_TURN_MARKER = re.compile(r"(?m)^\s*\[(\d{1,5})\]")
_TURN_COUNT = re.compile(r'<transcript[^>]*\bturns="(\d+)"')
_EVENT_COUNT = re.compile(r'<events[^>]*\bcount="(\d+)"')
_SPEAKER = re.compile(
    r"^\s*(?:\[e?\d+\]\s*)?(?:[a-z_]+(?:\s+\d{1,2}:\d{2}(?::\d{2})?)?\s*:\s*)?", re.I
)
_FORMATS = {
    "date-time": "2026-11-20T10:00:00Z",
    "date": "2026-11-20",
    "time": "10:00:00Z",
    "duration": "PT5M",
    "email": "customer@example.com",
    "hostname": "example.com",
    "uri": "https://example.com/conversation",
    "ipv4": "192.0.2.10",
    "ipv6": "2001:db8::10",
}
_FALLBACK_PHRASES = (
    "The customer asked for help and the agent resolved the request.",
    "The agent followed the procedure and confirmed the outcome.",
    "No issue was found in this conversation.",
)


def _texts(value: object) -> list[str]:
    """Every string under `text`/`content` keys of system blocks and messages."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    if isinstance(value, dict):
        found: list[str] = []
        for key in ("text", "content"):
            if key in value:
                found.extend(_texts(value[key]))
        return found
    return []


@functools.lru_cache(maxsize=256)
def _sentences(text: str) -> tuple[str, ...]:
    """The quotable sentences of `text`: `_SENTENCE` matches of 8 characters or more once a
    leading turn index and speaker are cut, except those starting with `<` or `…`."""
    fragments = (match.group(0).strip() for match in _SENTENCE.finditer(text))
    cut = (
        _SPEAKER.sub("", fragment, count=1).strip()
        for fragment in fragments
        if not fragment.startswith(("<", "…"))
    )
    return tuple(sentence for sentence in cut if len(sentence) >= 8)


class _Context:
    """What the generator needs from the request: transcript sentences, turn count, rng."""

    def __init__(self, body: JSON, rng: random.Random) -> None:
        texts = _texts(body.get("system")) + [
            text
            for message in body.get("messages") or []
            if isinstance(message, dict) and message.get("role") == "user"
            for text in _texts(message.get("content"))
        ]
        joined = "\n".join(texts)
        # A sentence never spans a line break, so the sentences of the joined texts are those
        # of each text in turn (and the same transcript comes back in every turn: cached).
        self.sentences = [sentence for text in texts for sentence in _sentences(text)]
        declared = _TURN_COUNT.search(joined)
        if declared:
            count = int(declared.group(1))
        else:
            count = len({int(match.group(1)) for match in _TURN_MARKER.finditer(joined)})
        self.turns = max(1, count)
        events = _EVENT_COUNT.search(joined)
        self.events = int(events.group(1)) if events else 0
        self.rng = rng

    def sentence(self) -> str:
        pool = self.sentences or list(_FALLBACK_PHRASES)
        return self.rng.choice(pool)[:160].strip() or _FALLBACK_PHRASES[0]


def _resolve(schema: JSON, root: JSON) -> JSON:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for step in ref[2:].split("/"):
            target = target.get(step, {}) if isinstance(target, dict) else {}
        referenced: JSON = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _resolve(referenced, root)
    if "allOf" in schema:
        merged: JSON = {k: v for k, v in schema.items() if k != "allOf"}
        for raw_part in schema["allOf"]:
            part = _resolve(raw_part, root)
            merged["properties"] = {**merged.get("properties", {}), **part.get("properties", {})}
            merged["required"] = [*merged.get("required", []), *part.get("required", [])]
            merged.update({k: v for k, v in part.items() if k not in ("properties", "required")})
        return merged
    return schema


def _schema_type(schema: JSON) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        non_null = [kind for kind in declared if kind != "null"]
        return str(non_null[0]) if non_null else "null"
    if isinstance(declared, str):
        return declared
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _bounds(schema: JSON, step: float) -> tuple[float | None, float | None]:
    """Inclusive (low, high) from minimum/maximum and their exclusive forms."""
    low = schema.get("minimum")
    high = schema.get("maximum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = max(low if low is not None else float("-inf"), schema["exclusiveMinimum"] + step)
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = min(high if high is not None else float("inf"), schema["exclusiveMaximum"] - step)
    return low, high


def _integer(schema: JSON, ctx: _Context, root: JSON, name: str) -> int:
    low_bound, high_bound = _bounds(schema, 1)
    low = math.ceil(low_bound) if low_bound is not None else 0
    high = math.floor(high_bound) if high_bound is not None else low + 5
    if "turn" in name.lower():  # evidence: a valid index into the transcript's turns
        low, high = max(low, 0), min(high, ctx.turns - 1)
    elif "event" in name.lower():  # evidence: a valid index into the event log
        low, high = max(low, 0), min(high, ctx.events - 1)
    return ctx.rng.randint(low, max(low, high))


def _number(schema: JSON, ctx: _Context, root: JSON, name: str) -> float:
    low_bound, high_bound = _bounds(schema, 1e-3)
    low = low_bound if low_bound is not None else 0.0
    high = high_bound if high_bound is not None else low + 1.0
    return round(ctx.rng.uniform(low, high), 3) if high > low else low


def _string(schema: JSON, ctx: _Context, root: JSON, name: str) -> str:
    text = _FORMATS.get(str(schema.get("format")))
    if text is None and schema.get("format") == "uuid":
        text = str(uuid.UUID(int=ctx.rng.getrandbits(128), version=4))
    if text is None:
        text = ctx.sentence()
    max_length = schema.get("maxLength")
    if isinstance(max_length, int):
        text = text[:max_length]
    min_length = schema.get("minLength")
    if isinstance(min_length, int) and len(text) < min_length:
        text = text + "." * (min_length - len(text))
    return text


def _boolean(schema: JSON, ctx: _Context, root: JSON, name: str) -> bool:
    return ctx.rng.random() < 0.5


def _null(schema: JSON, ctx: _Context, root: JSON, name: str) -> None:
    return None


def _object(schema: JSON, ctx: _Context, root: JSON, name: str) -> JSON:
    """Every property, except optional ones that declare the answer unknown (`unknown`,
    `unknown_reason`): a plausible analyst knows its answers."""
    properties: JSON = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    return {
        key: generate(sub, ctx, root=root, name=key)
        for key, sub in properties.items()
        if key in required or not key.startswith("unknown")
    }


def _array(schema: JSON, ctx: _Context, root: JSON, name: str) -> list[object]:
    """As few items as allowed, at least one (none for event evidence when there are no
    events); distinct when `uniqueItems` asks for it."""
    if "event" in name.lower() and ctx.events == 0:
        return []
    count = max(1, int(schema.get("minItems", 1)))
    maximum = schema.get("maxItems")
    if isinstance(maximum, int):
        count = min(count, maximum)
    items = schema.get("items")
    item_schema: JSON = items if isinstance(items, dict) else {}
    values: list[object] = []
    for _ in range(count * 4):
        value = generate(item_schema, ctx, root=root, name=name)
        if value not in values or not schema.get("uniqueItems"):
            values.append(value)
        if len(values) >= count:
            break
    return values


_GENERATORS: dict[str, Callable[[JSON, _Context, JSON, str], object]] = {
    "object": _object,
    "array": _array,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "null": _null,
    "string": _string,
}


def generate(schema: JSON, ctx: _Context, *, root: JSON | None = None, name: str = "") -> object:
    """A value valid against `schema` (the JSON-Schema subset tool schemas use). `name` is the
    property the value is for: integers for `*turn*` properties are valid turn indices."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return ctx.rng.choice(schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list) and options:
        preferred = [o for o in options if _schema_type(_resolve(o, root)) != "null"] or options
        return generate(preferred[0], ctx, root=root, name=name)
    generator = _GENERATORS.get(_schema_type(schema), _string)
    return generator(schema, ctx, root, name)


def _recorded_tools(messages: list[JSON]) -> tuple[set[str], set[str]]:
    """(tools called with a successful result, tools called at all)."""
    names: dict[str, str] = {}
    failed: set[str] = set()
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                names[str(block.get("id"))] = str(block.get("name"))
            elif block.get("type") == "tool_result" and block.get("is_error"):
                failed.add(str(block.get("tool_use_id")))
    called = set(names.values())
    succeeded = {name for tool_id, name in names.items() if tool_id not in failed}
    return succeeded, called


def _thinking_requested(body: JSON) -> bool:
    thinking = body.get("thinking")
    return not isinstance(thinking, dict) or thinking.get("type") in ("enabled", "adaptive")


def simulated_analyst(body: JSON) -> FakeReply:
    """The next turn of a plausible analyst for this request (a `Responder`)."""
    seed = int.from_bytes(hashlib.sha256(canonical_json(body)).digest()[:8], "big")
    ctx = _Context(body, random.Random(seed))  # noqa: S311 (a simulation, not a secret)
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict) and "name" in tool]
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    succeeded, called = _recorded_tools(messages)
    content: list[FakeBlock] = []
    if _thinking_requested(body):
        content.append(Thinking(f"The conversation says: {ctx.sentence()} I will record it."))
    names = {str(tool["name"]) for tool in tools}
    if READ_TOOL in names and READ_TOOL not in called:
        tool = next(t for t in tools if t["name"] == READ_TOOL)
        schema = tool.get("input_schema") or {"type": "object"}
        content.append(ToolCall(READ_TOOL, _as_object(generate(schema, ctx))))
        return FakeReply(content)
    triggers = _trigger_question(messages)
    if triggers is not None:
        # posthoc's procedure description check: a verdict per procedure, as JSON text.
        verdicts = {name: {"applies": True, "reason": ctx.sentence()} for name in triggers}
        return FakeReply([Text(json.dumps(verdicts))])
    asked = _procedure_request(messages)
    if asked is not None:
        return FakeReply([*content, _procedure_answer(asked, ctx)])
    if RECORD_OUTPUT in names:
        return _record_through_one_tool(messages, content, ctx)
    own = _own_outputs(messages)
    pending = [
        tool
        for tool in tools
        if str(tool["name"]).startswith(RECORD_PREFIX)
        and tool["name"] not in succeeded
        and (own is None or tool["name"] in own)
    ]
    for tool in pending:
        schema = tool.get("input_schema") or {"type": "object"}
        content.append(ToolCall(str(tool["name"]), _as_object(generate(schema, ctx))))
    if pending:
        return FakeReply(content)
    recorded = sorted(name for name in succeeded if name.startswith(RECORD_PREFIX))
    summary = ", ".join(recorded) if recorded else "nothing to record"
    return FakeReply([Text(f"I reviewed the conversation and recorded: {summary}.")])


# posthoc's brief describes each output the analyzer records through `record_output` as a
# `### name (...)` heading followed by an `Input schema (besides output): {...}` line.
_OUTPUT_SECTION = re.compile(
    r"(?m)^### (\w+) \(.*\n(?:.*\n)*?Input schema \(besides output\): (.*)$"
)


def _record_through_one_tool(
    messages: list[JSON], content: list[FakeBlock], ctx: _Context
) -> FakeReply:
    schemas: dict[str, JSON] = {}
    for message in messages[:1]:
        for text in _user_texts(message):
            for match in _OUTPUT_SECTION.finditer(text):
                schemas[match.group(1)] = json.loads(match.group(2))
    done = _outputs_recorded(messages)
    pending = [name for name in schemas if name not in done]
    for name in pending:
        arguments = _as_object(generate(schemas[name], ctx))
        content.append(ToolCall(RECORD_OUTPUT, {"output": name, **arguments}))
    if pending:
        return FakeReply(content)
    summary = ", ".join(sorted(done)) if done else "nothing to record"
    return FakeReply([Text(f"I reviewed the conversation and recorded: {summary}.")])


def _outputs_recorded(messages: list[JSON]) -> set[str]:
    """Output names recorded through `record_output` with a successful result."""
    calls: dict[str, str] = {}
    failed: set[str] = set()
    for message in messages:
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use" and block.get("name") == RECORD_OUTPUT:
                arguments = block.get("input")
                if isinstance(arguments, dict):
                    calls[str(block.get("id"))] = str(arguments.get("output"))
            elif block.get("type") == "tool_result" and block.get("is_error"):
                failed.add(str(block.get("tool_use_id")))
    return {name for tool_id, name in calls.items() if tool_id not in failed}


# posthoc's brief lists the analyzer's own outputs as `- record_x: ...` lines; the tool list
# also holds other analyzers' output tools (for prompt caching), which this analyst must not call.
_OWN_OUTPUT = re.compile(r"(?m)^- (record_\w+):")
_PARAMETER_LINE = re.compile(r"(?m)^- (\w+) \((\w+)\):")


def _user_texts(message: JSON) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
    ]


def _own_outputs(messages: list[JSON]) -> set[str] | None:
    for message in messages:
        if message.get("role") == "user":
            found = {
                m.group(1) for text in _user_texts(message) for m in _OWN_OUTPUT.finditer(text)
            }
            if found:
                return found
    return None


_TRIGGER_LINE = re.compile(r"(?m)^- (\w+): ")


def _trigger_question(messages: list[JSON]) -> list[str] | None:
    """The procedure names of posthoc's description check, when this request is one."""
    if len(messages) != 1 or messages[0].get("role") != "user":
        return None
    text = "\n".join(_user_texts(messages[0]))
    if "<customer_turns>" not in text or "Triggers:" not in text:
        return None
    return _TRIGGER_LINE.findall(text.rsplit("Triggers:", 1)[-1])


def _procedure_request(messages: list[JSON]) -> str | None:
    """The text of the newest user message when it asks for a procedure tool."""
    if not messages or messages[-1].get("role") != "user":
        return None
    text = "\n".join(_user_texts(messages[-1]))
    if "call provide_parameters" in text or "Call decide_condition" in text:
        return text
    return None


def _procedure_answer(asked: str, ctx: _Context) -> ToolCall:
    if "Call decide_condition" in asked:
        return ToolCall(
            "decide_condition", {"holds": ctx.rng.random() < 0.5, "reason": ctx.sentence()}
        )
    values: JSON = {}
    for match in _PARAMETER_LINE.finditer(asked.split("call provide_parameters", 1)[-1]):
        name, kind = match.group(1), match.group(2)
        values[name] = (
            ctx.rng.randint(1, 100) if kind in ("integer", "number") else ctx.sentence()[:60]
        )
    return ToolCall("provide_parameters", {"values": values})


def _as_object(value: object) -> JSON:
    return value if isinstance(value, dict) else {}
