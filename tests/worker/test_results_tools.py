"""The standalone analyzers' ledger tools on a real ledger: bounded to the selection's tenant and
window, narrowed by field and time, paged; fuzzed arguments never raise; and a standalone
analyzer never runs on a conversation's arrival."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzers.tools.base import ReadCoverage, ToolContext
from analyzers.tools.stored_results import GetStoredConversation, QueryResults
from schemas import AnalysisResult, Conversation
from worker.catalog import STANDALONE_SKIP_REASON, Catalog
from worker.engine.results_reader import LedgerResultsReader, ResultsSelection
from worker.ledger import Ledger, ManualClock, RunPlan

START = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """Ten acme results an hour apart (even ones with a follow-up), one of globex."""
    path = tmp_path_factory.mktemp("tools") / "ledger.sqlite3"
    clock = ManualClock(START)
    ledger = Ledger.from_url(f"sqlite:///{path}", now=clock)
    ledger.migrate()
    for index, tenant in [*((i, "acme") for i in range(10)), (10, "globex")]:
        clock.set(START + timedelta(hours=index))
        cid = f"c-{index}"
        ref = ledger.save_conversation(
            Conversation(
                conversation_id=cid, tenant_id=tenant, turns=[{"role": "user", "text": cid}]
            )
        )
        [run] = ledger.record_runs(ref.pk, [RunPlan("follow_ups", "1.0.0")], trigger="cli")
        assert ledger.claim(run.id, "w", 60) is not None
        values = [{"value": {"n": index}, "evidence_turns": [0]}] if index % 2 == 0 else []
        result = AnalysisResult(
            run_id=run.id,
            conversation_id=cid,
            tenant_id=tenant,
            analyzer="follow_ups",
            analyzer_version="1.0.0",
            status="succeeded",
            outputs={"follow_up": values},
        )
        assert ledger.complete(run.id, "w", result)
    try:
        yield ledger
    finally:
        ledger.dispose()


def context(ledger: Ledger, hours: int = 24) -> ToolContext:
    selection = ResultsSelection("acme", START, START + timedelta(hours=hours))
    return ToolContext(
        conversation=Conversation(conversation_id="standalone:x"),
        coverage=ReadCoverage(0),
        results=LedgerResultsReader(ledger, selection),
    )


def query(ledger: Ledger, hours: int = 24, **arguments: Any) -> tuple[str, bool]:
    outcome = asyncio.run(
        QueryResults().call({"analyzer": "follow_ups", **arguments}, context(ledger, hours))
    )
    return str(outcome.output), outcome.is_error


def conversations_in(text: str) -> list[str]:
    return [part.split(" · ")[0] for part in text.split("conversation ")[1:]]


def test_results_are_bounded_to_the_tenant_and_window_and_narrowed(world: Ledger) -> None:
    text, error = query(world)
    assert not error
    assert conversations_in(text) == [f"c-{i}" for i in range(9, -1, -1)], "newest first"
    text, _ = query(world, hours=5)
    assert conversations_in(text) == ["c-4", "c-3", "c-2", "c-1", "c-0"], "window end exclusive"
    text, _ = query(world, field="follow_up")
    assert conversations_in(text) == ["c-8", "c-6", "c-4", "c-2", "c-0"]
    text, _ = query(world, field="follow_up", limit=2, offset=2)
    assert conversations_in(text) == ["c-4", "c-2"]
    assert "offset=4" in text
    since = (START + timedelta(hours=7)).isoformat()
    text, _ = query(world, since=since, until=(START + timedelta(days=9)).isoformat())
    assert conversations_in(text) == ["c-9", "c-8", "c-7"], "narrowed, never widened"
    text, _ = query(world, tenant="globex")
    assert conversations_in(text) == [], "another tenant is out of scope"
    text, error = query(world, since="2026-11-20T00:00:00")
    assert error
    assert "$.since" in text


def test_get_conversation_reads_only_the_selections_tenant(world: Ledger) -> None:
    tool = GetStoredConversation()
    found = asyncio.run(tool.call({"conversation_id": "c-3"}, context(world)))
    assert not found.is_error
    assert "[0] user: c-3" in str(found.output)
    other = asyncio.run(tool.call({"conversation_id": "c-10"}, context(world)))
    assert other.is_error
    elsewhere = asyncio.run(
        tool.call({"conversation_id": "c-10", "tenant": "globex"}, context(world))
    )
    assert elsewhere.is_error


def test_without_a_reader_the_tools_say_so() -> None:
    bare = ToolContext(conversation=Conversation(conversation_id="c"), coverage=ReadCoverage(0))
    outcome = asyncio.run(QueryResults().call({"analyzer": "follow_ups"}, bare))
    assert outcome.is_error
    assert "input: results" in str(outcome.output)


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_arguments = st.fixed_dictionaries(
    {},
    optional={
        "analyzer": st.one_of(st.sampled_from(["follow_ups", ""]), _json),
        "field": _json,
        "since": st.one_of(st.sampled_from(["2026-11-20T03:00:00+00:00", "9999-99"]), _json),
        "until": st.one_of(
            st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]), _json
        ),
        "tenant": _json,
        "limit": _json,
        "offset": st.one_of(st.integers(-5, 10**9), _json),
        "conversation_id": _json,
    },
)


@settings(
    max_examples=30 if os.environ.get("CI") else 60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(arguments=_arguments)
def test_fuzzed_tool_arguments_give_an_answer_never_a_traceback(
    world: Ledger, arguments: dict[str, Any]
) -> None:
    for tool in (QueryResults(), GetStoredConversation()):
        outcome = asyncio.run(tool.call(arguments, context(world)))
        assert isinstance(outcome.output, str)


def test_a_standalone_analyzer_never_runs_on_a_conversations_arrival() -> None:
    catalog = Catalog.load()
    conversation = Conversation(conversation_id="c", outcome="escalated")
    assert "daily_digest" not in {plan.analyzer for plan in catalog.plan(conversation, None, 3)}
    [plan] = catalog.plan(conversation, ["daily_digest"], 3)
    assert plan.skip_reason == STANDALONE_SKIP_REASON
    assert plan.snapshot is None
    assert all(
        spec.name != "daily_digest"
        for spec in catalog.companions(catalog.analyzers["follow_ups"], conversation)
    )
