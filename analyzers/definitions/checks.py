"""Rules that span several definitions, or need more than pydantic: run after loading.

- an analyzer's procedures exist, and every tool a structured step names is one it may call
  (`tool-allowed`: only for the procedures an analyzer follows itself; a procedure nobody
  follows, such as an agent's own procedure in the store, names the agent's tools);
- built-in tool names exist;
- every expression compiles as CEL and reads only variables that will be there;
- output and tool input schemas are valid JSON Schema, within `max_schema_nodes`, and their
  local `$ref`s resolve and never loop (a loop is endless when inlined or sent as `strict`);
- trigger patterns are sound;
- analyzer name and version pairs are unique across files (several versions of one analyzer
  may be loaded side by side), and versions can be written after `name@`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from analyzers.definitions.expressions import (
    CONVERSATION_VARIABLES,
    ExpressionError,
    compile_expression,
)
from analyzers.definitions.limits import InputLimits, active_limits
from analyzers.definitions.loading import DefinitionSet, Problem, Sourced
from analyzers.definitions.patterns import PatternError, compile_pattern
from analyzers.definitions.schedule_checks import schedule_problems
from analyzers.definitions.versions import SEPARATOR
from analyzers.tools.conversation import BUILTIN_TOOL_NAMES
from analyzers.tools.stored_results import RESULTS_TOOL_NAMES
from schemas.analyzer import AnalyzerSpec
from schemas.procedure import IfStep, Procedure, ToolStep
from schemas.rules import Loc

RESULT_VARIABLES = frozenset(
    {
        "analyzer",
        "analyzer_version",
        "status",
        "outputs",
        "conversation",
        "usage",
        "cost",
        "error",
        "truncated",
    }
)
"""What a sink's `when` expression can read about a result."""


def check_definitions(
    definitions: DefinitionSet, limits: InputLimits | None = None
) -> list[Problem]:
    """Every cross-definition problem in `definitions` (an empty list when all is sound)."""
    limits = active_limits(limits)
    problems: list[Problem] = []
    problems += _unique_names(definitions)
    procedures_by_name: dict[str, list[Sourced[Procedure]]] = defaultdict(list)
    for procedure in definitions.procedures:
        procedures_by_name[procedure.value.name].append(procedure)
        problems += _procedure_problems(procedure, limits)
    for analyzer in definitions.analyzers:
        problems += _analyzer_problems(analyzer, limits)
        problems += _procedure_reference_problems(analyzer, procedures_by_name)
    problems += _chain_problems(definitions.analyzers)
    problems += schedule_problems(definitions.schedules, definitions.analyzers)
    return problems


def _chain_problems(analyzers: list[Sourced[AnalyzerSpec]]) -> list[Problem]:
    """`after:` must name a loaded analyzer, and following `after:` must never come back."""
    parents: dict[str, set[str]] = defaultdict(set)
    for analyzer in analyzers:
        if analyzer.value.after is not None:
            parents[analyzer.value.name].add(analyzer.value.after.analyzer)
    names = {analyzer.value.name for analyzer in analyzers}
    problems: list[Problem] = []
    for analyzer in analyzers:
        after = analyzer.value.after
        if after is None:
            continue
        if after.analyzer not in names:
            problems.append(
                analyzer.problem(
                    ("after", "analyzer"),
                    "after-known",
                    f"runs after {after.analyzer!r}, which is not a loaded analyzer "
                    f"(known: {sorted(names)})",
                )
            )
            continue
        cycle = _cycle_from(analyzer.value.name, parents)
        if cycle:
            problems.append(
                analyzer.problem(
                    ("after", "analyzer"),
                    "after-acyclic",
                    f"chaining loops back to {analyzer.value.name!r}: {' -> '.join(cycle)} "
                    "(each analyzer runs after the next)",
                )
            )
    return problems


def _cycle_from(start: str, parents: dict[str, set[str]]) -> list[str]:
    """The path start -> ... -> start through `after:` links, or [] when there is none."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        for parent in sorted(parents.get(name, ())):
            if parent == start:
                return [*path, start]
            if parent not in seen:
                seen.add(parent)
                stack.append((parent, [*path, parent]))
    return []


def _unique_names(definitions: DefinitionSet) -> list[Problem]:
    problems: list[Problem] = []
    first_analyzer: dict[tuple[str, str], Sourced[AnalyzerSpec]] = {}
    for analyzer in definitions.analyzers:
        name, version = analyzer.value.name, analyzer.value.version
        if SEPARATOR in version or version != version.strip():
            problems.append(
                analyzer.problem(
                    ("version",),
                    "analyzer-version",
                    f"analyzer version {version!r} must not contain {SEPARATOR!r} or start or "
                    f"end with a space: it is written as `{name}{SEPARATOR}<version>`",
                )
            )
        if (name, version) in first_analyzer:
            earlier = first_analyzer[(name, version)]
            problems.append(
                analyzer.problem(
                    ("name",),
                    "analyzer-unique",
                    f"analyzer {name!r} version {version!r} is also defined in "
                    f"{earlier.file}:{earlier.line_of(('name',))}",
                )
            )
        else:
            first_analyzer[(name, version)] = analyzer
    first_procedure: dict[tuple[str | None, str, int], Sourced[Procedure]] = {}
    for procedure in definitions.procedures:
        key = (procedure.value.tenant_id, procedure.value.name, procedure.value.version)
        if key in first_procedure:
            earlier_procedure = first_procedure[key]
            problems.append(
                procedure.problem(
                    ("version",),
                    "procedure-version-unique",
                    f"procedure {key[1]!r} version {key[2]} for tenant {key[0]!r} "
                    f"is also defined in {earlier_procedure.file}:"
                    f"{earlier_procedure.line_of(('name',))}",
                )
            )
        else:
            first_procedure[key] = procedure
    return problems


def _analyzer_problems(analyzer: Sourced[AnalyzerSpec], limits: InputLimits) -> list[Problem]:
    spec = analyzer.value
    problems: list[Problem] = []
    for index, tool in enumerate(spec.tools):
        if isinstance(tool, str) and tool in RESULTS_TOOL_NAMES:
            if spec.input != "results":
                problems.append(
                    analyzer.problem(
                        ("tools", index),
                        "tool-needs-results-input",
                        f"{tool!r} reads stored results: only standalone analyzers "
                        "(input: results) may list it",
                    )
                )
        elif isinstance(tool, str) and tool not in BUILTIN_TOOL_NAMES:
            problems.append(
                analyzer.problem(
                    ("tools", index),
                    "tool-builtin-known",
                    f"{tool!r} is not a built-in tool (known: "
                    f"{sorted(BUILTIN_TOOL_NAMES | RESULTS_TOOL_NAMES)}); define an HTTP tool "
                    "instead",
                )
            )
        elif not isinstance(tool, str):
            problems += _schema_problems(
                analyzer,
                ("tools", index, "input_schema"),
                tool.input_schema,
                limits,
                require_object=True,
            )
    for index, output in enumerate(spec.outputs):
        if output.json_schema is not None:
            problems += _schema_problems(
                analyzer, ("outputs", index, "schema"), output.json_schema, limits
            )
    if spec.trigger.expression is not None:
        problems += _expression_problems(
            analyzer,
            ("trigger", "expression"),
            spec.trigger.expression,
            CONVERSATION_VARIABLES,
            limits,
        )
    for index, sink in enumerate(spec.sinks):
        if sink.when is not None:
            problems += _expression_problems(
                analyzer, ("sinks", index, "when"), sink.when, RESULT_VARIABLES, limits
            )
    if spec.after is not None and spec.after.when is not None:
        problems += _expression_problems(
            analyzer, ("after", "when"), spec.after.when, RESULT_VARIABLES, limits
        )
    return problems


def _procedure_problems(procedure: Sourced[Procedure], limits: InputLimits) -> list[Problem]:
    value = procedure.value
    problems: list[Problem] = []
    for index, pattern in enumerate(value.trigger.patterns):
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            problems.append(
                procedure.problem(("trigger", "patterns", index), "pattern-valid", str(exc))
            )
    trigger_scope = CONVERSATION_VARIABLES | set(value.dynamic_variables)
    for index, condition in enumerate(value.trigger.conditions):
        problems += _expression_problems(
            procedure, ("trigger", "conditions", index), condition, trigger_scope, limits
        )
    for loc, step in value.walk_steps():
        if isinstance(step, IfStep) and step.condition.expression is not None:
            scope = CONVERSATION_VARIABLES | value.names_in_scope(loc)
            problems += _expression_problems(
                procedure, (*loc, "if", "expression"), step.condition.expression, scope, limits
            )
    return problems


def _procedure_reference_problems(
    analyzer: Sourced[AnalyzerSpec], procedures_by_name: dict[str, list[Sourced[Procedure]]]
) -> list[Problem]:
    spec = analyzer.value
    problems: list[Problem] = []
    for index, name in enumerate(spec.procedures):
        versions = procedures_by_name.get(name)
        if not versions:
            problems.append(
                analyzer.problem(
                    ("procedures", index),
                    "procedure-exists",
                    f"procedure {name!r} is not defined in any procedure file "
                    f"(known: {sorted(procedures_by_name)})",
                )
            )
            continue
        for procedure in versions:
            problems += _tool_step_problems(analyzer, procedure)
    return problems


def _tool_step_problems(
    analyzer: Sourced[AnalyzerSpec], procedure: Sourced[Procedure]
) -> list[Problem]:
    spec = analyzer.value
    http_tools = {tool.name: tool for tool in spec.http_tools()}
    problems: list[Problem] = []
    for loc, step in procedure.value.walk_steps():
        if not isinstance(step, ToolStep):
            continue
        if step.tool not in spec.tool_names():
            problems.append(
                procedure.problem(
                    (*loc, "tool"),
                    "tool-allowed",
                    f"tool {step.tool!r} is not one analyzer {spec.name!r} "
                    f"({analyzer.file}) may call; its tools are {sorted(spec.tool_names())}",
                )
            )
            continue
        tool = http_tools.get(step.tool)
        if tool is None:
            continue
        properties = set((tool.input_schema.get("properties") or {}).keys())
        required = set(tool.input_schema.get("required") or [])
        unknown = sorted(set(step.arguments) - properties)
        missing = sorted(required - set(step.arguments))
        if unknown or missing:
            problems.append(
                procedure.problem(
                    (*loc, "arguments"),
                    "tool-arguments-match",
                    f"arguments of {step.tool!r} do not match its input_schema in analyzer "
                    f"{spec.name!r}: unknown {unknown}, missing {missing}",
                )
            )
    return problems


def _expression_problems(
    owner: Sourced[AnalyzerSpec] | Sourced[Procedure],
    loc: Loc,
    source: str,
    known: frozenset[str] | set[str],
    limits: InputLimits,
) -> list[Problem]:
    try:
        compile_expression(source, known=known, limits=limits)
    except ExpressionError as exc:
        return [owner.problem(loc, "expression-valid", str(exc))]
    return []


def _schema_problems(
    owner: Sourced[AnalyzerSpec],
    loc: Loc,
    schema: dict[str, object],
    limits: InputLimits,
    *,
    require_object: bool = False,
) -> list[Problem]:
    size = _count_nodes(schema, limits.max_schema_nodes)
    if size > limits.max_schema_nodes:
        return [
            owner.problem(
                loc,
                "json-schema-size",
                f"the schema has more than {limits.max_schema_nodes} values; keep it smaller",
            )
        ]
    ref_problem = _ref_problem(schema)
    if ref_problem is not None:
        return [owner.problem(loc, "json-schema-ref", ref_problem)]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        return [
            owner.problem(
                loc, "json-schema-valid", f"not a valid JSON Schema at {where}: {exc.message}"
            )
        ]
    mistyped = list(_mistyped_enums(schema, ()))
    if mistyped:
        where, value = mistyped[0]
        return [
            owner.problem(
                loc,
                "json-schema-enum-type",
                f"enum value {value!r} at {where} is not a string although the type is string; "
                "YAML reads unquoted yes/no/on/off as booleans, so quote them",
            )
        ]
    if require_object and schema.get("type") != "object":
        return [
            owner.problem(loc, "json-schema-object", "a tool's input_schema must have type: object")
        ]
    return []


def _mistyped_enums(schema: object, path: tuple[str, ...]) -> Iterator[tuple[str, object]]:
    if isinstance(schema, dict):
        if schema.get("type") == "string":
            for value in schema.get("enum") or []:
                if not isinstance(value, str):
                    yield "/".join(path) or "(root)", value
        for key, child in schema.items():
            yield from _mistyped_enums(child, (*path, str(key)))
    elif isinstance(schema, list):
        for index, child in enumerate(schema):
            yield from _mistyped_enums(child, (*path, str(index)))


def _count_nodes(value: object, cap: int) -> int:
    """Values inside `value`, counting stops just past `cap` (so a shared-alias bomb is cheap)."""
    count = 0
    stack: list[object] = [value]
    while stack and count <= cap:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _refs_inside(value: object) -> Iterator[object]:
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "$ref" in item:
                yield item["$ref"]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _resolve_pointer(schema: object, ref: str) -> tuple[bool, object]:
    """Follow a local `#/a/b` reference; (found, target)."""
    node: Any = schema
    for raw in ref.removeprefix("#").split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _ref_problem(schema: object) -> str | None:
    """Why the schema's `$ref`s cannot be used: not local, not found, or looping back."""
    edges: dict[str, list[str]] = {}
    pending = ["#"]
    while pending:
        pointer = pending.pop()
        if pointer in edges:
            continue
        _, target = _resolve_pointer(schema, pointer)
        targets: list[str] = []
        for ref in _refs_inside(target):
            if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
                return f"$ref {ref!r} is not a local reference (#/...); inline the schema"
            found, _ = _resolve_pointer(schema, ref)
            if not found:
                return f"$ref {ref!r} points at nothing in this schema"
            targets.append(ref)
        edges[pointer] = targets
        pending += targets
    # A reference reachable from its own target never ends when expanded.
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in edges:
        if start in state:
            continue
        walk: list[tuple[str, int]] = [(start, 0)]
        state[start] = 1
        while walk:
            pointer, position = walk[-1]
            children = edges.get(pointer, [])
            if position == len(children):
                state[pointer] = 2
                walk.pop()
                continue
            walk[-1] = (pointer, position + 1)
            child = children[position]
            if state.get(child) == 1:
                return f"$ref {child!r} refers back into itself; recursive schemas are not allowed"
            if child not in state:
                state[child] = 1
                walk.append((child, 0))
    return None
