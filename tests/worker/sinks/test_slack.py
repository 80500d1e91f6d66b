"""The Slack edge against the fake Slack Web API, through the real `slack_sdk` over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slack_sdk import WebClient

from tests.worker.sinks import results
from worker.sinks.errors import RetryLater, Undeliverable
from worker.sinks.fake_slack import (
    INCOMING_WEBHOOK_CHANNEL,
    AcceptThenDrop,
    FakeSlack,
    RateLimited,
    ServerError,
    serve_fake_slack,
)
from worker.sinks.render import RenderedResult, render_result
from worker.sinks.slack import (
    SlackReceipt,
    deliver_to_incoming_webhook,
    deliver_to_slack,
    match_metadata,
    web_client,
)

TOKEN = "xoxb-test"


@pytest.fixture
def slack() -> Iterator[tuple[FakeSlack, WebClient]]:
    fake = FakeSlack(token=TOKEN)
    with serve_fake_slack(fake) as base_url:
        yield fake, web_client(TOKEN, base_url)


def deliver(
    client: WebClient,
    rendered: RenderedResult,
    receipt: SlackReceipt | None = None,
    *,
    may_have_posted: bool = False,
    delivery_id: str = "d-1",
) -> tuple[SlackReceipt, list[SlackReceipt]]:
    saved: list[SlackReceipt] = []
    final = deliver_to_slack(
        client,
        delivery_id=delivery_id,
        channel="#escalations",
        rendered=rendered,
        receipt=receipt or SlackReceipt(),
        may_have_posted=may_have_posted,
        save=saved.append,
    )
    return final, saved


def test_a_post_carries_its_delivery_id_and_returns_its_ts(
    slack: tuple[FakeSlack, WebClient],
) -> None:
    fake, client = slack
    receipt, saved = deliver(client, render_result(results.follow_ups()))
    [message] = fake.messages("#escalations")
    assert receipt.ts == {0: message.ts}
    assert receipt.channel_id == fake.channel_id("#escalations")
    assert saved == [receipt]
    assert message.metadata == {
        "event_type": "posthoc_delivery",
        "event_payload": {"delivery_id": "d-1", "part": 0},
    }


def test_a_retried_delivery_updates_instead_of_posting(
    slack: tuple[FakeSlack, WebClient],
) -> None:
    fake, client = slack
    receipt, _ = deliver(client, render_result(results.follow_ups()))
    again, _ = deliver(client, render_result(results.follow_ups(priority="urgent")), receipt)
    [message] = fake.messages("#escalations")
    assert again == receipt
    assert message.edits == 1
    assert "Urgent" in message.text
    assert fake.count("chat.postMessage") == 1


def test_a_connection_dropped_after_slack_accepted_posts_no_second_message(
    slack: tuple[FakeSlack, WebClient],
) -> None:
    fake, client = slack
    fake.fail_next("chat.postMessage", AcceptThenDrop())
    receipt, _ = deliver(client, render_result(results.follow_ups()))
    [message] = fake.messages("#escalations")
    assert receipt.ts == {0: message.ts}
    assert fake.duplicates() == 0
    # It was found through history read with include_all_metadata (else no metadata is shown).
    history = [args for name, args in fake.calls if name == "conversations.history"]
    assert history
    assert all(args["include_all_metadata"] in {"1", "true", "True"} for args in history)


def test_the_sdk_default_retry_would_have_posted_twice(
    slack: tuple[FakeSlack, WebClient],
) -> None:
    """Why the SDK's retry handlers are off: the fake tells a blind retry from ours."""
    fake, client = slack
    default = WebClient(token=TOKEN, base_url=client.base_url)  # ConnectionErrorRetryHandler on
    fake.fail_next("chat.postMessage", AcceptThenDrop())
    default.chat_postMessage(channel="#escalations", text="hi", metadata=_metadata("d-9"))
    assert fake.duplicates() == 1


def test_an_attempt_that_crashed_before_saving_finds_its_message(
    slack: tuple[FakeSlack, WebClient],
) -> None:
    fake, client = slack
    deliver(client, render_result(results.follow_ups()))  # posted; its receipt never saved
    receipt, _ = deliver(client, render_result(results.follow_ups()), may_have_posted=True)
    assert len(fake.messages("#escalations")) == 1
    assert receipt.ts[0] == fake.messages("#escalations")[0].ts
    assert fake.messages("#escalations")[0].edits == 1


def test_history_shows_metadata_only_when_asked(slack: tuple[FakeSlack, WebClient]) -> None:
    fake, client = slack
    deliver(client, render_result(results.follow_ups()))
    cid = fake.channel_id("#escalations")
    plain = client.conversations_history(channel=cid)["messages"]
    full = client.conversations_history(channel=cid, include_all_metadata=True)["messages"]
    assert "metadata" not in plain[0]
    assert full[0]["metadata"]["event_payload"]["delivery_id"] == "d-1"


def test_429_is_retried_later_with_slacks_retry_after(
    slack: tuple[FakeSlack, WebClient],
) -> None:
    fake, client = slack
    fake.fail_next("chat.postMessage", RateLimited(retry_after=7))
    with pytest.raises(RetryLater) as raised:
        deliver(client, render_result(results.follow_ups()))
    assert raised.value.retry_after == 7.0
    assert raised.value.reason == "slack_ratelimited"
    assert fake.messages("#escalations") == []


def test_500_is_retried_later(slack: tuple[FakeSlack, WebClient]) -> None:
    fake, client = slack
    fake.fail_next("chat.postMessage", ServerError())
    with pytest.raises(RetryLater):
        deliver(client, render_result(results.follow_ups()))
    receipt, _ = deliver(client, render_result(results.follow_ups()), may_have_posted=True)
    assert list(fake.delivered("#escalations").values()) == [1]
    assert receipt.ts


def test_a_bad_token_is_undeliverable() -> None:
    fake = FakeSlack(token=TOKEN)
    with serve_fake_slack(fake) as base_url:
        client = web_client("xoxb-wrong", base_url)
        with pytest.raises(Undeliverable, match="invalid_auth"):
            deliver(client, render_result(results.follow_ups()))


def test_details_go_in_a_thread_under_the_headline_and_replay_updates_them(
    slack: tuple[FakeSlack, WebClient],
) -> None:
    fake, client = slack
    item = results.follow_ups().outputs["follow_up"][0]
    big = render_result(results.result("follow_ups", {"follow_up": [item] * 120}))
    assert big.replies
    fake.fail_next("chat.postMessage", None, AcceptThenDrop())  # type: ignore[arg-type]
    receipt, _ = deliver(client, big)
    messages = fake.messages("#escalations")
    headline = messages[0]
    assert len(messages) == 1 + len(big.replies)
    assert all(m.thread_ts == headline.ts for m in messages[1:])
    assert fake.duplicates() == 0
    deliver(client, big, receipt)
    assert len(fake.messages("#escalations")) == len(messages)


def _metadata(delivery_id: str) -> dict[str, object]:
    return {"event_type": "posthoc_delivery", "event_payload": {"delivery_id": delivery_id}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner),
    max_leaves=25,
)


@given(
    messages=st.lists(json_values | st.fixed_dictionaries({"metadata": json_values}), max_size=8)
)
def test_a_hostile_history_never_breaks_the_lookup(messages: list[Any]) -> None:
    assert match_metadata(messages, "d-1", 0) is None


def test_the_lookup_matches_delivery_and_part() -> None:
    mine = {"event_type": "posthoc_delivery", "event_payload": {"delivery_id": "d-1", "part": 1}}
    history = [
        {"ts": "1.1", "metadata": {**mine, "event_type": "other"}},
        {"ts": "1.2", "metadata": mine},
    ]
    assert match_metadata(history, "d-1", 1) == "1.2"
    assert match_metadata(history, "d-1", 0) is None
    assert match_metadata(history, "d-2", 1) is None


def test_incoming_webhook_mode_posts_the_headline_and_honours_429(
    slack: tuple[FakeSlack, WebClient],
) -> None:
    fake, client = slack
    url = client.base_url.replace("/api/", "/services/T0/B0/secret")
    fake.fail_next("incoming-webhook", RateLimited(retry_after=9))
    with pytest.raises(RetryLater) as raised:
        deliver_to_incoming_webhook(url, render_result(results.follow_ups()))
    assert raised.value.retry_after == 9.0
    deliver_to_incoming_webhook(url, render_result(results.follow_ups()))
    [message] = fake.messages(INCOMING_WEBHOOK_CHANNEL)
    assert message.metadata is None  # no metadata, no ts: nothing to update or look up later
    assert "follow_ups" in message.text
