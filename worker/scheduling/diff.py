"""`posthoc diff`: how two versions of an analyzer agree, field by field, on the same
conversations; how a user decides whether v2 is better before switching it on.

Pairs are the latest succeeded run of each version on each conversation (with a job: the job's
runs of the newer version). Each output is compared as a whole (`follow_up`) and, when its values
are objects, field by field (`follow_up.priority`): for an output recorded several times a field
is the sorted list of that field over its values. `unknown` compares as its own answer.
The comparison (`compare`) is pure; `diff_versions` reads the pairs from the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas.result import AnalysisResult, RecordedOutput
from worker.ledger.tables import analysis_runs, conversations, rerun_job_items

runs = analysis_runs
UNKNOWN = "<unknown>"
MAX_CHANGED_SHOWN = 1_000


@dataclass(frozen=True)
class FieldAgreement:
    """How often the two versions gave the same answer for one output field."""

    field: str
    compared: int
    agree: int

    @property
    def rate(self) -> float:
        return self.agree / self.compared if self.compared else 1.0


@dataclass(frozen=True)
class Change:
    """One field that differs on one conversation."""

    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class ChangedConversation:
    conversation_id: str
    from_run: str
    to_run: str
    changes: list[Change]


@dataclass
class DiffReport:
    analyzer: str
    from_version: str
    to_version: str
    job_id: str | None
    compared: int = 0
    only_from: int = 0
    only_to: int = 0
    fields: list[FieldAgreement] = field(default_factory=list)
    changed: list[ChangedConversation] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "analyzer": self.analyzer,
            "from": self.from_version,
            "to": self.to_version,
            "job_id": self.job_id,
            "compared": self.compared,
            "only_from": self.only_from,
            "only_to": self.only_to,
            "fields": [
                {
                    "field": f.field,
                    "compared": f.compared,
                    "agree": f.agree,
                    "agreement": round(f.rate, 4),
                }
                for f in self.fields
            ],
            "changed": [
                {
                    "conversation_id": c.conversation_id,
                    "from_run": c.from_run,
                    "to_run": c.to_run,
                    "changes": [
                        {"field": ch.field, "from": ch.before, "to": ch.after} for ch in c.changes
                    ],
                }
                for c in self.changed[:MAX_CHANGED_SHOWN]
            ],
        }


def _answer(output: RecordedOutput) -> Any:
    return UNKNOWN if output.unknown else output.value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def field_values(outputs: dict[str, list[RecordedOutput]]) -> dict[str, Any]:
    """{field path: comparable value} for every output and every field of object outputs."""
    found: dict[str, Any] = {}
    for name, recorded in sorted(outputs.items()):
        answers = [_answer(output) for output in recorded]
        found[name] = sorted(answers, key=_canonical)
        keys = sorted({key for answer in answers if isinstance(answer, dict) for key in answer})
        for key in keys:
            parts = [a.get(key) if isinstance(a, dict) else None for a in answers]
            found[f"{name}.{key}"] = parts[0] if len(parts) == 1 else sorted(parts, key=_canonical)
    return found


def compare(
    report: DiffReport, pairs: Sequence[tuple[AnalysisResult, AnalysisResult]]
) -> DiffReport:
    """Fill `report` from (older result, newer result) pairs of the same conversations."""
    agree: dict[str, int] = {}
    seen: dict[str, int] = {}
    for before, after in pairs:
        old, new = field_values(before.outputs), field_values(after.outputs)
        changes = []
        for path in sorted(set(old) | set(new)):
            seen[path] = seen.get(path, 0) + 1
            if _canonical(old.get(path)) == _canonical(new.get(path)):
                agree[path] = agree.get(path, 0) + 1
            elif "." in path or not any(p.startswith(f"{path}.") for p in (*old, *new)):
                changes.append(Change(path, old.get(path), new.get(path)))
        if changes:
            report.changed.append(
                ChangedConversation(before.conversation_id, before.run_id, after.run_id, changes)
            )
    report.compared += len(pairs)
    report.fields = [FieldAgreement(path, seen[path], agree.get(path, 0)) for path in sorted(seen)]
    return report


def diff_versions(
    connection: Connection,
    analyzer: str,
    from_version: str,
    to_version: str,
    *,
    job_id: str | None = None,
) -> DiffReport:
    """Compare the latest succeeded runs of the two versions on every conversation both ran on
    (with `job_id`: the newer version's runs are that job's)."""
    older = _latest_results(connection, analyzer, from_version, None)
    newer = _latest_results(connection, analyzer, to_version, job_id)
    report = DiffReport(analyzer, from_version, to_version, job_id)
    report.only_from = len(set(older) - set(newer))
    report.only_to = len(set(newer) - set(older))
    common = sorted(set(older) & set(newer))
    pairs = [(older[pk], newer[pk]) for pk in common]
    return compare(report, pairs)


def _latest_results(
    connection: Connection, analyzer: str, version: str, job_id: str | None
) -> dict[int, AnalysisResult]:
    query = (
        sa.select(runs.c.conversation_pk, runs.c.result)
        .join(conversations, conversations.c.id == runs.c.conversation_pk)
        .where(
            runs.c.analyzer == analyzer,
            runs.c.analyzer_version == version,
            runs.c.status == "succeeded",
        )
        .order_by(runs.c.created_at, runs.c.id)
    )
    if job_id is not None:
        query = query.join(rerun_job_items, rerun_job_items.c.run_id == runs.c.id).where(
            rerun_job_items.c.job_id == job_id
        )
    latest: dict[int, AnalysisResult] = {}
    for row in connection.execute(query):
        if row.result is not None:
            latest[row.conversation_pk] = AnalysisResult.model_validate(row.result)
    return latest
