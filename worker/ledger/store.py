"""`Ledger`: the database that records conversations, analysis runs and their attempts.

The database is the source of truth; the broker only carries run ids. Every method is one short
transaction, safe to call from many threads at once (the engine pools connections). All times
come from the injected clock, never from the database server, so tests can move time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from types import TracebackType

from sqlalchemy.engine import URL, Connection, Engine

from schemas import AnalysisResult, AnalyzerSnapshot, Conversation
from schemas.usage import Usage
from worker.ledger import bulk, conversations, leases, migrate, runs, snapshots, sweeping
from worker.ledger._sql import load_run
from worker.ledger.clock import Clock, utc_now
from worker.ledger.engine import (
    DEFAULT_POOL_SIZE,
    create_ledger_engine,
    read_transaction,
    write_transaction,
)
from worker.ledger.errors import LedgerError
from worker.ledger.procedures import LedgerProcedureStore
from worker.ledger.records import (
    RUN_STATES,
    AttemptRecord,
    ClaimedRun,
    ConversationRef,
    ConversationVersion,
    RetryOutcome,
    RunPlan,
    RunRecord,
    RunState,
    SweepReport,
    Trigger,
)


class Ledger:
    """The ledger on one database (SQLite file or PostgreSQL); see the module docstring.

    :param engine: from `create_ledger_engine`, or use `Ledger.from_url`.
    :param now: the clock; returns timezone-aware datetimes.
    """

    def __init__(self, engine: Engine, *, now: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = now

    @classmethod
    def from_url(
        cls, url: str | URL, *, now: Clock = utc_now, pool_size: int = DEFAULT_POOL_SIZE
    ) -> Ledger:
        """A ledger on `sqlite:///file` or `postgresql+psycopg://...` (tables via `migrate`).

        `pool_size`: how many threads call the ledger at once (PostgreSQL's connection pool).
        """
        return cls(create_ledger_engine(url, pool_size=pool_size), now=now)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for health checks and tests)."""
        return self._engine

    @property
    def clock(self) -> Clock:
        """The clock every operation reads; stores sharing this engine use it too."""
        return self._clock

    @property
    def procedures(self) -> LedgerProcedureStore:
        """The procedure store in this ledger's database (on this ledger's clock)."""
        return LedgerProcedureStore(self._engine, now=self._clock)

    def migrate(self) -> None:
        """Create or upgrade the tables to the newest revision; a no-op when already there."""
        with self._write() as connection:
            migrate.upgrade(connection)

    def schema_revision(self) -> str | None:
        """The migration revision the database is at (None before `migrate`)."""
        with self._read() as connection:
            return migrate.current_revision(connection)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.dispose()

    # Conversations

    def save_conversation(self, conversation: Conversation) -> ConversationRef:
        """Store the conversation's content as a version (new content: the next version; the
        same content: the version it already is) and make it the current content."""
        with self._write() as connection:
            return conversations.save_conversation(connection, self._now(), conversation)

    def get_conversation(self, ref_or_pk: ConversationRef | int) -> Conversation:
        """The conversation's current content (ConversationNotFound if there is none).

        A `ConversationRef` reads the version it was saved as, not whatever is current now.
        """
        with self._read() as connection:
            if isinstance(ref_or_pk, ConversationRef) and ref_or_pk.version_id:
                return conversations.get_version(connection, ref_or_pk.version_id)
            pk = ref_or_pk.pk if isinstance(ref_or_pk, ConversationRef) else ref_or_pk
            return conversations.get_conversation(connection, pk)

    def get_conversation_version(self, version_id: int) -> Conversation:
        """The content stored as this conversation version (ConversationNotFound if none)."""
        with self._read() as connection:
            return conversations.get_version(connection, version_id)

    def conversation_versions(self, conversation_pk: int) -> list[ConversationVersion]:
        """Every version of a conversation, oldest first."""
        with self._read() as connection:
            return conversations.list_versions(connection, conversation_pk)

    def run_conversation(self, run: ClaimedRun | RunRecord) -> Conversation:
        """The conversation content the run was recorded for (runs recorded before conversation
        versions existed read the current content)."""
        with self._read() as connection:
            if run.conversation_version_id is not None:
                return conversations.get_version(connection, run.conversation_version_id)
            return conversations.get_conversation(connection, run.conversation_pk)

    # Snapshots

    def save_snapshot(self, snapshot: AnalyzerSnapshot) -> str:
        """Store the snapshot once per content hash; return its `spec_hash`."""
        with self._write() as connection:
            return snapshots.save_snapshot(connection, self._now(), snapshot)

    def get_snapshot(self, spec_hash: str) -> AnalyzerSnapshot:
        """The snapshot stored under `spec_hash` (SnapshotNotFound if there is none)."""
        with self._read() as connection:
            return snapshots.get_snapshot(connection, spec_hash)

    def remembered_snapshot(self, spec_hash: str) -> AnalyzerSnapshot | None:
        """The snapshot if this process's cache holds it (no database: safe on an event
        loop), else None."""
        return snapshots.remembered_snapshot(spec_hash)

    def cached_snapshot(self, spec_hash: str) -> AnalyzerSnapshot:
        """`get_snapshot`, from this process's cache when it holds it (snapshots never change:
        their key is their content's hash)."""
        found = snapshots.remembered_snapshot(spec_hash)
        if found is not None:
            return found
        with self._read() as connection:
            return snapshots.cached_snapshot(connection, spec_hash)

    # Recording runs

    def record_runs(
        self,
        conversation_pk: int,
        plans: Sequence[RunPlan],
        *,
        trigger: Trigger,
        idempotency_prefix: str | None = None,
        rerun_of: str | None = None,
        conversation_version_id: int | None = None,
    ) -> list[RunRecord]:
        """One run per plan, queued now or skipped with its reason, in the order of `plans`.

        Each run is pinned to `conversation_version_id` (default: the conversation's current
        version; pass `ConversationRef.version_id`) and to its plan's snapshot, if it has one.
        With `idempotency_prefix`, a plan whose key `{prefix}:{analyzer}` already exists returns
        that run with `created=False` (a repeated webhook or CLI submission).
        """
        with self._write() as connection:
            return runs.record_runs(
                connection,
                self._now(),
                conversation_pk,
                plans,
                trigger=trigger,
                idempotency_prefix=idempotency_prefix,
                rerun_of=rerun_of,
                conversation_version_id=conversation_version_id,
            )

    def record_many(
        self, entries: Sequence[bulk.RunsToRecord], *, mark_sent: bool = False
    ) -> list[bulk.Recorded]:
        """Store each conversation and record its runs, all in one transaction with multi-row
        statements (see `worker/ledger/bulk.py`); `mark_sent`: the caller sends the created
        queued runs right after, so they are recorded as sent."""
        with self.transaction() as connection:
            return bulk.record_many(connection, self._now(), entries, mark_sent=mark_sent)

    def now(self) -> datetime:
        """The ledger's clock (timezone-aware UTC), for callers that write in `transaction`."""
        return self._now()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (SQLite: `BEGIN IMMEDIATE`), committed when the block ends."""
        with self._write() as connection:
            yield connection

    # Leases: what a worker does with a run id from the queue

    def claim(self, run_id: str, worker_id: str, lease_seconds: float) -> ClaimedRun | None:
        """Take the run for `lease_seconds`; None if it is finished, leased, or not due yet.

        `worker_id` must name one claimer (host, process and thread or task), not just a host.
        """
        now = self._now()
        if self._engine.dialect.name == "postgresql":
            # One statement and no transaction around it: one round trip. When it takes
            # nothing, the full claim in a transaction says why (and fails an exhausted run).
            with self._single_statement() as connection:
                claimed = leases.take(connection, now, run_id, worker_id, lease_seconds)
            if claimed is not None:
                return claimed
        with self._write() as connection:
            return leases.claim(connection, now, run_id, worker_id, lease_seconds)

    def heartbeat(
        self, run_id: str, worker_id: str, lease_seconds: float, *, attempt: int | None = None
    ) -> bool:
        """Extend the lease to now + `lease_seconds`; False: the lease is lost, stop work."""
        with self._write() as connection:
            return leases.heartbeat(
                connection, self._now(), run_id, worker_id, lease_seconds, attempt
            )

    def renew_leases(self, held: Sequence[tuple[str, str, int]], lease_seconds: float) -> set[str]:
        """Extend every lease in `held` ((run id, worker id, attempt)) to now + `lease_seconds`
        in one statement (a process's heartbeat); return the run ids renewed. The rest are
        lost (their attempt rows say so): stop their work."""
        if not held:
            return set()
        now = self._now()
        with self._write() as connection:
            renewed = leases.renew_leases(connection, now, held, lease_seconds)
            lost = [lease for lease in held if lease[0] not in renewed]
            if lost:
                leases.note_leases_lost(connection, now, lost)
        return renewed

    def complete(
        self,
        run_id: str,
        worker_id: str,
        result: AnalysisResult,
        *,
        attempt: int | None = None,
        children: Sequence[RunPlan] = (),
    ) -> bool:
        """Store the result (status from `result.status`); False and no write without the lease.

        The result's usage and cost are recorded as this attempt's; the run's figures
        (`RunRecord.input_tokens`, ..., `cost_usd`) are the sums over all its attempts.
        `children`: chained runs (`after:`) recorded in the same transaction (`child_runs`).
        """
        with self._write() as connection:
            return leases.complete(
                connection, self._now(), run_id, worker_id, result, attempt, children
            )

    def child_runs(self, parent_run_id: str) -> list[RunRecord]:
        """The chained runs recorded when this run completed."""
        with self._read() as connection:
            return runs.child_runs(connection, parent_run_id)

    def retry_later(
        self,
        run_id: str,
        worker_id: str,
        *,
        error_type: str,
        message: str,
        delay_seconds: float,
        attempt: int | None = None,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
    ) -> RetryOutcome:
        """A transient failure: `queued` again after the delay, or `failed` with
        `attempts_exhausted` after the last attempt; `lease_lost` (and no write) without the
        lease. `usage`/`cost_usd`: what the failed attempt spent, added to the run's figures."""
        with self._write() as connection:
            return leases.retry_later(
                connection,
                self._now(),
                run_id,
                worker_id,
                attempt,
                error_type=error_type,
                message=message,
                delay_seconds=delay_seconds,
                spent=None if usage is None else (usage, cost_usd),
            )

    def release(
        self, run_id: str, worker_id: str, *, reason: str, attempt: int | None = None
    ) -> bool:
        """Hand a claimed run back, due now, without spending its attempt (a worker shutting
        down); False and no write without the lease."""
        with self._write() as connection:
            return leases.release(
                connection, self._now(), run_id, worker_id, attempt, reason=reason
            )

    def fail(
        self,
        run_id: str,
        worker_id: str,
        *,
        error_type: str,
        message: str,
        attempt: int | None = None,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
    ) -> bool:
        """A permanent failure: `failed` with this reason; False and no write without the lease."""
        with self._write() as connection:
            return leases.fail(
                connection,
                self._now(),
                run_id,
                worker_id,
                attempt,
                error_type=error_type,
                message=message,
                spent=None if usage is None else (usage, cost_usd),
            )

    # The sweeper

    def expired_leases(self, limit: int = 100) -> list[str]:
        """Ids of running runs whose lease has run out."""
        with self._read() as connection:
            return sweeping.expired_leases(connection, self._now(), limit)

    def due_queued(self, older_than_seconds: float, limit: int = 100) -> list[str]:
        """Ids of runs queued and claimable for `older_than_seconds` that nobody claimed."""
        with self._read() as connection:
            return sweeping.due_queued(connection, self._now(), older_than_seconds, limit)

    def sweep(
        self,
        *,
        older_than_seconds: float = 300.0,
        limit: int = 100,
        waiting_messages: int | None = None,
        resend_queued: bool = True,
    ) -> SweepReport:
        """Fail runs whose lease expired on their last attempt; return the ids to enqueue again
        (see `sweeping.sweep` for `waiting_messages`, the broker's queue depth)."""
        with self._write() as connection:
            return sweeping.sweep(
                connection,
                self._now(),
                older_than_seconds=older_than_seconds,
                limit=limit,
                waiting_messages=waiting_messages,
                resend_queued=resend_queued,
            )

    def oldest_waiting_seconds(self) -> float:
        """Age of the oldest run waiting to be claimed (queued and due); 0 when none waits."""
        with self._read() as connection:
            return sweeping.oldest_waiting_seconds(connection, self._now())

    def mark_enqueued(self, run_ids: Sequence[str]) -> None:
        """Record that a message was just sent for each run (`enqueued_at`, `enqueue_count`)."""
        with self._write() as connection:
            sweeping.mark_enqueued(connection, self._now(), run_ids)

    # Operations and reading back

    def requeue_failed(self, run_ids: Sequence[str] | None = None) -> list[str]:
        """Failed runs (all of them for None) back to queued with a fresh attempt budget.

        Raises RunNotFound or InvalidTransition (a run that is not failed) before changing
        anything. Returns the ids to enqueue.
        """
        with self._write() as connection:
            return runs.requeue_failed(connection, self._now(), run_ids)

    def get_run(self, run_id: str) -> RunRecord:
        """The run (RunNotFound if there is none)."""
        with self._read() as connection:
            return load_run(connection, run_id)

    def list_runs(
        self,
        status: RunState | None = None,
        *,
        analyzer: str | None = None,
        conversation_pk: int | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Runs, newest first."""
        with self._read() as connection:
            return runs.list_runs(
                connection,
                status=status,
                analyzer=analyzer,
                conversation_pk=conversation_pk,
                limit=limit,
            )

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        """The run's claims, in order, with how each ended."""
        with self._read() as connection:
            return runs.attempts(connection, run_id)

    def counts_by_status(self, analyzer: str | None = None) -> dict[RunState, int]:
        """How many runs are in each status (every status present), for one analyzer or all."""
        with self._read() as connection:
            per_analyzer = runs.counts_by_analyzer(connection, analyzer=analyzer)
        totals = dict.fromkeys(RUN_STATES, 0)
        for counts in per_analyzer.values():
            for status, count in counts.items():
                totals[status] += count
        return totals

    def counts_by_analyzer(self) -> dict[str, dict[RunState, int]]:
        """{analyzer: {status: count}}, for metrics."""
        with self._read() as connection:
            return runs.counts_by_analyzer(connection, analyzer=None)

    def results(self, run_ids: Sequence[str]) -> list[AnalysisResult]:
        """The results stored for these runs, in order; runs without one yet are left out."""
        with self._read() as connection:
            return runs.results(connection, run_ids)

    # Plumbing

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise LedgerError(f"the ledger's clock returned a naive datetime: {now!r}")
        return now.astimezone(UTC)

    def _write(self) -> AbstractContextManager[Connection]:
        return write_transaction(self._engine)

    @contextmanager
    def _single_statement(self) -> Iterator[Connection]:
        """A connection in autocommit: for one statement that is atomic on its own, without
        the BEGIN and COMMIT round trips around it (PostgreSQL)."""
        with self._engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")

    def _read(self) -> AbstractContextManager[Connection]:
        return read_transaction(self._engine)
