"""Analyzer snapshots and version strings (pure): what the hash covers, how versions order,
`name@version` parsing, that the prompt hash tells analyzers apart, and that a transient failure
carries what the run spent."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

import analyzers
from analyzers.definitions.versions import newest, parse_selector, version_key
from analyzers.errors import TransientModelError
from analyzers.runtime.session import RunOptions
from analyzers.runtime.snapshot import SnapshotCache, build_snapshot
from analyzers.testing import ScriptedModel, reply, text, tool_call
from schemas import AnalyzerSpec, Conversation, Procedure, Usage
from tests.analyzers.helpers import builtin_analyzer, conversation

POLICY = Procedure.model_validate(
    {
        "name": "outage_policy",
        "version": 1,
        "description": "How outages are handled.",
        "trigger": {"description": "An outage.", "patterns": ["internet * down|outage"]},
        "content": "Credit one day per day of outage.",
        "approved": True,
    }
)


def spec(instructions: str = "Find outages.", version: str = "1") -> AnalyzerSpec:
    return AnalyzerSpec.model_validate(
        {
            "name": "outage_watch",
            "version": version,
            "description": "Outages.",
            "instructions": instructions,
            "procedures": ["outage_policy"],
            "outputs": [
                {
                    "name": "outage",
                    "description": "Whether there was an outage.",
                    "schema": {"type": "boolean"},
                }
            ],
        }
    )


def chat(text_: str) -> Conversation:
    return Conversation.model_validate(
        {
            "conversation_id": "c-snap",
            "tenant_id": "acme",
            "agent_id": "support-bot",
            "channel": "chat",
            "started_at": "2026-11-20T09:00:00Z",
            "ended_at": "2026-11-20T09:05:00Z",
            "outcome": "resolved",
            "turns": [{"role": "user", "text": text_}],
        }
    )


OUTAGE = chat("My internet is down again.")


def test_the_hash_is_stable_and_covers_spec_procedures_and_schemas() -> None:
    base = build_snapshot(spec(), OUTAGE, [POLICY])
    assert base.spec_hash() == build_snapshot(spec(), OUTAGE, [POLICY]).spec_hash()
    assert len(base.spec_hash()) == 64
    newer_policy = POLICY.model_copy(update={"version": 2, "content": "Credit a week."})
    other_schema = spec().model_copy(
        update={
            "outputs": [
                spec().outputs[0].model_copy(update={"json_schema": {"type": "string"}}),
            ]
        }
    )
    variants = [
        build_snapshot(spec("Find outages and their cause."), OUTAGE, [POLICY]),
        build_snapshot(spec(), OUTAGE, [POLICY, newer_policy]),
        build_snapshot(other_schema, OUTAGE, [POLICY]),
        build_snapshot(spec(version="2"), OUTAGE, [POLICY]),
    ]
    hashes = {base.spec_hash(), *(variant.spec_hash() for variant in variants)}
    assert len(hashes) == 5
    assert [p.version for p in variants[1].procedures] == [2]  # the newest in scope is frozen


def test_the_snapshot_cache_builds_what_build_snapshot_builds_once_per_applicability() -> None:
    cache = SnapshotCache()
    analyzer = spec()
    other_tenant = POLICY.model_copy(update={"tenant_id": "globex"})
    cases = [
        OUTAGE,
        chat("The internet is down in the whole building."),
        chat("Can I change my billing address?"),
        chat("Where is my parcel?"),
    ]
    built = [cache.build(analyzer, case, [POLICY, other_tenant]) for case in cases]
    for case, snapshot in zip(cases, built, strict=True):
        assert snapshot == build_snapshot(analyzer, case, [POLICY, other_tenant])
    # The two outages share one snapshot object; the two without an outage share another.
    assert built[0] is built[1]
    assert built[2] is built[3]
    assert built[0] is not built[2]
    assert built[0].spec_hash() != built[2].spec_hash()
    # Another spec object (a new version loaded) is never served an old snapshot.
    assert cache.build(spec(version="2"), OUTAGE, [POLICY]).analyzer_version == "2"


def test_the_brief_holds_only_procedures_that_apply_but_every_resolved_one_is_frozen() -> None:
    applies = build_snapshot(spec(), OUTAGE, [POLICY])
    does_not = build_snapshot(spec(), chat("Can I change my billing address?"), [POLICY])
    assert "Credit one day per day of outage." in applies.brief
    assert "Credit one day" not in does_not.brief
    assert applies.procedures == does_not.procedures == [POLICY]
    assert applies.spec_hash() != does_not.spec_hash()


def test_procedures_out_of_scope_are_not_resolved() -> None:
    unapproved = POLICY.model_copy(update={"version": 5, "approved": False})
    other_tenant = POLICY.model_copy(update={"version": 6, "tenant_id": "globex"})
    snapshot = build_snapshot(spec(), OUTAGE, [POLICY, unapproved, other_tenant])
    assert [p.version for p in snapshot.procedures] == [1]


def test_the_tool_definitions_are_those_the_runtime_offers() -> None:
    snapshot = build_snapshot(builtin_analyzer("follow_ups"), conversation(), [])
    names = [tool["name"] for tool in snapshot.tool_definitions]
    assert names == sorted(["get_turns", "search_conversation", "record_follow_up"])


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("9", "10"),
        ("1.9", "1.10"),
        ("1.2", "1.2.1"),
        ("v3", "v12"),
        ("2026-11-30", "2026-12-01"),
        ("1.0.0", "2"),
        ("01", "1"),  # equal as numbers: ordered by text, so the order stays total
        ("1", "1a"),
    ],
)
def test_versions_order_as_a_person_reads_them(older: str, newer: str) -> None:
    assert version_key(older) < version_key(newer)
    assert newest([newer, older]) == newest([older, newer]) == newer


def test_selectors() -> None:
    assert parse_selector("quality") == ("quality", None)
    assert parse_selector("quality@1.0.0") == ("quality", "1.0.0")
    assert parse_selector("quality@") == ("quality", "")


@given(st.lists(st.text(max_size=20), min_size=1, max_size=6))
def test_version_ordering_never_fails_and_is_total(versions: list[str]) -> None:
    ordered = sorted(versions, key=version_key)
    for lower, higher in itertools.pairwise(ordered):
        assert version_key(lower) <= version_key(higher)
        assert (version_key(lower) == version_key(higher)) == (lower == higher)


def test_the_prompt_hash_covers_the_analyzers_own_instructions() -> None:
    """Two analyzers on one conversation share the cached prefix but not the prompt hash."""
    convo = conversation()
    follow_ups, next_steps = builtin_analyzer("follow_ups"), builtin_analyzer("next_steps")
    hashes = []
    for analyzer, companion in ((follow_ups, next_steps), (next_steps, follow_ups)):
        model = ScriptedModel([reply(text("Nothing to record."))] * 3)
        result = asyncio.run(analyzers.run(analyzer, convo, model=model, companions=[companion]))
        assert result.provenance is not None
        hashes.append(result.provenance.prompt_hash)
    assert hashes[0] != hashes[1]


def test_a_transient_failure_carries_what_the_run_spent() -> None:
    spent = Usage(input_tokens=700, output_tokens=50, cache_read_input_tokens=2000)
    model = ScriptedModel(
        [
            reply(tool_call("get_turns", {"first": 0, "last": 1}), usage=spent),
            TransientModelError("overloaded"),
        ]
    )
    with pytest.raises(TransientModelError) as caught:
        asyncio.run(
            analyzers.run(
                builtin_analyzer("follow_ups"),
                conversation(),
                model=model,
                options=RunOptions(default_model="claude-sonnet-5-5"),
            )
        )
    assert caught.value.usage == spent
    assert caught.value.cost.total_usd > 0
