"""The ASGI app of `posthoc serve`: webhooks, the tenant API, synchronous invocation, health.

Handlers read the body under a size limit, call the pure adapters and checks, and do ledger work
in a thread (the ledger is synchronous). Webhook deliveries share transactions: a single writer
commits every delivery that arrived meanwhile in one (`group_commit.py`, `recording.py`), and
each answer is sent only after its conversation and runs are committed; the broker is told
afterwards, and a run whose message is lost is re-enqueued by the sweeper, so a 202 never stands
for work that could vanish. Bad input is a 4xx naming the field; a 5xx means the ledger itself
failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from analyzers.errors import ConfigError
from schemas.conversation import Conversation
from worker.catalog import Catalog
from worker.http import store
from worker.http.adapters import (
    PLATFORMS,
    Ignored,
    Mapped,
    MappingError,
    SignatureError,
    parse_payload,
)
from worker.http.adapters.common import located_errors
from worker.http.group_commit import CommitHooks, GroupCommit
from worker.http.openapi import openapi_document
from worker.http.recording import Accept, Answer, Delivery, DeliveryWriter, LogEntry, LogOnly
from worker.http.slack_review import handle_interaction
from worker.http.sources import WebhookSource
from worker.ledger import Ledger, RunRecord
from worker.ledger.bulk import RunsToRecord
from worker.ledger.errors import LedgerError
from worker.observability import metrics, tracing
from worker.procedure_source import TenantProcedureCache
from worker.sinks.procedure_review import ProcedureReviewer

log = structlog.get_logger("posthoc.http")
MAX_BATCH = 1000
INLINE_MAP_BYTES = 64 * 1024
"""A webhook body up to this size is mapped on the event loop, a longer one in a thread."""
MAX_INVOKE_TIMEOUT = 300.0
FINISHED = ("succeeded", "failed", "skipped")


@dataclass
class Intake:
    """What the app works with; built once by `posthoc serve` (or a test).

    `enqueue` sends run ids to the broker; the app records each send in the ledger first (with
    the runs themselves, or `Ledger.mark_enqueued`), so it must not record them again.
    `max_batch`/`max_wait_seconds` shape the webhook group commit; `commit_hooks` are for tests.
    """

    ledger: Ledger
    catalog: Catalog
    enqueue: Callable[[Sequence[str]], None]
    sources: dict[str, WebhookSource] = field(default_factory=dict)
    max_body_bytes: int = 50 * 1024 * 1024
    max_attempts: int = 5
    clock: Callable[[], float] = time.time
    broker_ready: Callable[[], bool] = lambda: True
    poll_seconds: float = 0.05
    slack_signing_secret: str | None = None
    reviewer: ProcedureReviewer | None = None
    """Updates a procedure's review message after a click (None: no review channel set)."""
    metrics_dir: Path | None = None
    """`PROMETHEUS_MULTIPROC_DIR`, when several processes share one `/metrics`."""
    max_batch: int = 64
    max_wait_seconds: float = 0.002
    commit_hooks: CommitHooks | None = None
    procedure_cache_seconds: float = 5.0
    """How long a tenant's procedures, read from the store, are reused when planning runs."""


class BodyTooLarge(Exception):
    pass


class Problem(Exception):
    """An answer other than success: status, and a message naming the field and the problem."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message, **self.extra}, status_code=self.status)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it passes `limit` bytes (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        detail = str(exc)[:120] if isinstance(exc, json.JSONDecodeError) else "cannot be decoded"
        raise Problem(400, f"body: is not JSON ({detail})") from exc


class _Handlers:
    """The route handlers over one `Intake`."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake
        self.writer: GroupCommit[Delivery, Answer] = GroupCommit(
            intake.ledger,
            DeliveryWriter(intake.ledger),
            after_commit=self._send,
            max_batch=intake.max_batch,
            max_wait_seconds=intake.max_wait_seconds,
            hooks=intake.commit_hooks,
        )
        self.procedures = TenantProcedureCache(
            intake.ledger.procedures, intake.procedure_cache_seconds
        )

    def _send(self, answers: Sequence[Answer]) -> None:
        """After a batch commits: its new runs to the broker, in one call (with tracing on, one
        per request, each in its request's trace, so the worker's run spans continue it)."""
        if tracing.enabled():
            for answer in answers:
                if answer.to_send:
                    with tracing.span("posthoc.intake.publish", parent=answer.trace):
                        self.intake.enqueue(answer.to_send)
            return
        queued = [run_id for answer in answers for run_id in answer.to_send]
        if queued:
            self.intake.enqueue(queued)

    async def body_of(self, request: Request) -> bytes:
        try:
            return await read_body(request, self.intake.max_body_bytes)
        except BodyTooLarge:
            raise Problem(413, f"body: larger than {self.intake.max_body_bytes} bytes") from None

    async def webhook(self, request: Request) -> Response:
        name = request.path_params["source"]
        source = self.intake.sources.get(name)
        if source is None:
            return Problem(404, f"source: no webhook source named {name[:100]!r}").response()
        return await self._webhook(request, name, source)

    async def _webhook(self, request: Request, name: str, source: WebhookSource) -> Response:
        entry: dict[str, Any] = {"source": name, "tenant_id": source.tenant, "signature": "none"}
        try:
            body = await self.body_of(request)
            headers = dict(request.headers)
            try:
                PLATFORMS[source.platform].verify(
                    body, headers, source.secret_values(), self.intake.clock()
                )
            except SignatureError as exc:
                entry["signature"] = "invalid"
                raise Problem(401, f"signature: {exc}") from None
            entry["signature"] = "valid"
            # A usual delivery maps and plans in a fraction of a millisecond: here, on the loop
            # (a hand-off to a thread and back costs more). A long one, or one that must read
            # the tenant's procedures from the store (not cached, or cached longer ago than
            # `procedure_cache_seconds`), goes to a thread so the loop keeps serving.
            small = len(body) <= INLINE_MAP_BYTES
            mapped = (
                self._mapped(body, headers, source)
                if small
                else await run_in_threadpool(self._mapped, body, headers, source)
            )
            entry["event_type"] = mapped.event_type
            entry["event_id"] = mapped.event_id
            if isinstance(mapped, Ignored):
                answer = JSONResponse({"run_ids": [], "ignored": mapped.event_type})
                await self._log(
                    entry, 200, "ignored", f"event type {mapped.event_type[:100]!r}", []
                )
                return answer
            conversation = mapped.conversation
            if small and self.procedures.cached(conversation.tenant_id):
                plans = self._plan(conversation, None)
            else:
                plans = await run_in_threadpool(self._plan, conversation, None)
            with tracing.span("posthoc.intake", trigger="webhook") as span:
                accept = Accept(
                    self._log_entry(entry, 202, "accepted", None, []),
                    RunsToRecord(conversation, plans, "webhook"),
                    trace=tracing.headers(),
                )
                recorded = await self.writer.submit(accept)
                tracing.set_attributes(span, runs=len(recorded.run_ids))
            self._log_line(entry, recorded.status, recorded.outcome, len(recorded.run_ids))
            return JSONResponse({"run_ids": recorded.run_ids}, status_code=recorded.status)
        except Problem as problem:
            outcome = {401: "unauthorized", 400: "bad_json", 413: "too_large"}.get(
                problem.status, "unmappable"
            )
            await self._log(entry, problem.status, outcome, problem.message, [])
            return problem.response()

    def _mapped(
        self, body: bytes, headers: dict[str, str], source: WebhookSource
    ) -> Mapped | Ignored:
        """The verified body parsed and mapped: the conversation, or the event ignored."""
        payload = parse_json(body)
        try:
            return parse_payload(
                source.platform,
                payload,
                headers,
                tenant=source.tenant,
                events=frozenset(source.events) if source.events else None,
            )
        except MappingError as exc:
            raise Problem(422, str(exc), field=exc.field) from None

    def _plan(self, conversation: Conversation, analyzers: Sequence[str] | None) -> list[Any]:
        """The run plans, with snapshots resolving the procedure store's procedures (and the
        files'), as `worker.intake.record` plans them."""
        catalog = self.intake.catalog
        available = self.procedures.procedures_for(catalog, conversation)
        return catalog.plan(conversation, analyzers, self.intake.max_attempts, available)

    @staticmethod
    def _log_entry(
        entry: dict[str, Any], status: int, outcome: str, detail: str | None, run_ids: list[str]
    ) -> LogEntry:
        return LogEntry(
            received_at=datetime.now(UTC),
            source=entry["source"],
            tenant_id=entry.get("tenant_id"),
            event_type=entry.get("event_type"),
            event_id=entry.get("event_id"),
            signature=entry["signature"],
            status_code=status,
            outcome=outcome,
            detail=detail,
            run_ids=run_ids,
        )

    async def _log(
        self,
        entry: dict[str, Any],
        status: int,
        outcome: str,
        detail: str | None,
        run_ids: list[str],
    ) -> None:
        try:
            await self.writer.submit(
                LogOnly(self._log_entry(entry, status, outcome, detail, run_ids))
            )
        except Exception:  # the answer stands; the log line says the log failed
            log.exception("delivery_log_failed", source=entry["source"], status=status)
        self._log_line(entry, status, outcome, len(run_ids))

    @staticmethod
    def _log_line(entry: dict[str, Any], status: int, outcome: str, runs: int) -> None:
        metrics.WEBHOOK_REQUESTS.labels(entry["source"], outcome).inc()
        log.info(
            "webhook_delivery",
            source=entry["source"],
            event_type=entry.get("event_type"),
            signature=entry["signature"],
            status=status,
            outcome=outcome,
            runs=runs,
        )

    async def _record(
        self, conversations: Sequence[Conversation], trigger: Any, analyzers: Sequence[str] | None
    ) -> list[RunRecord]:
        def work() -> list[RunRecord]:
            entries = [
                RunsToRecord(
                    conversation,
                    self._plan(conversation, analyzers),
                    trigger,
                    idempotent=trigger != "invoke",
                )
                for conversation in conversations
            ]
            recorded = self.intake.ledger.record_many(entries, mark_sent=True)
            self._send_now([run_id for done in recorded for run_id in done.to_send])
            return [run for done in recorded for run in done.runs]

        # The runs' messages carry this span's trace context (with tracing on), so the worker's
        # run spans continue the request's trace (the thread runs in this context).
        with tracing.span("posthoc.intake", trigger=str(trigger)) as span:
            runs = await run_in_threadpool(work)
            queued = [run.id for run in runs if run.status == "queued" and run.created]
            tracing.set_attributes(span, runs=len(runs), queued=len(queued))
        return runs

    def _send_now(self, queued: list[str]) -> None:
        if queued:
            try:
                self.intake.enqueue(queued)
            except Exception:  # durable in the ledger; the sweeper re-enqueues
                log.warning("enqueue_failed_sweeper_will_retry", runs=len(queued))

    async def tenant_of(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Problem(401, "authorization: send `Authorization: Bearer <API key>`")
        tenant = await run_in_threadpool(store.tenant_of_key, self.intake.ledger, key.strip())
        if tenant is None:
            raise Problem(401, "authorization: the API key is unknown or revoked")
        return tenant

    def conversation_for(self, data: Any, tenant: str, where: str) -> Conversation:
        if not isinstance(data, dict):
            raise Problem(422, f"{where or 'body'}: must be a conversation object")
        given = data.get("tenant_id")
        if given is not None and given != tenant:
            raise Problem(422, f"{where}tenant_id: is not the tenant of this API key")
        try:
            return Conversation.model_validate({**data, "tenant_id": tenant})
        except ValidationError as exc:
            errors = [
                {"field": where + (location or "conversation"), "problem": problem}
                for location, problem in located_errors(exc)[:20]
            ]
            first = errors[0]
            raise Problem(422, f"{first['field']}: {first['problem']}", errors=errors) from None

    async def post_conversations(self, request: Request) -> Response:
        try:
            tenant = await self.tenant_of(request)
            payload = parse_json(await self.body_of(request))
            items = payload if isinstance(payload, list) else [payload]
            if not items or len(items) > MAX_BATCH:
                raise Problem(422, f"body: send 1 to {MAX_BATCH} conversations")
            prefix = isinstance(payload, list)
            conversations = [
                self.conversation_for(item, tenant, f"{index}." if prefix else "")
                for index, item in enumerate(items)
            ]
            runs = await self._record(conversations, "api", None)
            return JSONResponse({"run_ids": [run.id for run in runs]}, status_code=202)
        except Problem as problem:
            return problem.response()

    async def run_view(self, run: RunRecord) -> dict[str, Any]:
        conversation = await run_in_threadpool(
            self.intake.ledger.get_conversation, run.conversation_pk
        )
        results = await run_in_threadpool(self.intake.ledger.results, [run.id])
        return {
            "run_id": run.id,
            "conversation_id": conversation.conversation_id,
            "analyzer": run.analyzer,
            "analyzer_version": run.analyzer_version,
            "status": run.status,
            "trigger": run.trigger,
            "attempts": run.attempts,
            "skip_reason": run.skip_reason,
            "error": (
                {"type": run.error_type, "message": run.error_message} if run.error_type else None
            ),
            "result": results[0].model_dump(mode="json") if results else None,
        }

    async def owned_run(self, request: Request, tenant: str) -> RunRecord:
        run_id = request.path_params["run_id"]
        try:
            run = await run_in_threadpool(self.intake.ledger.get_run, run_id)
            conversation = await run_in_threadpool(
                self.intake.ledger.get_conversation, run.conversation_pk
            )
        except LedgerError:
            raise Problem(404, "run_id: no such run") from None
        if conversation.tenant_id != tenant:
            raise Problem(404, "run_id: no such run")
        return run

    async def get_run(self, request: Request) -> Response:
        try:
            tenant = await self.tenant_of(request)
            return JSONResponse(await self.run_view(await self.owned_run(request, tenant)))
        except Problem as problem:
            return problem.response()

    async def retry_run(self, request: Request) -> Response:
        try:
            tenant = await self.tenant_of(request)
            run = await self.owned_run(request, tenant)
            try:
                ids = await run_in_threadpool(self.intake.ledger.requeue_failed, [run.id])
            except LedgerError as exc:
                raise Problem(409, f"run_id: cannot be retried ({exc})") from None
            await run_in_threadpool(self.intake.ledger.mark_enqueued, ids)
            await run_in_threadpool(self.intake.enqueue, ids)
            return JSONResponse({"run_ids": ids}, status_code=202)
        except Problem as problem:
            return problem.response()

    async def get_conversation(self, request: Request) -> Response:
        try:
            tenant = await self.tenant_of(request)
            conversation_id = request.path_params["conversation_id"]
            found = await run_in_threadpool(
                store.find_conversation, self.intake.ledger, tenant, conversation_id
            )
            if found is None:
                raise Problem(404, "conversation_id: no such conversation")
            pk, conversation = found
            runs = await run_in_threadpool(
                lambda: self.intake.ledger.list_runs(conversation_pk=pk, limit=1000)
            )
            views = [await self.run_view(run) for run in runs]
            return JSONResponse(
                {"conversation": conversation.model_dump(mode="json"), "runs": views}
            )
        except Problem as problem:
            return problem.response()

    async def invoke(self, request: Request) -> Response:
        try:
            tenant = await self.tenant_of(request)
            name = request.path_params["name"]
            if name not in self.intake.catalog.analyzers:
                raise Problem(404, f"name: no analyzer named {name[:100]!r}")
            timeout = _timeout(request.query_params.get("timeout_seconds"))
            conversation = self.conversation_for(
                parse_json(await self.body_of(request)), tenant, ""
            )
            try:
                [run] = await self._record([conversation], "invoke", [name])
            except ConfigError as exc:
                raise Problem(404, f"name: {exc}") from None
            deadline = time.monotonic() + timeout
            while run.status not in FINISHED and time.monotonic() < deadline:
                await asyncio.sleep(self.intake.poll_seconds)
                run = await run_in_threadpool(self.intake.ledger.get_run, run.id)
            view = await self.run_view(run)
            return JSONResponse(view, status_code=200 if run.status in FINISHED else 504)
        except Problem as problem:
            return problem.response()

    async def healthz(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _: Request) -> Response:
        checks = {
            "database": await run_in_threadpool(_database_ready, self.intake.ledger),
            "broker": await run_in_threadpool(self.intake.broker_ready),
        }
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", **checks},
            status_code=200 if ready else 503,
        )

    async def slack_interactions(self, request: Request) -> Response:
        try:
            body = await self.body_of(request)
        except Problem as problem:
            return problem.response()
        status, answer = await handle_interaction(
            secret=self.intake.slack_signing_secret,
            store=self.intake.ledger.procedures,
            reviewer=self.intake.reviewer,
            body=body,
            headers=dict(request.headers),
            now=self.intake.clock,
        )
        self.procedures.clear()  # a review here applies to the next delivery at once
        return JSONResponse(answer, status_code=status)

    async def metrics(self, _: Request) -> Response:
        body, content_type = metrics.exposition(self.intake.metrics_dir)
        return Response(body, media_type=content_type)

    async def openapi(self, _: Request) -> Response:
        return JSONResponse(openapi_document())


def create_app(intake: Intake) -> Starlette:
    """The app over `intake`."""
    handlers = _Handlers(intake)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        # Deliveries still queued are written before the process goes.
        await run_in_threadpool(handlers.writer.close)

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/v1/webhooks/{source}", handlers.webhook, methods=["POST"]),
            Route("/v1/conversations", handlers.post_conversations, methods=["POST"]),
            Route(
                "/v1/conversations/{conversation_id:path}",
                handlers.get_conversation,
                methods=["GET"],
            ),
            Route("/v1/runs/{run_id}", handlers.get_run, methods=["GET"]),
            Route("/v1/runs/{run_id}/retry", handlers.retry_run, methods=["POST"]),
            Route("/v1/analyzers/{name}/invoke", handlers.invoke, methods=["POST"]),
            Route("/v1/slack/interactions", handlers.slack_interactions, methods=["POST"]),
            Route("/healthz", handlers.healthz, methods=["GET"]),
            Route("/readyz", handlers.readyz, methods=["GET"]),
            Route("/metrics", handlers.metrics, methods=["GET"]),
            Route("/openapi.json", handlers.openapi, methods=["GET"]),
        ],
    )


def _timeout(text: str | None) -> float:
    if text is None:
        return 30.0
    try:
        value = float(text)
    except ValueError:
        raise Problem(422, "timeout_seconds: must be a number of seconds") from None
    if not 0 < value <= MAX_INVOKE_TIMEOUT:
        raise Problem(422, f"timeout_seconds: must be above 0 and at most {MAX_INVOKE_TIMEOUT:.0f}")
    return value


def _database_ready(ledger: Ledger) -> bool:
    try:
        ledger.schema_revision()
    except Exception:  # any failure means not ready
        return False
    return True
