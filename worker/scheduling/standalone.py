"""Standalone runs: an `input: results` analyzer over the stored results of a tenant and time
range, recorded and executed like any other run.

A run in the ledger belongs to a conversation, so a standalone run is recorded against a
*selection record*: a conversation stored under the id `standalone:<schedule>:<slot>` (or
`standalone:<analyzer>:<until>` when not scheduled) whose metadata holds the selection (tenant,
since, until) and whose one system turn describes it to the model. The engine sees the
analyzer's `input: results`, reads the selection back and gives the run's ledger tools a reader
bounded to it. Everything else (snapshot, attempts, retries, results, deliveries) is what every
run gets. Recording is idempotent by the selection record's id: firing the same slot again
returns the run recorded the first time.
"""

from __future__ import annotations

from datetime import UTC

from analyzers.definitions.versions import parse_selector
from analyzers.errors import ConfigError
from analyzers.runtime.snapshot import build_snapshot
from schemas.conversation import Conversation, Turn
from worker.catalog import Catalog
from worker.engine.results_reader import SELECTION_KEY, STANDALONE_PREFIX, ResultsSelection
from worker.ledger import Ledger, RunPlan, RunRecord


def selection_record(analyzer: str, selection: ResultsSelection) -> Conversation:
    """The conversation a standalone run is recorded against (see the module docstring)."""
    anchor = selection.scheduled_for or selection.until
    owner = selection.schedule or analyzer
    stamp = anchor.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = (
        f"Standalone run of {analyzer}: you work over stored results, not one conversation. "
        f"Your tools see {selection.scope}."
        + (f" Scheduled by {selection.schedule}." if selection.schedule else "")
    )
    return Conversation(
        conversation_id=f"{STANDALONE_PREFIX}{owner}:{stamp}",
        tenant_id=selection.tenant,
        channel="other",
        started_at=selection.since,
        ended_at=selection.until,
        outcome="standalone",
        turns=[Turn(role="system", text=text, at=selection.until)],
        metadata={SELECTION_KEY: selection.to_metadata()},
    )


def record_standalone_run(
    ledger: Ledger,
    catalog: Catalog,
    analyzer: str,
    selection: ResultsSelection,
    *,
    max_attempts: int,
) -> RunRecord:
    """Record (or find, when recorded before) the standalone run of `analyzer` (NAME or
    NAME@VERSION) over `selection`; `created` says which. A `ConfigError` names an analyzer
    that is not loaded or not standalone."""
    spec = catalog.get(*parse_selector(analyzer))
    if spec is None:
        raise ConfigError(
            f"standalone.analyzer: {analyzer!r} is not loaded (known: {sorted(catalog.versions)})"
        )
    if spec.input != "results":
        raise ConfigError(
            f"standalone.analyzer: {analyzer!r} reads one conversation; a standalone run needs "
            "an analyzer with input: results"
        )
    record = selection_record(spec.name, selection)
    ref = ledger.save_conversation(record)
    plan = RunPlan(
        analyzer=spec.name,
        analyzer_version=spec.version,
        max_attempts=max_attempts,
        snapshot=build_snapshot(spec, record, catalog.procedures),
    )
    (run,) = ledger.record_runs(
        ref.pk,
        [plan],
        trigger="schedule" if selection.schedule else "api",
        idempotency_prefix=record.conversation_id,
        conversation_version_id=ref.version_id,
    )
    return run
