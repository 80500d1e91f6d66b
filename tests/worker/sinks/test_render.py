"""Block Kit rendering: every Slack limit holds for any result, and each built-in output type
renders as its snapshot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.result import RecordedOutput
from tests.worker.sinks import results
from worker.sinks.fake_slack import message_problems
from worker.sinks.render import (
    MAX_BLOCKS,
    RenderedResult,
    clip,
    conversation_url,
    escape_mrkdwn,
    mention_markup,
    render_result,
)

SNAPSHOTS = Path(__file__).parent / "snapshots"


def assert_within_limits(rendered: RenderedResult) -> None:
    for message in rendered.messages:
        assert message_problems(message.text, message.blocks) == []


def as_json(rendered: RenderedResult) -> dict[str, Any]:
    return {
        "headline": {"text": rendered.headline.text, "blocks": rendered.headline.blocks},
        "replies": [{"text": m.text, "blocks": m.blocks} for m in rendered.replies],
    }


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("follow_ups", results.follow_ups),
        ("next_steps", results.next_steps),
        ("quality", results.quality),
        ("failed", results.failed),
    ],
)
def test_each_builtin_output_type_renders_as_its_snapshot(name: str, make: Any) -> None:
    rendered = render_result(
        make(),
        conversation=results.conversation(),
        url="https://cx.example.com/c/c-123",
        mentions=["U024BE7LH", "S0614TZR7"] if name == "follow_ups" else [],
    )
    assert_within_limits(rendered)
    path = SNAPSHOTS / f"{name}.json"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(as_json(rendered), indent=2, ensure_ascii=False) + "\n")
    assert as_json(rendered) == json.loads(path.read_text(encoding="utf-8"))


def test_transcript_text_cannot_inject_markup() -> None:
    rendered = render_result(results.follow_ups(), conversation=results.conversation())
    section = rendered.headline.blocks[3]["fields"][0]["text"]
    assert "&lt;&amp; more&gt;" in section
    assert "<& more>" not in json.dumps(rendered.headline.blocks)


def test_thousands_of_items_go_to_the_thread_and_the_rest_is_announced() -> None:
    item = results.follow_ups().outputs["follow_up"][0]
    big = results.result("follow_ups", {"follow_up": [item] * 3000})
    rendered = render_result(big, conversation=results.conversation())
    assert_within_limits(rendered)
    assert 1 <= len(rendered.replies) <= 10
    note = rendered.headline.blocks[-1]["elements"][0]["text"]
    shown = sum(
        1 for m in rendered.messages for b in m.blocks if b["type"] == "section" and "fields" in b
    )
    assert f"{3000 - shown} item(s) not shown" in note
    assert "more item(s) in the thread" in note


def test_a_100kb_string_is_trimmed_with_a_visible_note() -> None:
    huge = "x" * 100_000
    value = {"priority": "urgent", "reason": huge, "suggested_action": huge, "customer_ask": huge}
    rendered = render_result(
        results.result("follow_ups", {"follow_up": [RecordedOutput(value=value)]})
    )
    assert_within_limits(rendered)
    assert "(trimmed)" in json.dumps(rendered.headline.blocks)


def test_clip_never_splits_an_escaped_entity() -> None:
    text = escape_mrkdwn("a" * 20 + "&" * 20)
    for limit in range(15, 60):
        clipped = clip(text, limit, note="…")
        assert len(clipped) <= limit
        body = clipped.removesuffix("…")
        assert body.replace("&amp;", "").count("&") == 0


def test_conversation_url_quotes_values_and_names_unknown_placeholders() -> None:
    url = conversation_url(
        "https://cx.example.com/{tenant_id}/c/{conversation_id}",
        conversation_id="c/1 2",
        tenant_id="acme",
        run_id="r",
    )
    assert url == "https://cx.example.com/acme/c/c%2F1%202"
    with pytest.raises(ValueError, match=r"\['conversation'\]"):
        conversation_url("https://x/{conversation}", conversation_id="c", tenant_id="t", run_id="r")


def test_mentions() -> None:
    assert mention_markup("U024BE7LH") == "<@U024BE7LH>"
    assert mention_markup("S0614TZR7") == "<!subteam^S0614TZR7>"
    assert mention_markup("@here") == "<!here>"
    assert mention_markup("<!channel> bob") == "&lt;!channel&gt; bob"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=20,
)
big_text = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["x", "&", "<", "é", "🙂", " "]),
        st.integers(0, 100_000),
    ),
)
items = st.builds(
    RecordedOutput,
    value=st.dictionaries(
        st.sampled_from(["priority", "reason", "action", "customer_ask", "a", "b", "c"])
        | st.text(max_size=30),
        big_text | json_values,
        max_size=15,
    ),
    evidence_turns=st.lists(st.integers(0, 500), max_size=40),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    outputs=st.dictionaries(
        st.sampled_from(["follow_up", "next_step", "quality_assessment", "custom_thing"]),
        st.lists(items, max_size=3)
        | st.lists(items, min_size=1, max_size=1).map(lambda x: x * 2500),
        max_size=4,
    ),
    mentions=st.lists(st.text(max_size=60), max_size=100),
    url=st.none() | st.text(max_size=3000),
)
def test_any_result_renders_within_every_limit(
    outputs: dict[str, list[RecordedOutput]], mentions: list[str], url: str | None
) -> None:
    rendered = render_result(
        results.result("custom", outputs),
        conversation=results.conversation(),
        url=url,
        mentions=mentions,
    )
    assert_within_limits(rendered)
    assert all(len(m.blocks) <= MAX_BLOCKS for m in rendered.messages)
