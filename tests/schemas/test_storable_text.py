"""Unstorable text in a conversation (NUL, unpaired surrogates) is refused at the contract,
located, wherever it hides; the quick check in front of the walk never lets one through."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas import Conversation
from schemas.conversation import may_hold_unstorable_text


def record(**fields: Any) -> dict[str, Any]:
    return {
        "conversation_id": "c-1",
        "turns": [{"role": "user", "text": "hello"}, {"role": "agent", "text": "hi"}],
        **fields,
    }


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (record(turns=[{"role": "user", "text": "a\x00b"}]), "turns[0].text"),
        (record(turns=[{"role": "user", "text": "a\ud800b"}]), "turns[0].text"),
        (record(metadata={"deep": [{"x": ["ok", "bad\udfff"]}]}), "metadata.deep[0].x[1]"),
        (record(metadata={"key\x00": 1}), "metadata"),
    ],
)
def test_unstorable_text_is_refused_and_located(data: dict[str, Any], where: str) -> None:
    assert may_hold_unstorable_text(data)
    with pytest.raises(ValidationError) as raised:
        Conversation.model_validate(data)

    assert where in str(raised.value)


@pytest.mark.parametrize(
    "text", ["plain", "a literal \\u0000 written out", "emoji \U0001f600 and accents é"]
)
def test_storable_text_passes(text: str) -> None:
    conversation = Conversation.model_validate(record(turns=[{"role": "user", "text": text}]))

    assert conversation.turns[0].text == text


def test_data_that_is_not_plain_json_is_walked_not_waved_through() -> None:
    assert may_hold_unstorable_text({"a": object()})
    assert not may_hold_unstorable_text(record())
