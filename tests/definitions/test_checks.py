"""Cross-definition checks (`analyzers/definitions/checks.py`): the rules pydantic cannot see alone,
each located at the file line a person must change."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzers.definitions.checks import check_definitions
from analyzers.definitions.loading import Problem, load_paths
from tests.definitions.helpers import all_problems, at, only, write

REPO = Path(__file__).resolve().parents[2]

ANALYZER_HEAD = """\
kind: analyzer
name: {name}
description: Checks things.
instructions: Check the conversation.
"""

OUTPUTS = """\
outputs:
  - name: verdict
    description: The verdict.
    model: next_step
"""

LOOKUP_TOOL = """\
  - name: vendor_lookup
    description: Find a vendor by name.
    url: https://api.example.com/vendors?name={{name}}
    input_schema:
      type: object
      properties:
        name: {type: string}
        exact: {type: boolean}
      required: [name]
    allowed_hosts: [api.example.com]
"""


def analyzer_text(
    *, name: str = "checker", procedures: str = "", tools: str = "", extra: str = ""
) -> str:
    """An analyzer document assembled from optional blocks."""
    text = ANALYZER_HEAD.format(name=name)
    if procedures:
        text += f"procedures: [{procedures}]\n"
    if tools:
        text += "tools:\n" + tools
    return text + OUTPUTS + extra


def procedure_text(steps: str, *, name: str = "onboarding", extra: str = "") -> str:
    """A structured procedure document with `steps` (indented two spaces)."""
    return (
        "kind: procedure\n"
        f"name: {name}\n"
        "trigger:\n"
        "  description: When a vendor is onboarded.\n"
        "parameters:\n"
        "  - name: vendor_name\n"
        f"{extra}"
        "steps:\n" + steps
    )


def rules(problems: list[Problem]) -> list[str]:
    """The rule ids of `problems`, in order."""
    return [problem.rule for problem in problems]


def test_examples_and_builtins_have_no_problems() -> None:
    """The shipped analyzers and procedures load and pass every cross-definition check."""
    loaded = load_paths(
        [
            REPO / "examples" / "analyzers",
            REPO / "examples" / "procedures",
            REPO / "analyzers" / "builtin",
        ]
    )
    assert loaded.problems == []
    assert check_definitions(loaded) == []
    assert len(loaded.analyzers) >= 6
    assert len(loaded.procedures) >= 3


# --------------------------------------------------------------------------------------------
# Procedures referenced by analyzers


def test_procedure_must_exist(tmp_path: Path) -> None:
    """An analyzer naming a procedure no file defines gets `procedure-exists` at that line."""
    path = write(tmp_path, "a.yaml", analyzer_text(procedures="ghost"))
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("procedure-exists", "procedures[0]")
    assert problem.line == at(path, 5, "procedures: [ghost]")
    assert "'ghost'" in problem.message


def test_procedure_from_another_file_is_found(tmp_path: Path) -> None:
    """A procedure defined in another file of the same run satisfies the reference."""
    write(tmp_path, "a.yaml", analyzer_text(procedures="onboarding", tools=LOOKUP_TOOL))
    write(
        tmp_path,
        "p.yaml",
        procedure_text('  - tool: vendor_lookup\n    arguments: {name: "{{vendor_name}}"}\n'),
    )
    assert all_problems(tmp_path) == []


def test_tool_step_must_use_a_tool_the_analyzer_allows(tmp_path: Path) -> None:
    """A procedure step calling a tool its analyzer lacks is reported in the procedure file, at
    the step's `tool:` line."""
    analyzer = write(tmp_path, "a.yaml", analyzer_text(procedures="onboarding", tools=LOOKUP_TOOL))
    procedure = write(
        tmp_path,
        "p.yaml",
        procedure_text(
            "  - instruction: Look.\n"
            "  - tool: vendor_create\n"
            '    arguments: {name: "{{vendor_name}}"}\n'
        ),
    )
    problem = only(all_problems(tmp_path))
    assert problem.rule == "tool-allowed"
    assert problem.file == str(procedure)
    assert problem.field == "steps[1].tool"
    assert problem.line == at(procedure, 9, "- tool: vendor_create")
    assert "'vendor_create'" in problem.message
    assert str(analyzer) in problem.message


def test_nested_tool_step_must_use_an_allowed_tool(tmp_path: Path) -> None:
    """The tool check also covers steps nested in an `if`, at the nested step's line."""
    write(tmp_path, "a.yaml", analyzer_text(procedures="onboarding", tools="  - get_turns\n"))
    procedure = write(
        tmp_path,
        "p.yaml",
        procedure_text(
            "  - instruction: Look.\n"
            "  - if: {natural_language: the vendor is new}\n"
            "    steps:\n"
            "      - instruction: Think.\n"
            "      - tool: vendor_create\n"
        ),
    )
    problem = only(all_problems(tmp_path))
    assert (problem.rule, problem.field) == ("tool-allowed", "steps[1].steps[1].tool")
    assert problem.line == at(procedure, 12, "- tool: vendor_create")


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        pytest.param('{nam: "{{vendor_name}}"}', "unknown ['nam'], missing ['name']", id="typo"),
        pytest.param("{exact: true}", "unknown [], missing ['name']", id="missing-required"),
        pytest.param(
            '{name: "{{vendor_name}}", limit: 3}', "unknown ['limit'], missing []", id="unknown"
        ),
    ],
)
def test_tool_step_arguments_must_match_the_input_schema(
    tmp_path: Path, arguments: str, fragment: str
) -> None:
    """Arguments of a step calling an HTTP tool match that tool's input_schema properties and
    required list, reported at the `arguments:` line."""
    write(tmp_path, "a.yaml", analyzer_text(procedures="onboarding", tools=LOOKUP_TOOL))
    procedure = write(
        tmp_path,
        "p.yaml",
        procedure_text(f"  - tool: vendor_lookup\n    arguments: {arguments}\n"),
    )
    problem = only(all_problems(tmp_path))
    assert (problem.rule, problem.field) == ("tool-arguments-match", "steps[0].arguments")
    assert problem.line == at(procedure, 9, "arguments:")
    assert fragment in problem.message


def test_matching_arguments_with_optional_property_pass(tmp_path: Path) -> None:
    """Required and optional properties of the input schema may both be given."""
    write(tmp_path, "a.yaml", analyzer_text(procedures="onboarding", tools=LOOKUP_TOOL))
    write(
        tmp_path,
        "p.yaml",
        procedure_text(
            '  - tool: vendor_lookup\n    arguments: {name: "{{vendor_name}}", exact: true}\n'
        ),
    )
    assert all_problems(tmp_path) == []


def test_builtin_tool_must_exist(tmp_path: Path) -> None:
    """A tool named by a string must be a built-in tool."""
    path = write(tmp_path, "a.yaml", analyzer_text(tools="  - get_turns\n  - get_turnz\n"))
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("tool-builtin-known", "tools[1]")
    assert problem.line == at(path, 7, "- get_turnz")
    assert "'get_turnz'" in problem.message


# --------------------------------------------------------------------------------------------
# Expressions


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        pytest.param("outcome ==", "is not valid CEL", id="syntax-error"),
        pytest.param("outcom == 'escalated'", "unknown variable(s) ['outcom']", id="unknown-var"),
        pytest.param(
            "turns.exists(t, t.role == 'user') && speaker == 'x'",
            "unknown variable(s) ['speaker']",
            id="unknown-beside-macro",
        ),
    ],
)
def test_trigger_expression_must_be_valid(tmp_path: Path, expression: str, fragment: str) -> None:
    """An analyzer trigger expression must compile and read only conversation variables."""
    path = write(
        tmp_path,
        "a.yaml",
        analyzer_text(extra=f'trigger:\n  expression: "{expression}"\n'),
    )
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("expression-valid", "trigger.expression")
    assert problem.line == at(path, 10, "expression:")
    assert fragment in problem.message


@pytest.mark.parametrize(
    "expression",
    [
        pytest.param("turns.exists(t, t.role == 'user' && t.text.contains('refund'))", id="macro"),
        pytest.param("events.all(e, e.succeeded == true) && turn_count > 2", id="all-macro"),
        pytest.param("{{system__agent_turns}} == 0", id="system-variable-in-braces"),
        pytest.param("duration_seconds > 60.0 && channel == 'voice'", id="derived-variables"),
        pytest.param("metadata.region == 'eu' || dynamic_variables.tier == 'gold'", id="maps"),
    ],
)
def test_valid_trigger_expression_passes(tmp_path: Path, expression: str) -> None:
    """Macro-bound variables, system variables and every conversation variable are fine."""
    path = write(
        tmp_path, "a.yaml", analyzer_text(extra=f'trigger:\n  expression: "{expression}"\n')
    )
    assert all_problems(path) == []


@pytest.mark.parametrize(
    ("condition", "fragment"),
    [
        pytest.param("outcome == ", "is not valid CEL", id="syntax-error"),
        pytest.param("tier == 'gold'", "unknown variable(s) ['tier']", id="unknown-var"),
    ],
)
def test_procedure_trigger_condition_must_be_valid(
    tmp_path: Path, condition: str, fragment: str
) -> None:
    """A procedure trigger condition must compile and read only conversation variables or the
    procedure's declared dynamic variables."""
    path = write(
        tmp_path,
        "p.yaml",
        f"""\
        kind: procedure
        name: p
        dynamic_variables: [customer_name]
        trigger:
          description: d
          conditions:
            - customer_name != ''
            - "{condition}"
        content: hi
        """,
    )
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("expression-valid", "trigger.conditions[1]")
    assert problem.line == at(path, 8, condition.strip())
    assert fragment in problem.message


def if_procedure(expression: str, *, after: str = "") -> str:
    """A procedure with a tool step, then an `if` on `expression`, then `after` steps."""
    return procedure_text(
        "  - tool: vendor_lookup\n"
        "    id: lookup\n"
        '    arguments: {name: "{{vendor_name}}"}\n'
        "  - if:\n"
        f"      expression: '{expression}'\n"
        "    steps:\n"
        "      - instruction: Act.\n" + after
    )


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        pytest.param("lookup.result ==", "is not valid CEL", id="syntax-error"),
        pytest.param("lokup.result == null", "unknown variable(s) ['lokup']", id="unknown-var"),
        pytest.param(
            "later.result == null", "unknown variable(s) ['later']", id="later-step-result"
        ),
    ],
)
def test_if_expression_must_be_valid(tmp_path: Path, expression: str, fragment: str) -> None:
    """An `if` expression must compile and read only variables in scope at that step."""
    path = write(
        tmp_path,
        "p.yaml",
        if_procedure(expression, after="  - tool: vendor_lookup\n    id: later\n"),
    )
    loaded = load_paths([path])
    assert loaded.problems == []
    problem = only(check_definitions(loaded))
    assert (problem.rule, problem.field) == ("expression-valid", "steps[1].if.expression")
    assert problem.line == at(path, 12, "expression:")
    assert fragment in problem.message


@pytest.mark.parametrize(
    "expression",
    [
        pytest.param("lookup.result == null", id="earlier-tool-result"),
        pytest.param("lookup.result.exists(v, v.name == vendor_name)", id="parameter-and-macro"),
        pytest.param('{{lookup.result}} == null && outcome == "completed"', id="braces"),
        pytest.param("system__agent_turns > 3", id="system-variable"),
    ],
)
def test_valid_if_expression_passes(tmp_path: Path, expression: str) -> None:
    """An `if` may read an earlier tool step's result, parameters and conversation variables."""
    path = write(tmp_path, "p.yaml", if_procedure(expression))
    assert all_problems(path) == []


@pytest.mark.parametrize(
    ("when", "fragment"),
    [
        pytest.param("verdict.exists(v, true)", "unknown variable(s) ['verdict']", id="unknown"),
        pytest.param("outcome == 'escalated'", "unknown variable(s) ['outcome']", id="conv-var"),
        pytest.param("status ==", "is not valid CEL", id="syntax-error"),
    ],
)
def test_sink_when_must_read_known_result_variables(
    tmp_path: Path, when: str, fragment: str
) -> None:
    """A sink's `when` reads only what a result offers (status, outputs, conversation, ...)."""
    path = write(
        tmp_path,
        "a.yaml",
        analyzer_text(extra=f'sinks:\n  - type: slack\n    channel: "#x"\n    when: "{when}"\n'),
    )
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("expression-valid", "sinks[0].when")
    assert problem.line == at(path, 12, "when:")
    assert fragment in problem.message


def test_valid_sink_when_passes(tmp_path: Path) -> None:
    """A `when` over outputs, status and the conversation is accepted."""
    when = "status == 'succeeded' && outputs.verdict.exists(v, v.value.owner == 'sales')"
    path = write(
        tmp_path,
        "a.yaml",
        analyzer_text(extra=f'sinks:\n  - type: jsonl\n    path: out.jsonl\n    when: "{when}"\n'),
    )
    assert all_problems(path) == []


# --------------------------------------------------------------------------------------------
# JSON Schemas and patterns


def test_output_schema_must_be_valid_json_schema(tmp_path: Path) -> None:
    """An output whose `schema` is not a valid JSON Schema is reported at its `schema:` line."""
    path = write(
        tmp_path,
        "a.yaml",
        ANALYZER_HEAD.format(name="a")
        + "outputs:\n"
        + "  - name: verdict\n"
        + "    description: d\n"
        + "    schema:\n"
        + "      type: objekt\n",
    )
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("json-schema-valid", "outputs[0].schema")
    assert problem.line == at(path, 8, "schema:")
    assert "not a valid JSON Schema" in problem.message
    assert "'objekt'" in problem.message


def test_tool_input_schema_must_be_an_object(tmp_path: Path) -> None:
    """An HTTP tool's input_schema must describe an object."""
    path = write(
        tmp_path,
        "a.yaml",
        analyzer_text(
            tools=(
                "  - name: lookup\n"
                "    description: d\n"
                "    url: https://api.example.com/x\n"
                "    input_schema: {type: string}\n"
                "    allowed_hosts: [api.example.com]\n"
            )
        ),
    )
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("json-schema-object", "tools[0].input_schema")
    assert problem.line == at(path, 9, "input_schema:")


def test_tool_input_schema_must_be_valid(tmp_path: Path) -> None:
    """An HTTP tool's input_schema that is not JSON Schema is `json-schema-valid`."""
    path = write(
        tmp_path,
        "a.yaml",
        analyzer_text(
            tools=(
                "  - name: lookup\n"
                "    description: d\n"
                "    url: https://api.example.com/x\n"
                "    input_schema: {type: object, required: name}\n"
                "    allowed_hosts: [api.example.com]\n"
            )
        ),
    )
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("json-schema-valid", "tools[0].input_schema")


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("a||b", id="double-bar"),
        pytest.param("refund|", id="trailing-bar"),
        pytest.param("|refund", id="leading-bar"),
        pytest.param("refund|* *", id="no-word"),
    ],
)
def test_trigger_pattern_must_be_sound(tmp_path: Path, pattern: str) -> None:
    """A trigger pattern with an empty or wordless alternative is `pattern-valid`."""
    path = write(
        tmp_path,
        "p.yaml",
        "kind: procedure\n"
        "name: p\n"
        "trigger:\n"
        "  description: d\n"
        "  patterns:\n"
        "    - fine pattern\n"
        f'    - "{pattern}"\n'
        "content: hi\n",
    )
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("pattern-valid", "trigger.patterns[1]")
    assert problem.line == at(path, 7, pattern)
    assert repr(pattern) in problem.message


# --------------------------------------------------------------------------------------------
# Names across files


def test_analyzer_names_are_unique_across_files(tmp_path: Path) -> None:
    """Two analyzers with one name and version: the second is reported, naming the first."""
    first = write(tmp_path, "a.yaml", analyzer_text(name="dup"))
    second = write(tmp_path, "b.yaml", analyzer_text(name="dup"))
    problem = only(all_problems(tmp_path))
    assert (problem.rule, problem.file, problem.line) == ("analyzer-unique", str(second), 2)
    assert f"{first}:2" in problem.message
    assert "version '1'" in problem.message


def test_two_versions_of_one_analyzer_may_be_loaded_side_by_side(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", analyzer_text(name="dup", extra='version: "1"\n'))
    write(tmp_path, "b.yaml", analyzer_text(name="dup", extra='version: "2"\n'))
    assert all_problems(tmp_path) == []


def test_an_analyzer_version_that_cannot_follow_an_at_sign_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", analyzer_text(name="dup", extra='version: "1@2"\n'))
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("analyzer-version", "version")
    assert "'1@2'" in problem.message


PLAIN_PROCEDURE = """\
kind: procedure
name: refunds
version: {version}
tenant_id: {tenant}
trigger:
  description: d
content: hi
"""


def test_procedure_versions_are_unique_per_tenant(tmp_path: Path) -> None:
    """The same procedure name, version and tenant twice is reported at the second version."""
    first = write(tmp_path, "a.yaml", PLAIN_PROCEDURE.format(version=2, tenant="acme"))
    second = write(tmp_path, "b.yaml", PLAIN_PROCEDURE.format(version=2, tenant="acme"))
    problem = only(all_problems(tmp_path))
    assert (problem.rule, problem.file) == ("procedure-version-unique", str(second))
    assert problem.line == at(second, 3, "version: 2")
    assert f"{first}:2" in problem.message


def test_procedure_versions_of_other_tenants_or_numbers_coexist(tmp_path: Path) -> None:
    """Another version, or the same version for another tenant, is not a duplicate."""
    write(
        tmp_path,
        "all.yaml",
        PLAIN_PROCEDURE.format(version=1, tenant="acme")
        + "---\n"
        + PLAIN_PROCEDURE.format(version=2, tenant="acme")
        + "---\n"
        + PLAIN_PROCEDURE.format(version=1, tenant="globex"),
    )
    assert all_problems(tmp_path) == []


def test_procedure_version_clash_without_tenant(tmp_path: Path) -> None:
    """Two tenant-less procedures with one name and version clash too."""
    text = "kind: procedure\nname: p\ntrigger: {description: d}\ncontent: x\n"
    write(tmp_path, "a.yaml", text + "---\n" + text)
    assert rules(all_problems(tmp_path)) == ["procedure-version-unique"]


def test_unquoted_yes_no_enum_in_string_schema_is_reported(tmp_path: Path) -> None:
    """`enum: [yes, no]` under `type: string` reads as booleans in YAML and is reported."""
    path = write(
        tmp_path,
        "a.yaml",
        ANALYZER_HEAD.format(name="a")
        + "outputs:\n"
        + "  - name: verdict\n"
        + "    description: d\n"
        + "    schema:\n"
        + "      type: object\n"
        + "      properties:\n"
        + "        followed: {type: string, enum: [yes, no, partly]}\n",
    )
    problem = only(all_problems(path))
    assert (problem.rule, problem.field) == ("json-schema-enum-type", "outputs[0].schema")
    assert problem.line == at(path, 8, "schema:")
    assert "True" in problem.message
