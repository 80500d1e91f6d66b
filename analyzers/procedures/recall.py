"""Which stored procedure an agent has for a task: visibility, recall by name, and FindMatch.

Pure: no I/O, no model. Every procedure store (the ledger's, the in-memory one of tests) selects
its candidates and then decides with these functions, so they all answer alike, and an analyzer
handed store-resolved procedures can decide the same way without a database.

- **Visible** to (tenant T, agent A): a procedure of tenant T (or of every tenant) that is
  tenant-wide, owned by A, or shared by its owner with every agent of the tenant. Another
  tenant's procedure is never visible.
- **Active**: visible and approved; per name, the newest approved version is the one used (a
  pending newer version leaves the approved one in force until a person decides).
- **FindMatch** for a task description ("Onboard the new vendor TechCorp"), among the active
  procedures: first the trigger `patterns` (as `analyzers.definitions.patterns` matches a
  customer's words), then the words of the trigger description and description. The answer says
  which pattern alternative or which description words decided.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from analyzers.definitions.patterns import PatternError, compile_pattern, stem
from schemas.procedure import Procedure

TASK_TEXT_LIMIT = 4_000
"""Characters of a task description that are read at all (a task is a sentence, not a file)."""

DESCRIPTION_MIN_SHARED = 2
"""Content words a task must share with a procedure's description for a description match..."""

DESCRIPTION_MIN_SHARE = 0.5
"""...and the share of the task's content words they must be."""

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "else",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "into",
        "onto",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "they",
        "them",
        "their",
        "his",
        "her",
        "please",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "not",
        "no",
        "yes",
        "so",
        "such",
        "than",
        "too",
        "very",
        "just",
        "also",
        "about",
        "any",
        "some",
        "all",
        "each",
        "every",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "how",
        "why",
        "new",
    ]
)
"""Words that say nothing about a task. `new` is here because every request is for something
new; a description must share words that name the task."""

_WORD = re.compile(r"\w+")

MatchedBy = Literal["pattern", "description"]


@dataclass(frozen=True)
class TaskMatch:
    """The procedure found for a task, which path found it and why, in words a person reads."""

    procedure: Procedure
    path: MatchedBy
    reason: str
    pattern: str | None = None
    """The pattern alternative that matched (path `pattern`)."""
    shared_words: tuple[str, ...] = ()
    """The task words the description also has (path `description`)."""


def is_visible(procedure: Procedure, tenant_id: str, agent_id: str | None) -> bool:
    """Whether an agent of `tenant_id` (`agent_id`, None when unknown) may see `procedure`,
    approved or not."""
    if procedure.tenant_id is not None and procedure.tenant_id != tenant_id:
        return False
    return procedure.agent_id is None or procedure.agent_id == agent_id or procedure.shared


def active_procedures(
    procedures: Iterable[Procedure], tenant_id: str, agent_id: str | None
) -> list[Procedure]:
    """Per name, the newest approved version visible to the agent, most specific owner first
    (the agent's own, then shared ones, then tenant-wide, then every tenant's), then by name."""
    newest: dict[tuple[str, int], Procedure] = {}
    for procedure in procedures:
        if not procedure.approved or not is_visible(procedure, tenant_id, agent_id):
            continue
        key = (procedure.name, _specificity(procedure, tenant_id, agent_id))
        held = newest.get(key)
        if held is None or procedure.version > held.version:
            newest[key] = procedure
    # One name at several scopes: the most specific owner wins (an agent's own version of a
    # tenant-wide procedure overrides it for that agent).
    by_name: dict[str, tuple[int, Procedure]] = {}
    for (name, rank), procedure in newest.items():
        if name not in by_name or rank < by_name[name][0]:
            by_name[name] = (rank, procedure)
    return [
        procedure for _rank, procedure in sorted(by_name.values(), key=lambda i: (i[0], i[1].name))
    ]


def recall(
    procedures: Iterable[Procedure], name: str, tenant_id: str, agent_id: str | None
) -> Procedure | None:
    """The active procedure called `name` for this agent, or None."""
    return next(
        (p for p in active_procedures(procedures, tenant_id, agent_id) if p.name == name), None
    )


def find_match(
    procedures: Iterable[Procedure], task: str, tenant_id: str, agent_id: str | None
) -> TaskMatch | None:
    """The active procedure whose trigger describes `task`, or None (see the module docstring)."""
    active = active_procedures(procedures, tenant_id, agent_id)
    text = task[:TASK_TEXT_LIMIT]
    for procedure in active:
        for source in procedure.trigger.patterns:
            try:
                alternative = compile_pattern(source).search(text)
            except PatternError:
                continue  # reported when the procedure is imported; an unsound one matches nothing
            if alternative is not None:
                return TaskMatch(
                    procedure,
                    "pattern",
                    f"trigger pattern {alternative.text!r} (of {source!r}) matches the task",
                    pattern=alternative.text,
                )
    return _description_match(active, text)


def _description_match(active: Sequence[Procedure], task: str) -> TaskMatch | None:
    task_words = content_words(task)
    if not task_words:
        return None
    best: tuple[float, int, TaskMatch] | None = None
    for order, procedure in enumerate(active):
        described = content_words(
            " ".join(
                [procedure.trigger.description, procedure.description, procedure.name]
            ).replace("_", " ")
        )
        shared = tuple(word for word in task_words if word in described)
        share = len(shared) / len(task_words)
        enough = len(shared) >= min(DESCRIPTION_MIN_SHARED, len(task_words))
        if not enough or share < DESCRIPTION_MIN_SHARE:
            continue
        found = TaskMatch(
            procedure,
            "description",
            f"the trigger description shares {len(shared)} of the task's "
            f"{len(task_words)} words: {', '.join(shared)}",
            shared_words=shared,
        )
        # Higher share first; on a tie, the earlier (more specific) procedure.
        if best is None or (share, -order) > (best[0], best[1]):
            best = (share, -order, found)
    return None if best is None else best[2]


def content_words(text: str) -> tuple[str, ...]:
    """The stems of the words of `text` that say what a task is, in order, each once."""
    stems = (stem(word) for word in _WORD.findall(text.casefold()) if word not in STOPWORDS)
    return tuple(dict.fromkeys(word for word in stems if len(word) > 1))


def _specificity(procedure: Procedure, tenant_id: str, agent_id: str | None) -> int:
    if procedure.agent_id is not None and procedure.agent_id == agent_id:
        return 0
    if procedure.agent_id is not None:
        return 1  # another agent's, shared with the tenant
    return 2 if procedure.tenant_id == tenant_id else 3
