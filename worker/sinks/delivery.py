"""One delivery attempt: claim the row, send through its sink, record what happened.

The result comes from the ledger (the stored `AnalysisResult`), never from running the model
again; the route comes from the delivery row (written when the run completed), never from
today's analyzer files. Outcomes: `delivered`; `pending` again with a `next_attempt_at`
(backoff with jitter, never sooner than the destination's `Retry-After`); `dead` with a reason;
and for a webhook that answered 410, its destination is disabled too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
import structlog
from slack_sdk import WebClient

from schemas import AnalysisResult, Conversation
from schemas.analyzer import JsonlSink, SinkRoute, SlackSink, WebhookSink
from worker.catalog import Catalog
from worker.ledger import deliveries as ledger
from worker.ledger.conversations import get_conversation
from worker.ledger.deliveries import DeliveryLedger, DeliveryRecord
from worker.ledger.tables import analysis_runs
from worker.observability import metrics
from worker.settings import Settings
from worker.sinks.errors import DestinationGone, RetryLater, Undeliverable
from worker.sinks.jsonl import append_line
from worker.sinks.render import conversation_url, render_result
from worker.sinks.slack import (
    SlackReceipt,
    deliver_to_incoming_webhook,
    deliver_to_slack,
    web_client,
)
from worker.sinks.webhooks import (
    apply_mapping,
    encode_body,
    post_webhook,
    signed_headers,
    split_secrets,
)

log = structlog.get_logger("posthoc.delivery")

_SECRET_REF = re.compile(r"^\{\{\s*secrets\.([A-Za-z_]\w*)\s*\}\}$")

DeliveryStatus = Literal["delivered", "pending", "dead", "not_due"]


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one call of `Deliverer.deliver` did; `retry_in` seconds for `pending`."""

    delivery_id: str
    status: DeliveryStatus
    retry_in: float | None = None
    reason: str | None = None


class Deliverer:
    """Delivers by id. Thread-safe: every attempt uses its own transactions and clients.

    :param secrets: secret values by name (`{{secrets.NAME}}` in a webhook sink).
    :param slack_client: builds the Slack client (tests may count or wrap it).
    """

    def __init__(
        self,
        store: DeliveryLedger,
        settings: Settings,
        *,
        worker_id: str,
        secrets: Mapping[str, str] | None = None,
        slack_client: Callable[[], WebClient] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.worker_id = worker_id
        self.secrets = dict(secrets or {})
        self._slack_client = slack_client or self._default_slack_client

    def deliver(self, delivery_id: str) -> DeliveryOutcome:
        """One attempt, if the delivery is due; `not_due` when it is not (or is taken)."""
        with self.store.write() as connection:
            record = ledger.claim(
                connection,
                self.store.now(),
                delivery_id,
                self.worker_id,
                self.settings.delivery_lease_seconds,
            )
        if record is None:
            return DeliveryOutcome(delivery_id, "not_due")
        outcome = self._attempt(record)
        metrics.DELIVERIES.labels(record.sink, outcome.status).inc()
        return outcome

    def _attempt(self, record: DeliveryRecord) -> DeliveryOutcome:
        delivery_id = record.id
        bound = log.bind(delivery_id=delivery_id, run_id=record.run_id, sink=record.sink)
        try:
            receipt = self._send(record)
        except DestinationGone as gone:
            with self.store.write() as connection:
                now = self.store.now()
                ledger.disable_destination(
                    connection, now, record.sink, record.destination, str(gone)
                )
                ledger.dead(
                    connection,
                    now,
                    delivery_id,
                    self.worker_id,
                    reason=gone.reason,
                    error=str(gone),
                )
            bound.warning("delivery.destination_disabled")
            return DeliveryOutcome(delivery_id, "dead", reason=gone.reason)
        except Undeliverable as refused:
            with self.store.write() as connection:
                ledger.dead(
                    connection,
                    self.store.now(),
                    delivery_id,
                    self.worker_id,
                    reason=refused.reason,
                    error=str(refused),
                )
            bound.warning("delivery.dead", reason=refused.reason)
            return DeliveryOutcome(delivery_id, "dead", reason=refused.reason)
        except RetryLater as transient:
            return self._retry(record, transient.reason, str(transient), transient.retry_after)
        except Exception as bug:  # a bug must not loop forever or vanish: retry, then dead
            bound.exception("delivery.error")
            return self._retry(record, "internal_error", type(bug).__name__, None)
        with self.store.write() as connection:
            ledger.mark_delivered(
                connection, self.store.now(), delivery_id, self.worker_id, receipt
            )
        bound.info("delivery.delivered", attempts=record.attempts)
        return DeliveryOutcome(delivery_id, "delivered")

    def _retry(
        self, record: DeliveryRecord, reason: str, error: str, retry_after: float | None
    ) -> DeliveryOutcome:
        delay = ledger.backoff_seconds(
            record.attempts,
            retry_after,
            base=self.settings.delivery_retry_base_seconds,
            cap=self.settings.delivery_retry_max_seconds,
        )
        with self.store.write() as connection:
            status = ledger.retry_or_dead(
                connection,
                self.store.now(),
                record.id,
                self.worker_id,
                error=error,
                reason=reason,
                delay_seconds=delay,
            )
        log.info("delivery.retry", delivery_id=record.id, reason=reason, status=status)
        if status == "pending":
            return DeliveryOutcome(record.id, "pending", retry_in=delay, reason=reason)
        return DeliveryOutcome(record.id, "dead" if status == "dead" else "not_due", reason=reason)

    # -- the sinks -------------------------------------------------------------------------------

    def _send(self, record: DeliveryRecord) -> dict[str, Any] | None:
        result, conversation = self._load(record.run_id)
        route = record.route
        if record.sink == "slack":
            return self._slack(record, SlackSink.model_validate(route), result, conversation)
        if record.sink == "webhook":
            self._webhook(record, WebhookSink.model_validate(route), result)
            return None
        if record.sink == "jsonl":
            sink = JsonlSink.model_validate(route)
            append_line(
                Path(sink.path),
                {"delivery_id": record.id, "result": result.model_dump(mode="json")},
            )
            return None
        raise Undeliverable(f"unknown sink {record.sink!r}", reason="unknown_sink")

    def _load(self, run_id: str) -> tuple[AnalysisResult, Conversation | None]:
        with self.store.read() as connection:
            result = ledger.stored_or_failed_result(connection, run_id)
            if result is None:
                raise Undeliverable(f"run {run_id} has no result to deliver", reason="no_result")
            pk = connection.execute(
                sa.select(analysis_runs.c.conversation_pk).where(analysis_runs.c.id == run_id)
            ).scalar_one()
            conversation = get_conversation(connection, pk)
        return result, conversation

    def _slack(
        self,
        record: DeliveryRecord,
        sink: SlackSink,
        result: AnalysisResult,
        conversation: Conversation | None,
    ) -> dict[str, Any]:
        url = None
        if self.settings.conversation_url_template:
            url = conversation_url(
                self.settings.conversation_url_template,
                conversation_id=result.conversation_id,
                tenant_id=result.tenant_id or "",
                run_id=result.run_id,
            )
        rendered = render_result(result, conversation=conversation, url=url, mentions=sink.mention)
        if sink.channel.startswith("https://"):  # an incoming-webhook URL: the second mode
            deliver_to_incoming_webhook(sink.channel, rendered)
            return {"mode": "incoming_webhook"}

        def save(receipt: SlackReceipt) -> None:
            with self.store.write() as connection:
                ledger.save_receipt(
                    connection, self.store.now(), record.id, self.worker_id, receipt.to_json()
                )

        receipt = deliver_to_slack(
            self._slack_client(),
            delivery_id=record.id,
            channel=sink.channel,
            rendered=rendered,
            receipt=SlackReceipt.from_json(record.receipt),
            # Any earlier attempt may have posted without recording it (killed, answer lost).
            may_have_posted=record.attempts > 1,
            save=save,
        )
        return receipt.to_json()

    def _webhook(self, record: DeliveryRecord, sink: WebhookSink, result: AnalysisResult) -> None:
        now = self.store.now()
        payload: dict[str, Any] = {
            "type": f"analysis.{result.status}",
            "timestamp": now.isoformat(),
            "data": result.model_dump(mode="json"),
        }
        body = encode_body(apply_mapping(sink.mapping, payload) if sink.mapping else payload)
        secrets = self._secrets_for(sink)
        headers = signed_headers(secrets, record.id, now, body)
        post_webhook(sink.url, body, headers, timeout=sink.timeout_seconds)

    def _secrets_for(self, sink: WebhookSink) -> list[str]:
        if sink.secret is None:
            return []
        match = _SECRET_REF.match(sink.secret)
        if match is None:
            raise Undeliverable(
                "a webhook secret must be written {{secrets.NAME}}", reason="secret"
            )
        value = self.secrets.get(match.group(1))
        if not value:
            raise Undeliverable(
                f"secret {match.group(1)!r} is not set (POSTHOC_SECRET_{match.group(1)})",
                reason="secret_missing",
            )
        return split_secrets(value)

    def _default_slack_client(self) -> WebClient:
        token = self.settings.slack_bot_token
        if token is None:
            raise Undeliverable("POSTHOC_SLACK_BOT_TOKEN is not set", reason="slack_token_missing")
        return web_client(token.get_secret_value(), self.settings.slack_api_url)

    # -- driving deliveries in-process -----------------------------------------------------------

    def deliver_due(self, limit: int = 500) -> list[DeliveryOutcome]:
        """Attempt every due delivery once (the sweeper's work, in-process)."""
        with self.store.read() as connection:
            ids = ledger.due(connection, self.store.now(), limit)
        return [self.deliver(delivery_id) for delivery_id in ids]

    def deliver_run(self, run_id: str, *, max_wait_seconds: float = 60.0) -> list[DeliveryOutcome]:
        """Deliver a run's pending deliveries now, waiting out retries up to `max_wait_seconds`
        in all (`posthoc run`); what is still pending then is left to the worker's sweeper."""
        deadline = time.monotonic() + max_wait_seconds
        with self.store.read() as connection:
            ids = [
                r.id for r in ledger.list_deliveries(connection, run_id=run_id, status="pending")
            ]
        final: dict[str, DeliveryOutcome] = {}
        while ids:
            outcomes = [self.deliver(i) for i in ids]
            final.update({o.delivery_id: o for o in outcomes})
            waits = [o.retry_in or 0.0 for o in outcomes if o.status == "pending"]
            if not waits or time.monotonic() + min(waits) > deadline:
                break
            time.sleep(min(waits))
            ids = [o.delivery_id for o in outcomes if o.status == "pending"]
        return list(final.values())


def routes_from_catalog(catalog: Catalog) -> ledger.RouteSource:
    """The route source for `use_routes`: the sinks of the spec the engine runs."""

    def routes(analyzer: str) -> tuple[Sequence[SinkRoute], Sequence[str]] | None:
        spec = catalog.analyzers.get(analyzer)
        if spec is None:
            return None
        return spec.sinks, [output.name for output in spec.outputs]

    return routes
