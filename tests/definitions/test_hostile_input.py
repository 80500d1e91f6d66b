"""Hostile input: every limit answers with a located problem, never a traceback or the data,
and the valid records beside a bad one still load."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from analyzers.definitions.expressions import ExpressionError, compile_expression
from analyzers.definitions.jsonsource import json_lines
from analyzers.definitions.limits import InputLimits
from analyzers.definitions.loading import load_paths
from analyzers.definitions.triggers import analyzer_applies
from schemas import AnalyzerSpec, Conversation
from tests.definitions.helpers import all_problems, only, write

SECRET = "my card number is 4111"


def record(conversation_id: str, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "conversation_id": conversation_id,
        "tenant_id": "t",
        "agent_id": "a",
        "channel": "chat",
        "started_at": "2026-11-20T10:00:00Z",
        "ended_at": "2026-11-20T10:05:00Z",
        "turns": [{"role": "user", "text": "hello"}],
    }
    data.update(changes)
    return data


def line(conversation_id: str, **changes: object) -> str:
    return json.dumps(record(conversation_id, **changes))


def jsonl(tmp_path: Path, *lines: str | bytes, name: str = "batch.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


def ids(path: Path, limits: InputLimits | None = None) -> list[str]:
    loaded = load_paths([path]) if limits is None else load_paths([path], limits)
    return [c.value.conversation_id for c in loaded.conversations]


def test_an_invalid_utf8_line_is_a_problem_for_that_line_only(tmp_path: Path) -> None:
    path = jsonl(tmp_path, line("a"), b'{"conversation_id": "caf\xe9"}', line("c"))
    loaded = load_paths([path])
    problem = only(loaded.problems)
    assert (problem.line, problem.rule) == (2, "line-utf-8")
    assert ids(path) == ["a", "c"]


def test_deep_nesting_and_huge_numbers_are_located_and_the_valid_records_load(
    tmp_path: Path,
) -> None:
    deep = '{"conversation_id": "deep", "metadata": ' + "[" * 10_000 + "]" * 10_000 + "}"
    huge = line("huge").replace('"chat"', '"chat", "duration": ' + "9" * 5000)
    path = jsonl(tmp_path, line("a"), deep, huge, line("d"))
    loaded = load_paths([path])
    assert [(p.line, p.rule) for p in loaded.problems] == [(2, "nesting-depth"), (3, "number-size")]
    assert "9999" not in str(loaded.problems[1])
    assert ids(path) == ["a", "d"]


def test_nesting_over_the_limit_that_json_parses_is_refused(tmp_path: Path) -> None:
    nested: object = "x"
    for _ in range(70):
        nested = {"k": nested}
    path = jsonl(tmp_path, line("a", metadata=nested), line("b"))
    problem = only(load_paths([path]).problems)
    assert (problem.line, problem.rule) == (1, "nesting-depth")
    assert problem.field.startswith("metadata.k.k")


def test_a_deep_json_file_is_located_at_the_line_where_it_breaks_the_limit(tmp_path: Path) -> None:
    text = '{\n"metadata":\n' + "[\n" * 5000 + "]\n" * 5000 + "}\n"
    path = write(tmp_path, "deep.json", text)
    problem = only(load_paths([path], InputLimits(max_depth=10)).problems)
    assert problem.rule == "nesting-depth"
    # `{` on line 1 is level 1; the `[` on line n (from 3) is level n - 1: level 11 is line 12.
    assert problem.line == 12


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_numbers_json_cannot_carry_are_refused(tmp_path: Path, literal: str) -> None:
    path = jsonl(tmp_path, line("a").replace('"chat"', f'"chat", "x": {literal}'), line("b"))
    problem = only(load_paths([path]).problems)
    assert (problem.line, problem.rule) == (1, "number-size")
    assert ids(path) == ["b"]


def test_nul_and_lone_surrogates_are_refused_at_the_contract_with_the_field(
    tmp_path: Path,
) -> None:
    nul = line("a", turns=[{"role": "user", "text": SECRET + "\x00"}])
    surrogate = line("b", metadata={"note": "\ud800"})
    path = jsonl(tmp_path, nul, surrogate, line("c"))
    loaded = load_paths([path])
    assert [(p.line, p.field, p.rule) for p in loaded.problems] == [
        (1, "turns[0].text", "text-storable"),
        (2, "metadata.note", "text-storable"),
    ]
    assert "NUL" in loaded.problems[0].message
    assert "surrogate" in loaded.problems[1].message
    assert all(SECRET not in str(p) for p in loaded.problems)
    assert ids(path) == ["c"]


def test_the_contract_refuses_nul_without_the_loader(tmp_path: Path) -> None:
    """Any intake path (the webhook too) gets the refusal from the model itself."""
    with pytest.raises(ValueError, match=r"turns\[0\]\.text: contains a NUL"):
        Conversation.model_validate(record("a", turns=[{"role": "user", "text": "a\x00b"}]))


def test_string_turn_and_event_counts_are_bounded(tmp_path: Path) -> None:
    limits = InputLimits(max_string_chars=100, max_turns=3, max_events=2)
    long_text = line("long", turns=[{"role": "user", "text": "x" * 101}])
    many_turns = line("turns", turns=[{"role": "user", "text": "x"}] * 4)
    many_events = line("events", events=[{"type": "e"}] * 3)
    path = jsonl(tmp_path, long_text, many_turns, many_events, line("ok"))
    loaded = load_paths([path], limits)
    assert [(p.line, p.field, p.rule) for p in loaded.problems] == [
        (1, "turns[0].text", "string-size"),
        (2, "turns", "turns-count"),
        (3, "events", "events-count"),
    ]
    assert [c.value.conversation_id for c in loaded.conversations] == ["ok"]


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "big.json", line("a"))
    problem = only(load_paths([path], InputLimits(max_file_bytes=10)).problems)
    assert (problem.rule, problem.line) == ("file-size", None)


def test_jsonl_is_streamed_and_an_oversized_line_is_skipped_in_bounded_memory(
    tmp_path: Path,
) -> None:
    """A 20 MB line with a 1 MB line limit: the loader never holds it, the next line loads."""
    giant = line("giant", turns=[{"role": "user", "text": "x" * 20_000_000}])
    path = jsonl(tmp_path, line("a"), giant, line("c"))
    del giant
    tracemalloc.start()
    try:
        loaded = load_paths([path], InputLimits(max_line_bytes=1_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    problem = only(loaded.problems)
    assert (problem.line, problem.rule) == (2, "line-size")
    assert [c.value.conversation_id for c in loaded.conversations] == ["a", "c"]
    assert peak < 5_000_000, f"peak {peak} bytes while skipping a 20 MB line"


def test_json_lines_are_found_without_yaml(tmp_path: Path) -> None:
    text = '{\n\t"a": [\n\t\t1,\n\t\t{"b": "x\\"y"}\n\t],\n\t"c\\u0041": true\n}\n'
    lines = json_lines(text)
    assert lines[("a",)] == 2
    assert lines[("a", 0)] == 3
    assert lines[("a", 1)] == 4
    assert lines[("a", 1, "b")] == 4
    assert lines[("cA",)] == 6


# -- YAML --------------------------------------------------------------------------------

BILLION_LAUGHS = """\
kind: procedure
name: lol
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_billion_laughs_is_refused_quickly_with_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "lol.yaml", BILLION_LAUGHS)
    started = time.process_time()
    problem = only(load_paths([path]).problems)
    assert time.process_time() - started < 5  # today: 75 s and 6 GB; a bound, not a benchmark
    assert problem.rule == "yaml-syntax"
    assert "aliases" in problem.message
    assert problem.line is not None


def test_a_self_referencing_anchor_is_a_problem_not_a_recursion_error(tmp_path: Path) -> None:
    path = write(tmp_path, "self.yaml", "kind: procedure\nname: loop\nx: &x\n  - *x\n")
    problem = only(load_paths([path]).problems)
    assert "refers to the anchor" in problem.message
    assert problem.line == 3  # the anchor's line: the alias is the same node in PyYAML


def test_deep_yaml_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "deep.yaml", "kind: procedure\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    problem = only(load_paths([path]).problems)
    assert "nested deeper" in problem.message


def test_a_huge_yaml_integer_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "int.yaml", "kind: procedure\nname: n\nversion: " + "9" * 5000 + "\n")
    problem = only(load_paths([path]).problems)
    assert problem.rule == "yaml-syntax"
    assert "9999" not in problem.message


ANALYZER = """\
kind: analyzer
name: checker
description: Checks things.
instructions: Check the conversation.
outputs:
  - name: verdict
    description: The verdict.
    schema: {schema}
"""


def test_an_alias_bomb_inside_an_output_schema_is_refused(tmp_path: Path) -> None:
    bomb = "\n".join(f"        {line}" for line in BILLION_LAUGHS.splitlines()[2:])
    text = ANALYZER.format(schema="\n      type: object\n      x-bomb:\n" + bomb)
    path = write(tmp_path, "bomb.yaml", text)
    problem = only(all_problems(path))
    assert "aliases" in problem.message
    assert problem.line is not None
    assert problem.line >= 8


def test_a_ref_cycle_in_an_output_schema_is_refused_at_load(tmp_path: Path) -> None:
    schema = (
        "\n      type: object\n      properties:\n        next: {$ref: '#/$defs/node'}"
        "\n      $defs:\n        node:\n          type: object\n          properties:"
        "\n            next: {$ref: '#/$defs/node'}"
    )
    path = write(tmp_path, "cycle.yaml", ANALYZER.format(schema=schema))
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("json-schema-ref", "outputs[0].schema")


def test_an_oversized_output_schema_is_refused(tmp_path: Path) -> None:
    properties = json.dumps({f"p{i}": {"type": "string"} for i in range(6000)})
    path = write(
        tmp_path,
        "big.yaml",
        ANALYZER.format(schema=f'{{"type": "object", "properties": {properties}}}'),
    )
    problem = only(all_problems(path))
    assert problem.rule == "json-schema-size"


# -- CEL ---------------------------------------------------------------------------------

FIVE_DEEP = "turns.all(a, turns.all(b, turns.all(c, turns.all(d, turns.all(e, a.role == e.role)))))"


def test_macros_nested_five_deep_are_refused_by_validate(tmp_path: Path) -> None:
    text = ANALYZER.format(schema="{type: string}") + f"trigger:\n  expression: '{FIVE_DEEP}'\n"
    problem = only(all_problems(write(tmp_path, "deep.yaml", text)))
    assert (problem.rule, problem.field) == ("expression-valid", "trigger.expression")
    assert "nests 5" in problem.message


def test_an_evaluation_over_the_budget_fails_with_a_reason_instead_of_running() -> None:
    expression = compile_expression(
        "turns.all(a, turns.all(b, a.role == b.role))", limits=InputLimits(expression_budget=1000)
    )
    turns = [{"role": "user", "text": "x"}] * 100
    started = time.process_time()
    with pytest.raises(ExpressionError, match="evaluation budget"):
        expression.holds({"turns": turns})
    assert time.process_time() - started < 1
    assert expression.holds({"turns": turns[:10]}) is True


def test_the_budget_counts_only_the_variables_the_expression_reads() -> None:
    """Only what the expression reads is given to the engine and weighed against the budget:
    a trigger over the events is not refused for a long transcript it never looks at."""
    expression = compile_expression(
        "events.all(a, events.all(b, a.type == b.type))", limits=InputLimits(expression_budget=1000)
    )
    turns = [{"role": "user", "text": "x"}] * 100_000
    events = [{"type": "tool_call"}] * 10
    assert expression.holds({"turns": turns, "events": events}) is True
    with pytest.raises(ExpressionError, match="evaluation budget"):
        expression.holds({"turns": turns[:10], "events": events * 10})


def test_an_expression_that_does_not_compile_fails_every_time() -> None:
    for _ in range(2):  # compiled expressions are kept; a failure is not
        with pytest.raises(ExpressionError, match="not valid CEL"):
            compile_expression("turns.all(")


def test_a_failing_trigger_names_the_expression_not_the_data() -> None:
    spec = AnalyzerSpec.model_validate(
        {
            "name": "checker",
            "description": "Checks things.",
            "instructions": "x",
            "trigger": {"expression": "metadata[turns[0].text] == 1"},
            "outputs": [{"name": "v", "description": "v", "schema": {"type": "string"}}],
        }
    )
    conversation = Conversation.model_validate(
        record("a", turns=[{"role": "user", "text": SECRET}])
    )
    decision = analyzer_applies(spec, conversation)
    assert not decision.applies
    assert "metadata[turns[0].text]" in decision.reason
    assert SECRET not in decision.reason


# -- Batches -----------------------------------------------------------------------------


def test_a_repeated_id_is_a_problem_for_the_later_record_and_both_versions_are_kept(
    tmp_path: Path,
) -> None:
    first = jsonl(tmp_path, line("a"), line("b"), name="one.jsonl")
    second = jsonl(tmp_path, line("a", outcome="resolved"), line("b"), name="two.jsonl")
    loaded = load_paths([first, second])
    assert [(Path(p.file).name, p.line, p.rule) for p in loaded.problems] == [
        ("two.jsonl", 1, "conversation-id-unique-in-batch"),
        ("two.jsonl", 2, "conversation-id-unique-in-batch"),
    ]
    assert "both versions are kept" in loaded.problems[0].message
    assert "ignored" in loaded.problems[1].message
    kept = [(c.value.conversation_id, c.value.outcome) for c in loaded.conversations]
    assert kept == [("a", "unknown"), ("b", "unknown"), ("a", "resolved")]
