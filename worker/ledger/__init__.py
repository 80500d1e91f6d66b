"""The ledger: conversations and their versions, analyzer snapshots, analysis runs and their
attempts, in SQLite or PostgreSQL.

The database is the ledger; the broker only carries run ids. See `Ledger`.
"""

from __future__ import annotations

from worker.ledger.clock import Clock, ManualClock, utc_now
from worker.ledger.engine import create_ledger_engine
from worker.ledger.errors import (
    ConversationNotFound,
    InvalidTransition,
    LedgerError,
    RunNotFound,
    SnapshotNotFound,
)
from worker.ledger.leases import ATTEMPTS_EXHAUSTED
from worker.ledger.records import (
    AttemptOutcome,
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
from worker.ledger.store import Ledger

__all__ = [
    "ATTEMPTS_EXHAUSTED",
    "AttemptOutcome",
    "AttemptRecord",
    "ClaimedRun",
    "Clock",
    "ConversationNotFound",
    "ConversationRef",
    "ConversationVersion",
    "InvalidTransition",
    "Ledger",
    "LedgerError",
    "ManualClock",
    "RetryOutcome",
    "RunNotFound",
    "RunPlan",
    "RunRecord",
    "RunState",
    "SnapshotNotFound",
    "SweepReport",
    "Trigger",
    "create_ledger_engine",
    "utc_now",
]
