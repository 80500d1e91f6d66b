"""Loading definition and conversation files: every problem located at its file line, and
nothing valid lost because something else in the same file is broken."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzers.definitions.loading import Problem, load_paths
from analyzers.definitions.sourcemap import SourceError, parse_documents
from tests.definitions.helpers import at, load, only, write

PROCEDURE = """\
kind: procedure
name: {name}
trigger:
  description: When it applies.
content: Be helpful.
"""

ANALYZER = """\
kind: analyzer
name: {name}
description: An analyzer.
instructions: Do it.
outputs:
  - name: verdict
    description: The verdict.
    schema: {{type: object}}
"""

CONVERSATION_LINES = [
    "{",
    '  "conversation_id": "c-1",',
    '  "tenant_id": "acme",',
    '  "agent_id": "bot",',
    '  "channel": "voice",',
    '  "started_at": "2026-11-20T10:00:00Z",',
    '  "ended_at": "2026-11-20T10:05:00Z",',
    '  "turns": [',
    '    {"role": "user", "text": "hi"},',
    '    {"role": "agent", "text": "hello"}',
    "  ]",
    "}",
]


def conversation_json(*replace: tuple[int, str]) -> str:
    """The conversation above with some 1-based lines replaced."""
    lines = list(CONVERSATION_LINES)
    for number, text in replace:
        lines[number - 1] = text
    return "\n".join(lines) + "\n"


ONE_LINE = (
    '{{"conversation_id": "{id}", "tenant_id": "acme", "agent_id": "bot", '
    '"channel": "{channel}", "started_at": "2026-11-20T10:00:00Z", '
    '"ended_at": "2026-11-20T10:05:00Z"}}'
)


# --------------------------------------------------------------------------------------------
# Files, documents and kinds


def test_several_documents_in_one_file_are_all_loaded(tmp_path: Path) -> None:
    """Every `---` separated document of a file is loaded, each with its own line map."""
    path = write(
        tmp_path,
        "mixed.yaml",
        "---\n"
        + PROCEDURE.format(name="first")
        + "---\n"
        + ANALYZER.format(name="checker")
        + "---\n"
        + PROCEDURE.format(name="second"),
    )
    loaded = load(path)
    assert loaded.problems == []
    assert [p.value.name for p in loaded.procedures] == ["first", "second"]
    assert [a.value.name for a in loaded.analyzers] == ["checker"]
    assert loaded.procedures[0].line_of(("name",)) == at(path, 3, "name: first")
    assert loaded.analyzers[0].line_of(("name",)) == at(path, 9, "name: checker")
    assert loaded.analyzers[0].line_of(("outputs", 0, "schema")) == at(path, 15, "schema:")
    assert loaded.procedures[1].line_of(("name",)) == at(path, 18, "name: second")
    assert all(sourced.file == str(path) for sourced in loaded.procedures)


def test_yaml_syntax_error_is_one_problem_at_its_line(tmp_path: Path) -> None:
    """Broken YAML gives exactly one `yaml-syntax` problem, at the line where it breaks."""
    path = write(
        tmp_path,
        "broken.yaml",
        """
        kind: procedure
        name: p
        trigger:
          description: [unclosed, list
        content: hi
        """,
    )
    problem = only(load(path).problems)
    assert problem.rule == "yaml-syntax"
    assert problem.file == str(path)
    assert problem.line == at(path, 5, "content: hi")
    assert problem.message.startswith("invalid YAML")


def test_yaml_bad_indentation_is_located(tmp_path: Path) -> None:
    """A mapping key indented where it cannot be is reported at its own line."""
    path = write(
        tmp_path,
        "indent.yaml",
        """
        kind: procedure
        name: p
          version: 2
        content: hi
        """,
    )
    problem = only(load(path).problems)
    assert problem.rule == "yaml-syntax"
    assert problem.line == at(path, 3, "version: 2")


def test_duplicate_key_is_a_problem_at_the_second_key(tmp_path: Path) -> None:
    """A key written twice is a problem on the second one's line, naming the first one's."""
    path = write(
        tmp_path,
        "twice.yaml",
        """
        kind: procedure
        name: p
        trigger:
          description: d
        name: q
        content: hi
        """,
    )
    problem = only(load(path).problems)
    assert problem.rule == "yaml-duplicate-key"
    assert problem.line == at(path, 5, "name: q")
    assert "'name' appears twice (first on line 2)" in problem.message


def test_duplicate_key_in_nested_mapping_is_found(tmp_path: Path) -> None:
    """Duplicate keys are found at any depth, not only at the top level."""
    path = write(
        tmp_path,
        "nested.yaml",
        """
        kind: procedure
        name: p
        trigger:
          description: d
          description: e
        content: hi
        """,
    )
    problem = only(load(path).problems)
    assert problem.rule == "yaml-duplicate-key"
    assert problem.line == at(path, 5, "description: e")
    assert "'description' appears twice (first on line 4)" in problem.message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        pytest.param("kind: workflow\nname: p\n", 1, "kind is 'workflow'", id="unknown-kind"),
        pytest.param("name: p\ncontent: hi\n", 1, "kind is None", id="missing-kind"),
        pytest.param("name: p\nkind: [procedure]\n", 2, "kind is ['procedure']", id="list-kind"),
        pytest.param("name: p\nkind: Procedure\n", 2, "kind is 'Procedure'", id="capital-kind"),
    ],
)
def test_kind_must_be_known(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    """A document without a known `kind` is a `kind-known` problem at its `kind` line."""
    path = write(tmp_path, "kind.yaml", text)
    problem = only(load(path).problems)
    assert problem.rule == "kind-known"
    assert problem.field == "kind"
    assert problem.line == line
    assert fragment in problem.message
    assert "['analyzer', 'procedure', 'schedule']" in problem.message


def test_document_that_is_not_a_mapping_is_a_problem(tmp_path: Path) -> None:
    """A document that is a list or a scalar is reported at the line it starts on."""
    path = write(
        tmp_path,
        "list.yaml",
        PROCEDURE.format(name="fine") + "---\n- kind: procedure\n- name: p\n",
    )
    loaded = load(path)
    problem = only(loaded.problems)
    assert problem.rule == "document-mapping"
    assert problem.line == at(path, 7, "- kind: procedure")
    assert "not list" in problem.message
    assert [p.value.name for p in loaded.procedures] == ["fine"]


# --------------------------------------------------------------------------------------------
# Where shape errors and rule violations point


STRUCTURED = """\
kind: procedure
name: p
trigger:
  description: When it applies.
parameters:
  - name: vendor
  - name: contact
    type: date
steps:
  - instruction: Look.
  - tool: lookup
    arguments: not-a-mapping
  - tool: create
    id: "bad id"
    arguments: {}
"""


def test_shape_errors_point_at_the_offending_key(tmp_path: Path) -> None:
    """Each shape error is on the line of the key that is wrong, with the union tag left out
    of the rendered field."""
    path = write(tmp_path, "shape.yaml", STRUCTURED)
    problems = {problem.field: problem for problem in load(path).problems}
    assert sorted(problems) == ["parameters[1].type", "steps[1].arguments", "steps[2].id"]
    assert problems["parameters[1].type"].line == at(path, 8, "type: date")
    assert problems["parameters[1].type"].rule == "literal_error"
    assert "(got 'date')" in problems["parameters[1].type"].message
    assert problems["steps[2].id"].rule == "string_pattern_mismatch"
    assert problems["steps[1].arguments"].rule == "dict_type"


def test_tool_step_argument_error_points_at_the_arguments_line(tmp_path: Path) -> None:
    """A wrong `arguments` value is reported on the `arguments:` line, not the `tool:` line."""
    path = write(tmp_path, "shape.yaml", STRUCTURED)
    (problem,) = [p for p in load(path).problems if p.field == "steps[1].arguments"]
    assert problem.line == at(path, 12, "arguments: not-a-mapping")


def test_tool_step_id_error_points_at_the_id_line(tmp_path: Path) -> None:
    """A bad step `id` is reported on the `id:` line, not the `tool:` line."""
    path = write(tmp_path, "shape.yaml", STRUCTURED)
    (problem,) = [p for p in load(path).problems if p.field == "steps[2].id"]
    assert problem.line == at(path, 14, 'id: "bad id"')


def test_missing_field_points_at_its_parent(tmp_path: Path) -> None:
    """A missing required field is reported where its parent mapping is written."""
    path = write(
        tmp_path,
        "missing.yaml",
        """
        kind: procedure
        name: p
        trigger:
          patterns: [refund]
        content: hi
        """,
    )
    problem = only(load(path).problems)
    assert problem.rule == "missing"
    assert problem.field == "trigger.description"
    assert problem.line == at(path, 3, "trigger:")
    assert problem.message == "field required"


def test_missing_top_level_field_points_at_the_document_start(tmp_path: Path) -> None:
    """A missing top-level field is reported at the first line of its document."""
    path = write(
        tmp_path, "two.yaml", PROCEDURE.format(name="a") + "---\nkind: procedure\nname: b\n"
    )
    problem = only(load(path).problems)
    assert (problem.rule, problem.field) == ("missing", "trigger")
    assert problem.line == at(path, 7, "kind: procedure")


def test_unknown_field_points_at_its_key(tmp_path: Path) -> None:
    """A field the contract does not know is reported on its own line."""
    path = write(
        tmp_path,
        "extra.yaml",
        """
        kind: procedure
        name: p
        trigger:
          description: d
          pattern: typo
        content: hi
        """,
    )
    problem = only(load(path).problems)
    assert (problem.rule, problem.field) == ("extra_forbidden", "trigger.pattern")
    assert problem.line == at(path, 5, "pattern: typo")


def test_rule_violation_in_nested_steps_points_at_the_nested_step(tmp_path: Path) -> None:
    """Rules broken inside an `if` point at the nested step's own line."""
    path = write(
        tmp_path,
        "nested.yaml",
        """
        kind: procedure
        name: p
        trigger:
          description: d
        steps:
          - instruction: Look.
          - if:
              natural_language: the customer is angry
            steps:
              - instruction: Apologise.
              - if:
                  expression: "true"
                steps:
                  - instruction: Nested.
              - tool: create
                arguments:
                  name: "{{vendor}}"
        """,
    )
    problems = {problem.rule: problem for problem in load(path).problems}
    assert sorted(problems) == ["if-not-nested", "template-undeclared"]
    nested_if = problems["if-not-nested"]
    assert nested_if.field == "steps[1].steps[1]"
    assert nested_if.line == at(path, 11, "- if:")
    undeclared = problems["template-undeclared"]
    assert undeclared.field == "steps[1].steps[2].arguments"
    assert undeclared.line == at(path, 16, "arguments:")
    assert "{{vendor}}" in undeclared.message


def test_top_level_rule_violations_are_located(tmp_path: Path) -> None:
    """`if` placement rules point at the offending step, with rendered fields."""
    path = write(
        tmp_path,
        "ifs.yaml",
        """
        kind: procedure
        name: p
        trigger:
          description: d
        steps:
          - if: {expression: "true"}
            steps: [{instruction: a}]
          - instruction: b
          - if: {expression: "true"}
            steps: [{instruction: c}]
          - if: {natural_language: angry}
            steps: [{instruction: d}]
        """,
    )
    found = sorted((p.rule, p.field, p.line) for p in load(path).problems)
    assert found == [
        ("if-not-consecutive", "steps[3]", at(path, 11, "natural_language: angry")),
        ("if-not-first", "steps[0]", at(path, 6, "- if:")),
    ]


def test_procedure_form_violation_is_at_the_document_start(tmp_path: Path) -> None:
    """A whole-document rule is reported at the first line of that document."""
    path = write(
        tmp_path,
        "form.yaml",
        PROCEDURE.format(name="ok")
        + "---\n# a comment first\nkind: procedure\nname: p\ntrigger: {description: d}\n",
    )
    problem = only(load(path).problems)
    assert (problem.rule, problem.field) == ("procedure-form", "(top level)")
    assert problem.line == at(path, 8, "kind: procedure")


def test_analyzer_union_tags_are_not_rendered(tmp_path: Path) -> None:
    """Errors inside HTTP tools and sinks name `tools[1].url` and `sinks[0].channel`, without
    pydantic's union tags, at the right lines."""
    path = write(
        tmp_path,
        "analyzer.yaml",
        """
        kind: analyzer
        name: a
        description: d
        instructions: i
        tools:
          - get_turns
          - name: lookup
            description: Look up.
            url: 42
            allowed_hosts: [api.example.com]
        outputs:
          - {name: o, description: d, model: next_step}
        sinks:
          - type: slack
            channel: ""
        """,
    )
    problems = {problem.field: problem for problem in load(path).problems}
    assert sorted(problems) == ["sinks[0].channel", "tools[1].url"]
    assert problems["tools[1].url"].line == at(path, 9, "url: 42")
    assert problems["tools[1].url"].rule == "string_type"
    assert problems["sinks[0].channel"].line == at(path, 15, 'channel: ""')
    assert problems["sinks[0].channel"].rule == "string_too_short"


def test_analyzer_rule_violation_is_located_at_the_tool(tmp_path: Path) -> None:
    """An analyzer rule inside an HTTP tool points at the tool field's line."""
    path = write(
        tmp_path,
        "host.yaml",
        """
        kind: analyzer
        name: a
        description: d
        instructions: i
        tools:
          - name: lookup
            description: Look up.
            url: https://evil.example.org/x
            allowed_hosts: [api.example.com]
        outputs:
          - {name: o, description: d, model: next_step}
        """,
    )
    problem = only(load(path).problems)
    assert (problem.rule, problem.field) == ("tool-host-allowed", "tools[0].url")
    assert problem.line == at(path, 8, "url: https://evil")


def test_value_error_message_shows_the_bad_value(tmp_path: Path) -> None:
    """A model-level value error loses pydantic's `Value error, ` prefix and shows the input."""
    path = write(
        tmp_path,
        "output.yaml",
        """
        kind: analyzer
        name: a
        description: d
        instructions: i
        outputs:
          - name: o
            description: d
            model: nope
        """,
    )
    problem = only(load(path).problems)
    assert problem.rule == "value_error"
    assert problem.field == "outputs[0]"
    assert problem.line == at(path, 6, "- name: o")
    assert problem.message.startswith("model 'nope' is not a built-in output model")


# --------------------------------------------------------------------------------------------
# Nothing valid is lost


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param("kind: procedure\nname: bad\n", id="shape-error"),
        pytest.param(
            "kind: procedure\nname: bad\ntrigger: {description: d}\nsteps: []\n", id="rule"
        ),
        pytest.param("kind: thing\n", id="unknown-kind"),
        pytest.param("- a list\n", id="not-a-mapping"),
        pytest.param(
            "kind: procedure\nname: bad\nname: again\ntrigger: {description: d}\ncontent: x\n",
            id="duplicate-key",
        ),
    ],
)
def test_valid_documents_are_kept_beside_a_broken_one(tmp_path: Path, broken: str) -> None:
    """A valid definition in a file is kept when another document of that file is broken."""
    path = write(
        tmp_path,
        "mixed.yaml",
        PROCEDURE.format(name="before")
        + "---\n"
        + broken
        + "---\n"
        + ANALYZER.format(name="after"),
    )
    loaded = load(path)
    assert loaded.problems, "the broken document must be reported"
    assert [p.value.name for p in loaded.procedures] == ["before"]
    assert [a.value.name for a in loaded.analyzers] == ["after"]


def test_every_file_is_loaded_even_when_one_is_broken(tmp_path: Path) -> None:
    """A broken file does not stop the other files of a folder from loading."""
    write(tmp_path, "a.yaml", "kind: procedure\nname: [\n")
    write(tmp_path, "b.yaml", PROCEDURE.format(name="fine"))
    loaded = load(tmp_path)
    assert [p.rule for p in loaded.problems] == ["yaml-syntax"]
    assert [p.value.name for p in loaded.procedures] == ["fine"]


# --------------------------------------------------------------------------------------------
# Conversations


def test_json_conversation_is_loaded(tmp_path: Path) -> None:
    """A valid JSON conversation loads with the lines of its fields."""
    path = write(tmp_path, "c.json", conversation_json())
    loaded = load(path)
    assert loaded.problems == []
    (conversation,) = loaded.conversations
    assert conversation.value.conversation_id == "c-1"
    assert conversation.line_of(("turns", 1, "role")) == 10


@pytest.mark.parametrize(
    ("replace", "field", "rule"),
    [
        pytest.param(
            (10, '    {"role": "robot", "text": "hello"}'),
            "turns[1].role",
            "literal_error",
            id="bad-role",
        ),
        pytest.param((5, '  "channel": "fax",'), "channel", "literal_error", id="bad-channel"),
        pytest.param(
            (6, '  "started_at": "2026-11-20T10:00:00",'),
            "started_at",
            "timezone_aware",
            id="naive-datetime",
        ),
    ],
)
def test_json_conversation_error_carries_the_line_of_the_bad_field(
    tmp_path: Path, replace: tuple[int, str], field: str, rule: str
) -> None:
    """A shape error in a JSON conversation is reported at the line of the bad field."""
    path = write(tmp_path, "c.json", conversation_json(replace))
    problem = only(load(path).problems)
    assert (problem.field, problem.rule) == (field, rule)
    assert problem.line == replace[0]


def test_tab_indented_json_conversation_error_carries_the_line(tmp_path: Path) -> None:
    """JSON indented with tabs (`json.dumps(indent="\\t")`, Go's MarshalIndent) still gets the
    line of the bad field, not line 1."""
    text = conversation_json((10, '    {"role": "robot", "text": "hello"}')).replace("  ", "\t")
    path = write(tmp_path, "tabs.json", text)
    problem = only(load(path).problems)
    assert (problem.field, problem.rule) == ("turns[1].role", "literal_error")
    assert problem.line == at(path, 10, '"robot"')


def test_conversation_turn_index_error_carries_the_line_of_the_event(tmp_path: Path) -> None:
    """An event pointing at a turn that does not exist is reported at its `turn_index` line
    and field, like any other located problem."""
    path = write(
        tmp_path,
        "c.json",
        conversation_json(
            (11, "  ],"),
            (12, '  "events": [\n    {"type": "tool_call",\n     "turn_index": 7}\n  ]\n}'),
        ),
    )
    problem = only(load(path).problems)
    assert problem.field == "events[0].turn_index"
    assert problem.line == at(path, 14, '"turn_index": 7')


def test_conversation_ended_before_started_carries_the_line_of_ended_at(tmp_path: Path) -> None:
    """A conversation ending before it starts is reported at its `ended_at` line and field."""
    path = write(
        tmp_path, "c.json", conversation_json((7, '  "ended_at": "2026-11-20T09:00:00Z",'))
    )
    problem = only(load(path).problems)
    assert problem.field == "ended_at"
    assert problem.line == 7


def test_conversation_problem_does_not_echo_the_transcript(tmp_path: Path) -> None:
    """A conversation-wide error does not print the conversation's turns back, even when the
    turns come first in the file."""
    path = write(
        tmp_path,
        "c.json",
        '{"turns": [{"role": "user", "text": "my card number is 4111"}],\n'
        + "\n".join(CONVERSATION_LINES[1:7])
        + '\n  "ended_at": "2026-11-20T09:00:00Z"\n}\n',
    )
    problem = only(load(path).problems)
    assert "ended_at" in problem.message
    assert "4111" not in str(problem)


def test_json_syntax_error_is_located(tmp_path: Path) -> None:
    """Invalid JSON gives a `json-syntax` problem at the line where it breaks."""
    path = write(tmp_path, "c.json", conversation_json((5, '  "channel": "voice"')))
    problem = only(load(path).problems)
    assert problem.rule == "json-syntax"
    assert problem.line == 6


def test_jsonl_problems_carry_the_line_of_the_bad_line(tmp_path: Path) -> None:
    """Each line of a `.jsonl` file is a conversation; problems carry that line's number and
    blank lines still count."""
    path = write(
        tmp_path,
        "batch.jsonl",
        "\n".join(
            [
                ONE_LINE.format(id="a", channel="chat"),
                "",
                ONE_LINE.format(id="b", channel="fax"),
                "{not json",
                ONE_LINE.format(id="c", channel="sms"),
            ]
        )
        + "\n",
    )
    loaded = load(path)
    assert [c.value.conversation_id for c in loaded.conversations] == ["a", "c"]
    assert [(p.line, p.rule, p.field) for p in loaded.problems] == [
        (3, "literal_error", "channel"),
        (4, "json-syntax", "(file)"),
    ]
    assert loaded.conversations[1].line_of(("channel",)) == 5


# --------------------------------------------------------------------------------------------
# Paths and rendering


def test_missing_path_is_a_path_exists_problem(tmp_path: Path) -> None:
    """A path that does not exist is reported, not silently ignored."""
    missing = tmp_path / "nope.yaml"
    problem = only(load_paths([missing]).problems)
    assert (problem.rule, problem.file, problem.line) == ("path-exists", str(missing), None)
    assert str(problem) == f"{missing}: (path): no such file [path-exists]"


def test_folders_skip_hidden_and_underscore_files_and_other_suffixes(tmp_path: Path) -> None:
    """Inside folders, `.`/`_` names and files with other suffixes are skipped, and files load
    in sorted order."""
    write(tmp_path, "b.yml", PROCEDURE.format(name="b"))
    write(tmp_path, "sub/a.yaml", PROCEDURE.format(name="a"))
    write(tmp_path, "_draft.yaml", "kind: [broken")
    write(tmp_path, ".backup/c.yaml", "kind: [broken")
    write(tmp_path, "notes.txt", "kind: [broken")
    write(tmp_path, "c.json", conversation_json())
    loaded = load(tmp_path)
    assert loaded.problems == []
    assert [p.value.name for p in loaded.procedures] == ["b", "a"]
    assert len(loaded.conversations) == 1


def test_a_file_named_directly_is_loaded_whatever_its_name(tmp_path: Path) -> None:
    """A file named on the command line is read even if its name starts with `_`."""
    path = write(tmp_path, "_draft.yaml", PROCEDURE.format(name="draft"))
    assert [p.value.name for p in load(path).procedures] == ["draft"]


def test_undecodable_file_is_a_file_readable_problem(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported as unreadable."""
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"kind: procedure\nname: caf\xe9\n")
    problem = only(load(path).problems)
    assert problem.rule == "file-readable"


def test_problem_renders_as_file_line_field_message_rule() -> None:
    """A problem prints as `file:line: field: message [rule]`."""
    problem = Problem("a.yaml", 3, "steps[0]", "if-not-first", "no")
    assert str(problem) == "a.yaml:3: steps[0]: no [if-not-first]"


def test_source_error_carries_the_line() -> None:
    """The parser's own error carries a 1-based line."""
    with pytest.raises(SourceError) as info:
        list(parse_documents("a: 1\nb: [\n"))
    assert info.value.line == 3


def test_empty_documents_are_skipped() -> None:
    """Empty documents between or after separators produce nothing."""
    documents = list(parse_documents("---\n---\na: 1\n---\n"))
    assert [document.data for document in documents] == [{"a": 1}]
    assert documents[0].start_line == 3


def test_comment_only_file_has_no_documents() -> None:
    """A file with only a comment holds no document and no problem."""
    assert list(parse_documents("# nothing yet\n")) == []


def test_trailing_document_separator_is_not_a_problem(tmp_path: Path) -> None:
    """A file whose documents each end with `---` loads without a problem."""
    path = write(tmp_path, "ended.yaml", PROCEDURE.format(name="p") + "---\n")
    loaded = load(path)
    assert loaded.problems == []
    assert [p.value.name for p in loaded.procedures] == ["p"]
