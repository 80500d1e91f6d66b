"""Procedures learned from runs: a `procedure_capture` result into the procedure store, and its
Slack review requested.

The engine calls `learn_from_result` for every succeeded result BEFORE it completes the run. A
worker killed after the store write but before the completion retries the run, and learning
again changes nothing: storing the same content returns the stored version and support is a
set (see `analyzers.procedures.store`), so a conversation supports its candidate once however
many times its run is retried.

The review message (`worker.sinks.procedure_review`) is posted exactly once per pending
version by the reviewer itself; after each capture the tenant's pending versions without a
message are asked for, so one lost to a Slack outage is posted with the next capture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import structlog
from pydantic import ValidationError

from analyzers.procedures.candidates import CaptureOutcome, record_candidate
from analyzers.procedures.store import ProceduralMemoryStore
from analyzers.runtime.capture_support import CANDIDATE_MODEL, customer_text
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from schemas.result import AnalysisResult
from worker.ledger import Ledger
from worker.settings import Settings
from worker.sinks.procedure_review import reviewer_from_settings

log = structlog.get_logger("posthoc.learning")


def may_propose(spec: AnalyzerSpec, result: AnalysisResult) -> bool:
    """Whether `result` can hold candidates at all (a succeeded run of an analyzer with a
    `procedure_candidate` output that recorded something): a cheap check, so the runs of
    every other analyzer skip `learn_from_result` and its thread."""
    return result.status == "succeeded" and any(
        output.model == CANDIDATE_MODEL and result.outputs.get(output.name)
        for output in spec.outputs
    )


def candidates_in(spec: AnalyzerSpec, result: AnalysisResult) -> Iterable[Procedure]:
    """The learned procedures a succeeded result proposes (its `procedure_candidate` outputs)."""
    if result.status != "succeeded":
        return []
    names = [output.name for output in spec.outputs if output.model == CANDIDATE_MODEL]
    found = []
    for name in names:
        for recorded in result.outputs.get(name, []):
            value: Any = recorded.value
            if recorded.unknown or not isinstance(value, dict) or "procedure" not in value:
                continue
            try:
                found.append(Procedure.model_validate(value["procedure"]))
            except ValidationError as exc:
                # Built by the runtime, so this is a bug; the run itself still stands.
                log.error("procedure_capture.unsound", problems=exc.error_count())
    return found


def learn_from_result(
    store: ProceduralMemoryStore,
    spec: AnalyzerSpec,
    result: AnalysisResult,
    conversation: Conversation,
) -> list[CaptureOutcome]:
    """Record every candidate of `result` in `store` (a new pending procedure, support for the
    one it duplicates, or a new version of it). Idempotent per conversation."""
    outcomes = []
    said = customer_text(conversation)
    for candidate in candidates_in(spec, result):
        outcome = record_candidate(
            store, candidate, conversation_id=conversation.conversation_id, customer_text=said
        )
        log.info(
            "procedure_capture.recorded",
            action=outcome.action,
            procedure=outcome.stored.name,
            version=outcome.stored.version,
            support=len(outcome.stored.support),
        )
        outcomes.append(outcome)
    return outcomes


def review_requester(settings: Settings, ledger: Ledger) -> Callable[[str], object] | None:
    """Posts the Slack reviews of a tenant's pending procedures that have none yet; None when
    no bot token or review channel is configured (then people review with the CLI)."""
    reviewer = reviewer_from_settings(settings, ledger.procedures)
    if reviewer is None:
        return None

    def request(tenant_id: str) -> object:
        outcomes = reviewer.request_pending(tenant_id)
        for outcome in outcomes:
            if outcome.status in ("retry_later", "undeliverable"):
                # Posted with the next capture of the tenant, or `posthoc procedures` meanwhile.
                log.warning(
                    "procedure_review.not_posted", status=outcome.status, reason=outcome.reason
                )
        return outcomes

    return request
