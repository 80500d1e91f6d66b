"""Trigger patterns (`analyzers/definitions/patterns.py`): `|` for alternatives, the words of an
alternative close together in any order and inflection, `*` widening how far apart they may be;
case and punctuation ignored.

Changed on purpose with issue 7: word order and inflection no longer matter (the seed's
"onboard * vendor" must match "onboarding a new vendor"), and one extra word is tolerated without
a `*` ("register vendor" matches "register a vendor").
"""

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
        pytest.param("register a vendor", True, id="one-extra-word-without-star"),
        pytest.param("register a brand new vendor", False, id="without-star-words-stay-close"),
        pytest.param("the vendor onboarding", True, id="any-order"),
        pytest.param("onboarding a new vendor", True, id="inflection-and-star"),
        pytest.param("we onboarded two vendors", True, id="past-and-plural"),
        pytest.param("onboarding vendors", True, id="inflected-words"),
        pytest.param("onboard, then later much later on a vendor", False, id="star-is-bounded"),
        pytest.param("onboardvendor", False, id="no-separator"),
        pytest.param("add new vendors", True, id="plural-is-the-same-word"),
        pytest.param("add new vend", False, id="truncated-word-is-another-word"),
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
    """A `*` at either end of an alternative only widens the window: a lone word still matches
    itself in any inflection and nothing else."""
    assert matches(pattern, "refund")
    assert matches(pattern, "I want a refund.")
    assert matches(pattern, "Refund, please")
    assert matches(pattern, "refunds")
    assert not matches(pattern, "refusal")


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
