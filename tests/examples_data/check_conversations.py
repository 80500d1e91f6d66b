#!/usr/bin/env python3
"""Self-check for the example conversations in `examples/conversations/` (stdlib only).

Loads every `*.json` file and every line of every `*.jsonl` file there and checks each conversation
against the canonical format: required fields and their types, valid roles, channels, outcomes and
event types, timestamps that parse (with a timezone), increase, and lie within
[started_at, ended_at], event `turn_index` inside the turns, conversation ids unique across all
files, pretty-printing of the `.json` files, and that the long example really is long.

Run:  python tests/examples_data/check_conversations.py [DIRECTORY]
Exits 0 when every check passes, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "examples" / "conversations"

REQUIRED = {
    "conversation_id": str,
    "tenant_id": str,
    "agent_id": str,
    "agent_version": str,
    "channel": str,
    "started_at": str,
    "ended_at": str,
    "outcome": str,
    "turns": list,
    "events": list,
    "dynamic_variables": dict,
    "metadata": dict,
}
OPTIONAL_NULLABLE = {"termination_reason": str}
CHANNELS = {"voice", "chat", "sms", "email", "other"}
ROLES = {"agent", "user", "system"}
EVENT_TYPES = {
    "tool_call",
    "transfer",
    "procedure_started",
    "procedure_finished",
    "error",
    "end_call",
}
TOOL_CALL_FIELDS = ("arguments", "result", "succeeded", "duration_ms")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
LONG_FILE = "long_technical_support.json"
LONG_MIN_TURNS = 300


def parse_time(value: Any, where: str, problems: list[str]) -> dt.datetime | None:
    """An ISO 8601 timestamp with a timezone, or None (and a problem) if it isn't one."""
    if not isinstance(value, str):
        problems.append(f"{where}: timestamp must be a string, got {value!r}")
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        problems.append(f"{where}: not an ISO 8601 timestamp: {value!r}")
        return None
    if parsed.tzinfo is None:
        problems.append(f"{where}: timestamp has no timezone: {value!r}")
        return None
    return parsed


def check_fields(conv: dict[str, Any], where: str, problems: list[str]) -> None:
    for name, typ in REQUIRED.items():
        if name not in conv:
            problems.append(f"{where}: missing field {name!r}")
        elif not isinstance(conv[name], typ):
            problems.append(f"{where}: {name!r} should be {typ.__name__}")
    for name, typ in OPTIONAL_NULLABLE.items():
        if conv.get(name) is not None and not isinstance(conv[name], typ):
            problems.append(f"{where}: {name!r} should be {typ.__name__} or null")
    unknown = set(conv) - set(REQUIRED) - set(OPTIONAL_NULLABLE)
    if unknown:
        problems.append(f"{where}: unknown fields {sorted(unknown)}")
    if conv.get("channel") not in CHANNELS:
        problems.append(f"{where}: channel {conv.get('channel')!r} not in {sorted(CHANNELS)}")
    if not isinstance(conv.get("outcome"), str) or not SNAKE.match(conv["outcome"]):
        problems.append(f"{where}: outcome {conv.get('outcome')!r} is not lower_snake_case")


def check_turns(
    conv: dict[str, Any],
    where: str,
    span: tuple[dt.datetime, dt.datetime],
    problems: list[str],
) -> list[dt.datetime | None]:
    """Roles, text and the time of each turn; returns the parsed times (None where absent)."""
    start, end = span
    times: list[dt.datetime | None] = []
    previous: dt.datetime | None = None
    for i, turn in enumerate(conv.get("turns", [])):
        w = f"{where} turn {i}"
        if not isinstance(turn, dict):
            problems.append(f"{w}: not an object")
            times.append(None)
            continue
        if turn.get("role") not in ROLES:
            problems.append(f"{w}: role {turn.get('role')!r} not in {sorted(ROLES)}")
        if not isinstance(turn.get("text"), str) or not turn["text"].strip():
            problems.append(f"{w}: text missing or empty")
        at = parse_time(turn["at"], w, problems) if "at" in turn else None
        times.append(at)
        if at is None:
            continue
        if not start <= at <= end:
            problems.append(f"{w}: at {turn['at']} outside [started_at, ended_at]")
        if previous is not None and at < previous:
            problems.append(f"{w}: at {turn['at']} is earlier than the previous turn")
        previous = at
    return times


def check_event_fields(event: dict[str, Any], w: str, problems: list[str]) -> None:
    """Type, name, the fields a tool call needs, and the procedure fields (both or neither)."""
    if event.get("type") not in EVENT_TYPES:
        problems.append(f"{w}: type {event.get('type')!r} not in {sorted(EVENT_TYPES)}")
    if not isinstance(event.get("name"), str) or not event["name"]:
        problems.append(f"{w}: name missing")
    if event.get("type") == "tool_call":
        missing = [k for k in TOOL_CALL_FIELDS if k not in event]
        if missing:
            problems.append(f"{w}: tool_call without {missing}")
        if "succeeded" in event and not isinstance(event["succeeded"], bool):
            problems.append(f"{w}: succeeded must be a boolean")
        duration = event.get("duration_ms")
        if duration is not None and (not isinstance(duration, int) or duration < 0):
            problems.append(f"{w}: duration_ms must be a non-negative integer")
    has_name, has_step = "procedure_name" in event, "procedure_step_order" in event
    if has_name != has_step:
        problems.append(f"{w}: procedure_name and procedure_step_order go together")
    step = event.get("procedure_step_order")
    if has_step and (not isinstance(step, int) or step < 1):
        problems.append(f"{w}: procedure_step_order must be a positive integer")


def check_event(
    event: Any,
    w: str,
    span: tuple[dt.datetime, dt.datetime],
    turn_times: list[dt.datetime | None],
    problems: list[str],
) -> dt.datetime | None:
    """One event's fields; returns its parsed time (None where absent)."""
    if not isinstance(event, dict):
        problems.append(f"{w}: not an object")
        return None
    check_event_fields(event, w, problems)
    index = event.get("turn_index")
    if not isinstance(index, int) or not 0 <= index < len(turn_times):
        problems.append(f"{w}: turn_index {index!r} not in [0, {len(turn_times)})")
        index = None
    at = parse_time(event["at"], w, problems) if "at" in event else None
    if at is None:
        return None
    if not span[0] <= at <= span[1]:
        problems.append(f"{w}: at {event['at']} outside [started_at, ended_at]")
    if index is not None:
        before = turn_times[index]
        after = turn_times[index + 1] if index + 1 < len(turn_times) else None
        if before is not None and at < before:
            problems.append(f"{w}: happens before its turn {index}")
        if after is not None and at > after:
            problems.append(f"{w}: happens after turn {index + 1}; turn_index should be larger")
    return at


def check_dynamic_variables(
    conv: dict[str, Any], where: str, span: tuple[dt.datetime, dt.datetime], problems: list[str]
) -> None:
    dyn = conv.get("dynamic_variables")
    if not isinstance(dyn, dict):
        return
    agent_turns = sum(
        1 for t in conv.get("turns", []) if isinstance(t, dict) and t.get("role") == "agent"
    )
    if "system__agent_turns" in dyn and dyn["system__agent_turns"] != agent_turns:
        problems.append(
            f"{where}: system__agent_turns is {dyn['system__agent_turns']}, "
            f"but there are {agent_turns} agent turns"
        )
    seconds = (span[1] - span[0]).total_seconds()
    if "system__call_duration_secs" in dyn and abs(dyn["system__call_duration_secs"] - seconds) > 1:
        problems.append(
            f"{where}: system__call_duration_secs is {dyn['system__call_duration_secs']}, "
            f"but ended_at - started_at is {seconds:.0f}"
        )


def check_conversation(conv: Any, where: str) -> list[str]:
    """Every problem with one conversation (an empty list when it is fine)."""
    problems: list[str] = []
    if not isinstance(conv, dict):
        return [f"{where}: not a JSON object"]
    check_fields(conv, where, problems)
    start = parse_time(conv.get("started_at"), f"{where} started_at", problems)
    end = parse_time(conv.get("ended_at"), f"{where} ended_at", problems)
    if start is None or end is None:
        return problems
    if end < start:
        problems.append(f"{where}: ended_at is before started_at")
        return problems
    span = (start, end)
    turn_times = check_turns(conv, where, span, problems)
    previous: dt.datetime | None = None
    for i, event in enumerate(conv.get("events", [])):
        at = check_event(event, f"{where} event {i}", span, turn_times, problems)
        if at is not None and previous is not None and at < previous:
            problems.append(f"{where} event {i}: earlier than the previous event")
        previous = at or previous
    check_dynamic_variables(conv, where, span, problems)
    return problems


def load_all(directory: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(label, conversation) for every conversation found, plus problems met while loading."""
    found: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        try:
            conv = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name}: invalid JSON: {exc}")
            continue
        if text != json.dumps(conv, indent=2, ensure_ascii=False) + "\n":
            problems.append(
                f"{path.name}: not pretty-printed with 2-space indent (UTF-8, final newline)"
            )
        found.append((path.name, conv))
    for path in sorted(directory.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                found.append((f"{path.name}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                problems.append(f"{path.name}:{number}: invalid JSON: {exc}")
    return found, problems


def main(argv: list[str]) -> int:
    directory = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    conversations, problems = load_all(directory)
    if not conversations:
        problems.append(f"{directory}: no conversations found")
    seen: dict[str, str] = {}
    for label, conv in conversations:
        problems += check_conversation(conv, label)
        cid = conv.get("conversation_id") if isinstance(conv, dict) else None
        if isinstance(cid, str):
            if cid in seen:
                problems.append(f"{label}: conversation_id {cid!r} already used in {seen[cid]}")
            seen.setdefault(cid, label)
    long_ones = [conv for label, conv in conversations if label == LONG_FILE]
    if not long_ones:
        problems.append(f"{LONG_FILE} is missing")
    elif len(long_ones[0].get("turns", [])) < LONG_MIN_TURNS:
        problems.append(
            f"{LONG_FILE}: only {len(long_ones[0]['turns'])} turns, need {LONG_MIN_TURNS}"
        )

    for label, conv in conversations:
        if isinstance(conv, dict):
            print(
                f"{label:40} {conv.get('conversation_id', '?'):20} {conv.get('channel', '?'):6} "
                f"{conv.get('outcome', '?'):12} turns={len(conv.get('turns', [])):4} "
                f"events={len(conv.get('events', []))}"
            )
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"\nOK: {len(conversations)} conversations")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
