"""Trigger patterns such as `onboard * vendor|add new vendor`.

`|` separates alternatives. An alternative matches when all of its words occur close together
in the text, in any order and in any common inflection: `onboard * vendor` matches "onboarding a
new vendor" and "the vendor we onboarded"; `set up * vendor` matches "get a new vendor set up".
Case and punctuation are ignored.

"Close together" is a window of consecutive words: as many as the alternative has, plus one (so
"register vendor" still matches "register a vendor"), plus `WORDS_PER_STAR` for each `*`.

Why not a regular expression: a pattern is authored text and the conversation is hostile text;
matching is a linear scan over the words with a window of bounded size, so its time grows with
the text's length times the window, never exponentially (see `tests/definitions`' fuzz).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

WORDS_PER_STAR = 4
"""How many extra words one `*` lets into the window."""

SLACK_WITHOUT_STAR = 1
"""Extra words any alternative tolerates (an article, a possessive)."""

_WORD = re.compile(r"\w+")


class PatternError(ValueError):
    """A trigger pattern that cannot match anything sensible."""


@dataclass(frozen=True)
class Alternative:
    """One `|`-separated part of a pattern: its stemmed words and the window they must fit."""

    text: str
    words: tuple[str, ...]
    window: int


@dataclass(frozen=True)
class CompiledPattern:
    """A pattern split into alternatives, ready to match."""

    source: str
    alternatives: tuple[Alternative, ...]

    def search(self, text: str) -> Alternative | None:
        """The first alternative that matches somewhere in `text`, or None."""
        stems = [stem(word) for word in _WORD.findall(text)]
        for alternative in self.alternatives:
            if _fits_a_window(alternative, stems):
                return alternative
        return None


def stem(word: str) -> str:
    """A light, deterministic stem: enough to make `onboarding`, `onboarded` and `onboards`
    one word, not a linguistic analysis (a pattern author can always list alternatives)."""
    w = word.casefold()
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) >= 6 and w.endswith("ing"):
        w = w[:-3]
    elif (len(w) >= 5 and w.endswith("ed")) or (len(w) >= 5 and w.endswith("es")):
        w = w[:-2]
    elif len(w) >= 4 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]  # shipping -> shipp -> ship
    return w


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> CompiledPattern:
    """The alternatives of a trigger pattern; `PatternError` names an unsound one."""
    alternatives = [alternative.strip() for alternative in pattern.split("|")]
    if any(not alternative for alternative in alternatives):
        raise PatternError(
            f"pattern {pattern!r} has an empty alternative (look for '||' or a '|' at an end)"
        )
    compiled = []
    for alternative in alternatives:
        words = tuple(stem(word) for word in _WORD.findall(alternative))
        if not words:
            raise PatternError(f"pattern {pattern!r} has an alternative without a word in it")
        stars = alternative.split().count("*")
        window = len(words) + SLACK_WITHOUT_STAR + WORDS_PER_STAR * stars
        compiled.append(Alternative(alternative, words, window))
    return CompiledPattern(pattern, tuple(compiled))


def _fits_a_window(alternative: Alternative, stems: list[str]) -> bool:
    """Whether some run of `alternative.window` consecutive stems holds all its words.

    One pass with a sliding window: counts enter at the right and leave at the left, and
    `short` tracks how many distinct words are still missing, so each step costs O(1)."""
    needed = Counter(alternative.words)
    have: Counter[str] = Counter()
    short = len(needed)
    window = alternative.window
    for end, word in enumerate(stems):
        if word in needed:
            have[word] += 1
            if have[word] == needed[word]:
                short -= 1
        leaving = end - window
        if leaving >= 0 and stems[leaving] in needed:
            gone = stems[leaving]
            if have[gone] == needed[gone]:
                short += 1
            have[gone] -= 1
        if short == 0:
            return True
    return False


def matches(pattern: str, text: str) -> bool:
    """Whether `text` contains something `pattern` describes."""
    return compile_pattern(pattern).search(text) is not None
