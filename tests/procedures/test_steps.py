"""The pure step logic: numbering, what a step reads, and where each value comes from."""

from __future__ import annotations

from analyzers.procedures.steps import (
    initial_parameters,
    input_sources,
    names_read,
    numbered_steps,
    settle_parameters,
)
from schemas import Procedure
from tests.analyzers.helpers import example_definitions


def vendor() -> Procedure:
    _, procedures = example_definitions()
    return next(p for p in procedures if p.name == "vendor_onboarding")


def test_steps_are_numbered_as_the_outline_with_their_if() -> None:
    numbered = numbered_steps(vendor())
    assert [(n.order, n.parent) for n in numbered] == [
        (1, None),
        (2, None),
        (3, None),
        (4, 3),
        (5, None),
    ]


def test_a_step_reads_its_placeholders_and_its_expression_variables() -> None:
    steps = [n.step for n in numbered_steps(vendor())]
    assert names_read(steps[1]) == ["vendor_name"]
    assert names_read(steps[2]) == ["vendor_lookup"]
    assert names_read(steps[3]) == ["vendor_name", "contact", "contract_ref"]
    assert names_read(steps[0]) == []


def test_a_variable_of_the_wrong_type_does_not_supply_a_parameter() -> None:
    known = initial_parameters(vendor(), {"vendor_name": 42, "contract_ref": "CTR-1"})
    assert set(known) == {"contract_ref"}
    settled = settle_parameters(vendor(), known, {"vendor_name": "TechCorp", "contract_ref": "X"})
    assert {n: (v.value, v.source) for n, v in settled.items()} == {
        "vendor_name": ("TechCorp", "model"),
        "contact": (None, "missing"),
        "contract_ref": ("CTR-1", "conversation_variable"),
    }


def test_every_value_says_where_it_came_from() -> None:
    params = settle_parameters(vendor(), {}, {"vendor_name": "TechCorp"})
    sourced = input_sources(
        ["vendor_lookup", "vendor_name", "system__agent_turns", "department", "ghost"],
        params,
        {"vendor_lookup": {"result": None}},
        {"system__agent_turns": 8, "department": "IT"},
    )
    assert [(s.name, s.source) for s in sourced] == [
        ("vendor_lookup", "step_result"),
        ("vendor_name", "model"),
        ("system__agent_turns", "system_variable"),
        ("department", "conversation_variable"),
        ("ghost", "missing"),
    ]
