"""The delivery ledger and outbox: one row per (run, sink, destination), with its own attempts.

`record_outbox` runs inside the transaction that stores a run's result (`leases.complete`), so a
result and its deliveries are committed together or not at all. A delivery is then claimed with
a lease (a conditional UPDATE, like runs), attempted by a sink, and ends `delivered`, `pending`
again with a `next_attempt_at` (retries are parked here, not as broker countdowns; the sweeper
wakes them), or `dead` with its reason. `replay` puts dead (or delivered) deliveries back.

The delivery id is derived from (run, sink, destination), so it is stable across retries and
replays: it goes into Slack message metadata, the `webhook-id` header and JSONL lines.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from analyzers.definitions.expressions import ExpressionError
from schemas import AnalysisResult
from schemas.analyzer import JsonlSink, SinkRoute, SlackSink, WebhookSink
from schemas.result import RunError
from worker.ledger._sql import UNKNOWN, Unknown, load_run, upsert_insert
from worker.ledger.clock import Clock, utc_now
from worker.ledger.conversations import conversation_identity
from worker.ledger.engine import read_transaction, write_transaction
from worker.ledger.errors import LedgerError
from worker.ledger.runs import results
from worker.ledger.snapshots import cached_snapshot
from worker.ledger.tables import analysis_runs, deliveries, disabled_destinations
from worker.sinks.routing import routing_matches

DeliveryState = Literal["pending", "delivering", "delivered", "dead"]
DEFAULT_MAX_ATTEMPTS = 8
RouteSource = Callable[[str], tuple[Sequence[SinkRoute], Sequence[str]] | None]
"""Analyzer name -> (its sinks, its declared output names), or None when unknown."""

_routes_lock = threading.Lock()
_route_source: RouteSource | None = None


def use_routes(source: RouteSource | None) -> None:
    """Say where the sinks of a run recorded without a snapshot come from (the engine's
    catalog; see `routes_for_run`). None: such runs get no deliveries."""
    global _route_source  # noqa: PLW0603 - one route source per process, set at start-up
    with _routes_lock:
        _route_source = source


def routes_for_run(
    connection: Connection, result: AnalysisResult, *, spec_hash: str | Unknown | None = UNKNOWN
) -> tuple[Sequence[SinkRoute], Sequence[str]]:
    """The sinks and declared output names of the analyzer version the run executed.

    The one place that decides where routing comes from: the run's analyzer snapshot (recorded
    with the run, so routing never follows today's YAML); for a run recorded without a
    snapshot, the route source registered with `use_routes` (the engine's catalog).
    """
    if isinstance(spec_hash, Unknown):  # the caller did not read the run's row already
        spec_hash = connection.execute(
            sa.select(analysis_runs.c.spec_hash).where(analysis_runs.c.id == result.run_id)
        ).scalar_one_or_none()
    if spec_hash is not None:
        spec = cached_snapshot(connection, spec_hash).spec
        return spec.sinks, [output.name for output in spec.outputs]
    with _routes_lock:
        source = _route_source
    found = source(result.analyzer) if source is not None else None
    return found if found is not None else ((), ())


def destination_of(sink: SinkRoute) -> str:
    """What makes two routes of one run the same delivery."""
    if isinstance(sink, SlackSink):
        return sink.channel
    if isinstance(sink, WebhookSink):
        return sink.url
    if isinstance(sink, JsonlSink):
        return sink.path
    raise LedgerError(f"unknown sink type {type(sink).__name__}")


def delivery_id(run_id: str, sink: str, destination: str) -> str:
    """Stable id of a (run, sink, destination); no '.' (webhook ids must not contain one)."""
    digest = hashlib.sha256(f"{run_id}\x00{sink}\x00{destination}".encode()).hexdigest()
    return f"dlv_{digest[:40]}"


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One delivery as the ledger holds it."""

    id: str
    run_id: str
    sink: str
    destination: str
    route: dict[str, Any]
    status: DeliveryState
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    receipt: dict[str, Any] | None
    last_error: str | None
    dead_reason: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    lease_owner: str | None = None


def _record(row: Row[Any]) -> DeliveryRecord:
    data = row._mapping
    return DeliveryRecord(**{name: data[name] for name in DeliveryRecord.__slots__})


def record_outbox(
    connection: Connection,
    now: datetime,
    result: AnalysisResult,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    spec_hash: str | Unknown | None = UNKNOWN,
) -> list[str]:
    """Write the run's deliveries (one per matching route); return the ids of new pending ones.

    `spec_hash`: the run's, when the caller has its row already (saves reading it again).
    A route whose `when` fails to evaluate, or whose destination is disabled, is written
    `dead` with the reason, so it shows in `posthoc deliveries list` instead of vanishing.
    """
    sinks, declared = routes_for_run(connection, result, spec_hash=spec_hash)
    rows: dict[str, dict[str, Any]] = {}
    for sink in sinks:
        status: DeliveryState = "pending"
        reason = error = None
        try:
            if not routing_matches(sink, result, declared):
                continue
        except ExpressionError as exc:
            status, reason, error = "dead", "routing_error", str(exc)
        destination = destination_of(sink)
        new_id = delivery_id(result.run_id, sink.type, destination)
        rows.setdefault(  # the first route to a destination wins, as the insert would
            new_id,
            {
                "id": new_id,
                "run_id": result.run_id,
                "sink": sink.type,
                "destination": destination,
                "route": sink.model_dump(mode="json"),
                "status": status,
                "attempts": 0,
                "max_attempts": max_attempts,
                "next_attempt_at": now,
                "last_error": error,
                "dead_reason": reason,
                "created_at": now,
                "updated_at": now,
            },
        )
    if not rows:
        return []
    # Two statements however many routes matched: which destinations are disabled, then one
    # insert of every delivery (a completion's round trips are the worker's hot path).
    keys = sorted({f"{row['sink']}:{row['destination']}" for row in rows.values()})
    off = set(connection.execute(_DISABLED_AMONG, {"keys": keys}).scalars())
    for row in rows.values():
        if row["status"] == "pending" and f"{row['sink']}:{row['destination']}" in off:
            row["status"], row["dead_reason"] = "dead", "destination_disabled"
            row["last_error"] = f"{row['sink']} destination is disabled"
    inserted = connection.execute(_new_deliveries(connection), list(rows.values())).all()
    new = {row.id for row in inserted if row.status == "pending"}
    return [delivery for delivery in rows if delivery in new]


# The outbox's statements, built once (`record_outbox` runs in every completion): which of some
# destinations are disabled, and the insert of a run's deliveries, sent as one multi-row
# statement however many rows (SQLAlchemy's "insertmanyvalues" keeps RETURNING).
_DISABLED_AMONG = sa.select(disabled_destinations.c.destination).where(
    disabled_destinations.c.destination.in_(sa.bindparam("keys", expanding=True))
)


_NEW_DELIVERIES: dict[str, sa.Insert] = {}


def _new_deliveries(connection: Connection) -> sa.Insert:
    statement = _NEW_DELIVERIES.get(connection.dialect.name)
    if statement is None:  # two threads may both build it: the same statement either way
        statement = (
            upsert_insert(connection, deliveries)
            .on_conflict_do_nothing()
            .returning(deliveries.c.id, deliveries.c.status)
        )
        _NEW_DELIVERIES[connection.dialect.name] = statement
    return statement


def claim(
    connection: Connection, now: datetime, delivery: str, worker_id: str, lease_seconds: float
) -> DeliveryRecord | None:
    """Take a due delivery (pending and due, or delivering under an expired lease)."""
    claimable = sa.or_(
        sa.and_(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now),
        sa.and_(deliveries.c.status == "delivering", deliveries.c.lease_expires_at <= now),
    )
    row = connection.execute(
        sa.update(deliveries)
        .where(deliveries.c.id == delivery, claimable)
        .values(
            status="delivering",
            attempts=deliveries.c.attempts + 1,
            woken_at=None,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(*deliveries.c)
    ).one_or_none()
    return _record(row) if row is not None else None


def _held(delivery: str, worker_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        deliveries.c.id == delivery,
        deliveries.c.status == "delivering",
        deliveries.c.lease_owner == worker_id,
    )


def save_receipt(
    connection: Connection, now: datetime, delivery: str, worker_id: str, receipt: dict[str, Any]
) -> bool:
    """Store what the destination answered so far (a Slack `ts`), while the lease is held."""
    return bool(
        connection.execute(
            sa.update(deliveries)
            .where(_held(delivery, worker_id))
            .values(receipt=receipt, updated_at=now)
        ).rowcount
    )


def mark_delivered(
    connection: Connection,
    now: datetime,
    delivery: str,
    worker_id: str,
    receipt: dict[str, Any] | None,
) -> bool:
    values: dict[str, Any] = {
        "status": "delivered",
        "delivered_at": now,
        "updated_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": None,
    }
    if receipt is not None:
        values["receipt"] = receipt
    return bool(
        connection.execute(
            sa.update(deliveries).where(_held(delivery, worker_id)).values(values)
        ).rowcount
    )


def retry_or_dead(
    connection: Connection,
    now: datetime,
    delivery: str,
    worker_id: str,
    *,
    error: str,
    reason: str,
    delay_seconds: float,
) -> Literal["pending", "dead", "lease_lost"]:
    """Park a transient failure until `now + delay_seconds`, or dead-letter it when this was
    its last attempt."""
    row = connection.execute(
        sa.select(deliveries.c.attempts, deliveries.c.max_attempts).where(
            _held(delivery, worker_id)
        )
    ).one_or_none()
    if row is None:
        return "lease_lost"
    if row.attempts >= row.max_attempts:
        dead(
            connection, now, delivery, worker_id, reason=f"attempts_exhausted:{reason}", error=error
        )
        return "dead"
    connection.execute(
        sa.update(deliveries)
        .where(_held(delivery, worker_id))
        .values(
            status="pending",
            woken_at=None,
            next_attempt_at=now + timedelta(seconds=max(0.0, delay_seconds)),
            lease_owner=None,
            lease_expires_at=None,
            last_error=error,
            updated_at=now,
        )
    )
    return "pending"


def dead(
    connection: Connection, now: datetime, delivery: str, worker_id: str, *, reason: str, error: str
) -> bool:
    """The dead-letter state: kept with its reason until replayed."""
    return bool(
        connection.execute(
            sa.update(deliveries)
            .where(_held(delivery, worker_id))
            .values(
                status="dead",
                dead_reason=reason[:200],
                last_error=error,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
        ).rowcount
    )


def disable_destination(
    connection: Connection, now: datetime, sink: str, destination: str, reason: str
) -> None:
    key = f"{sink}:{destination}"
    connection.execute(
        upsert_insert(connection, disabled_destinations)
        .values(destination=key, reason=reason, disabled_at=now)
        .on_conflict_do_nothing()
    )


def is_disabled(connection: Connection, sink: str, destination: str) -> bool:
    key = f"{sink}:{destination}"
    return (
        connection.execute(
            sa.select(disabled_destinations.c.destination).where(
                disabled_destinations.c.destination == key
            )
        ).first()
        is not None
    )


def disabled(connection: Connection) -> list[tuple[str, str, datetime]]:
    """Disabled destinations: (sink:destination, reason, when)."""
    rows = connection.execute(sa.select(disabled_destinations).order_by("destination")).all()
    return [(r.destination, r.reason, r.disabled_at) for r in rows]


def due(
    connection: Connection,
    now: datetime,
    limit: int = 500,
    *,
    rewake_after_seconds: float | None = None,
) -> list[str]:
    """Deliveries to wake: pending and due, or delivering under an expired lease. With
    `rewake_after_seconds`, one whose wake-up was sent within that time is left out: its message
    may still wait behind a long queue, and one more per sweep would only lengthen it."""
    claimable = sa.or_(
        sa.and_(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now),
        sa.and_(deliveries.c.status == "delivering", deliveries.c.lease_expires_at <= now),
    )
    query = sa.select(deliveries.c.id).where(claimable)
    if rewake_after_seconds is not None:
        query = query.where(
            sa.or_(
                deliveries.c.woken_at.is_(None),
                deliveries.c.woken_at <= now - timedelta(seconds=rewake_after_seconds),
            )
        )
    return list(
        connection.execute(query.order_by(deliveries.c.next_attempt_at).limit(limit)).scalars()
    )


def mark_woken(connection: Connection, now: datetime, ids: Sequence[str]) -> None:
    """A wake-up message for each of `ids` is being sent now."""
    if ids:
        connection.execute(
            sa.update(deliveries).where(deliveries.c.id.in_(list(ids))).values(woken_at=now)
        )


def wake_pending(connection: Connection, now: datetime, run_id: str) -> list[str]:
    """Mark the run's pending deliveries woken now (their messages are sent next); return
    their ids. One statement where a read and then `mark_woken` took two transactions."""
    return sorted(
        connection.execute(
            sa.update(deliveries)
            .where(deliveries.c.run_id == run_id, deliveries.c.status == "pending")
            .values(woken_at=now)
            .returning(deliveries.c.id)
        ).scalars()
    )


def replay(connection: Connection, now: datetime, ids: Sequence[str]) -> list[str]:
    """Put dead or delivered deliveries back to pending with fresh attempts; returns those
    replayed. A replayed Slack delivery updates its message (its receipt is kept)."""
    replayed = connection.execute(
        sa.update(deliveries)
        .where(deliveries.c.id.in_(list(ids)), deliveries.c.status.in_(["dead", "delivered"]))
        .values(
            status="pending",
            attempts=0,
            woken_at=None,
            next_attempt_at=now,
            dead_reason=None,
            updated_at=now,
        )
        .returning(deliveries.c.id)
    ).scalars()
    return sorted(replayed)


def hold_back(connection: Connection, now: datetime, run_ids: Sequence[str], reason: str) -> int:
    """Dead-letter the runs' pending deliveries with `reason` (`posthoc run --no-deliver`):
    recorded and visible, sent only if someone replays them."""
    return int(
        connection.execute(
            sa.update(deliveries)
            .where(deliveries.c.run_id.in_(list(run_ids)), deliveries.c.status == "pending")
            .values(status="dead", dead_reason=reason, updated_at=now)
        ).rowcount
    )


def list_deliveries(
    connection: Connection,
    *,
    status: str | None = None,
    sink: str | None = None,
    run_id: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[DeliveryRecord]:
    query = sa.select(deliveries).order_by(deliveries.c.created_at.desc(), deliveries.c.id)
    if status is not None:
        query = query.where(deliveries.c.status == status)
    if sink is not None:
        query = query.where(deliveries.c.sink == sink)
    if run_id is not None:
        query = query.where(deliveries.c.run_id == run_id)
    if since is not None:
        query = query.where(deliveries.c.created_at >= since)
    return [_record(row) for row in connection.execute(query.limit(limit)).all()]


def counts_by_status(connection: Connection) -> dict[str, int]:
    rows = connection.execute(
        sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status)
    ).all()
    return {str(status): int(count) for status, count in rows}


def backoff_seconds(
    attempt: int,
    retry_after: float | None,
    *,
    base: float = 5.0,
    cap: float = 3600.0,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with jitter (half to full of the step), never sooner than the
    destination's `Retry-After`."""
    step = min(cap, base * 2 ** max(0, attempt - 1))
    uniform = rng.uniform if rng is not None else random.uniform
    jittered: float = step * uniform(0.5, 1.0)
    return max(jittered, retry_after or 0.0)


class DeliveryLedger:
    """The delivery operations, each in its own transaction, on a ledger's engine."""

    def __init__(self, engine: Engine, *, now: Clock = utc_now) -> None:
        self.engine = engine
        self._clock = now

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def write(self) -> AbstractContextManager[Connection]:
        return write_transaction(self.engine)

    def read(self) -> AbstractContextManager[Connection]:
        return read_transaction(self.engine)

    def mark_woken(self, ids: Sequence[str]) -> None:
        with self.write() as connection:
            mark_woken(connection, self.now(), ids)

    def wake_pending(self, run_id: str) -> list[str]:
        """The run's pending deliveries, marked woken: send their messages now."""
        with self.write() as connection:
            return wake_pending(connection, self.now(), run_id)


def stored_or_failed_result(connection: Connection, run_id: str) -> AnalysisResult | None:
    """The run's stored result; for a run failed without one (`fail`, attempts exhausted), a
    failed result built from its row; None while it has neither."""
    run = load_run(connection, run_id)
    stored = results(connection, [run_id])
    if stored:
        return stored[0]
    if run.status != "failed":
        return None
    tenant_id, conversation_id = conversation_identity(connection, run.conversation_pk)
    return AnalysisResult(
        run_id=run.id,
        conversation_id=conversation_id,
        tenant_id=tenant_id,
        analyzer=run.analyzer,
        analyzer_version=run.analyzer_version,
        status="failed",
        error=RunError(
            type=run.error_type or "failed",
            message=run.error_message or "the run failed without a message",
        ),
    )


def record_failure_outbox(connection: Connection, now: datetime, run_id: str) -> list[str]:
    """The outbox of a run that failed without a result, so its failure can be routed too."""
    result = stored_or_failed_result(connection, run_id)
    if result is None or result.status != "failed":
        return []
    return record_outbox(connection, now, result)
