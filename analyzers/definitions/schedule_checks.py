"""Checks of `kind: schedule` files beyond their shape, each a located problem.

The cron expression must parse and fire; names are unique; an action naming an analyzer
loaded in the same set must name the right kind (a rerun a conversation analyzer, a
standalone action an `input: results` one). An analyzer defined elsewhere (a built-in, another
folder) is checked when `posthoc beat` starts, against the worker's catalog.
"""

from __future__ import annotations

from collections.abc import Sequence

from analyzers.definitions.loading import Problem, Sourced
from analyzers.definitions.schedules import cron_problem
from analyzers.definitions.versions import parse_selector
from schemas.analyzer import AnalyzerSpec
from schemas.schedule import ScheduleSpec


def schedule_problems(
    schedules: Sequence[Sourced[ScheduleSpec]], analyzers: Sequence[Sourced[AnalyzerSpec]]
) -> list[Problem]:
    """Every problem of these schedules that the shape alone does not catch."""
    problems: list[Problem] = []
    first: dict[str, Sourced[ScheduleSpec]] = {}
    inputs: dict[tuple[str, str | None], str] = {}
    for analyzer in analyzers:
        inputs[(analyzer.value.name, analyzer.value.version)] = analyzer.value.input
        inputs[(analyzer.value.name, None)] = analyzer.value.input
    for sourced in schedules:
        spec = sourced.value
        earlier = first.setdefault(spec.name, sourced)
        if earlier is not sourced:
            problems.append(
                sourced.problem(
                    ("name",),
                    "schedule-unique",
                    f"schedule {spec.name!r} is also defined in "
                    f"{earlier.file}:{earlier.line_of(('name',))}",
                )
            )
        if spec.cron is not None:
            problem = cron_problem(spec.cron, spec.timezone)
            if problem is not None:
                problems.append(sourced.problem(("cron",), "cron-valid", problem))
        problems += _action_kind_problems(sourced, inputs)
    return problems


def _action_kind_problems(
    sourced: Sourced[ScheduleSpec], inputs: dict[tuple[str, str | None], str]
) -> list[Problem]:
    spec = sourced.value
    where = "standalone" if spec.standalone is not None else "rerun"
    wanted = "results" if spec.standalone is not None else "conversation"
    found = inputs.get(parse_selector(spec.action.analyzer))
    if found is None or found == wanted:
        return []
    message = (
        f"analyzer {spec.action.analyzer!r} reads one conversation (input: conversation); a "
        "standalone action runs an analyzer with input: results"
        if wanted == "results"
        else f"analyzer {spec.action.analyzer!r} is standalone (input: results); a rerun runs "
        "an analyzer over conversations: use `standalone:` for it"
    )
    return [sourced.problem((where, "analyzer"), "schedule-analyzer-kind", message)]
