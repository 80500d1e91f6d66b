"""Trigger patterns (`analyzers/definitions/patterns.py`): `*` for any run of words, `|` for
alternatives, matching anywhere in the text regardless of case and punctuation."""

from __future__ import annotations

import pytest

from analyzers.definitions.patterns import PatternError, compile_pattern, matches

VENDOR = "onboard * vendor|add new vendor|register vendor"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("I'd like to onboard a new vendor please", True, id="star-two-words"),
        pytest.param("Can you onboard vendor TechCorp?", True, id="star-no-words"),
        pytest.param("onboard the new, shiny vendor.", True, id="star-over-punctuation"),
        pytest.param("Please ADD NEW VENDOR now", True, id="upper-case"),
        pytest.param("add-new vendor", True, id="hyphen-between-words"),
        pytest.param("Add, new... vendor!", True, id="punctuation-between-words"),
        pytest.param("Register vendor: TechCorp", True, id="third-alternative"),
        pytest.param("we need to onboard\nthe vendor", True, id="newline"),
        pytest.param("register a vendor", False, id="alternative-without-star-is-exact"),
        pytest.param("the vendor onboarding", False, id="wrong-order"),
        pytest.param("onboarding vendors", False, id="partial-words"),
        pytest.param("onboardvendor", False, id="no-separator"),
        pytest.param("add new vendors", False, id="plural-is-another-word"),
        pytest.param("", False, id="empty-text"),
        pytest.param("I want to onboard someone", False, id="missing-last-word"),
    ],
)
def test_vendor_pattern(text: str, expected: bool) -> None:
    """The seed's vendor pattern matches the sentences a person would expect it to."""
    assert matches(VENDOR, text) is expected


@pytest.mark.parametrize(
    "pattern",
    ["* refund *", "* refund", "refund *", "*  refund  *|* money back"],
)
def test_leading_and_trailing_stars_change_nothing(pattern: str) -> None:
    """A `*` at either end of an alternative adds nothing to a search anywhere in the text."""
    assert matches(pattern, "refund")
    assert matches(pattern, "I want a refund.")
    assert matches(pattern, "Refund, please")
    assert not matches(pattern, "refunds")


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        pytest.param("e-mail", "send an e mail", True, id="punctuation-in-pattern"),
        pytest.param("e-mail", "E.MAIL me", True, id="punctuation-and-case"),
        pytest.param("e-mail", "email me", False, id="punctuation-means-separate-words"),
        pytest.param("speak to * manager", "speak to your manager", True, id="one-word-star"),
        pytest.param("speak to * manager", "speak to manager", True, id="zero-word-star"),
        pytest.param("cancel * * account", "cancel my account", True, id="two-stars"),
        pytest.param("Refund", "refund", True, id="pattern-case"),
        pytest.param("café", "Un CAFÉ!", True, id="non-ascii"),
    ],
)
def test_pattern_details(pattern: str, text: str, expected: bool) -> None:
    """Punctuation in patterns separates words, stars match zero or more words, case is
    ignored also outside ASCII."""
    assert matches(pattern, text) is expected


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        pytest.param("a||b", "empty alternative", id="double-bar"),
        pytest.param("|a", "empty alternative", id="leading-bar"),
        pytest.param("a|", "empty alternative", id="trailing-bar"),
        pytest.param("a| |b", "empty alternative", id="blank-alternative"),
        pytest.param("*", "without a word", id="star-only"),
        pytest.param("refund|* *", "without a word", id="stars-only-alternative"),
        pytest.param("!!!", "without a word", id="punctuation-only"),
    ],
)
def test_unsound_patterns_are_rejected(pattern: str, fragment: str) -> None:
    """A pattern with an empty or wordless alternative raises PatternError naming it."""
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    assert fragment in str(info.value)
    assert repr(pattern) in str(info.value)
