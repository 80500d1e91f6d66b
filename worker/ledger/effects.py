"""`LedgerEffectStore`: the runtime's `EffectStore` on the ledger's `effects` table.

Each write-effect HTTP call of a run is one row, keyed by the idempotency key it sent. The row is
written `pending` in its own committed transaction before the request goes out, and set `done`
with the outcome after; so a process killed in between leaves a pending row, and the retry sends
the same key again. Rows live in the same database as the runs they belong to.

The store's methods are async (the runtime awaits them) and run their short transactions in a
thread, like the engine's other ledger calls.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AbstractContextManager
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from analyzers.tools.effects import EffectRecord, EffectState
from worker.ledger.clock import Clock, utc_now
from worker.ledger.engine import write_transaction
from worker.ledger.errors import LedgerError
from worker.ledger.tables import effects


class LedgerEffectStore:
    """Write effects in the ledger database behind `engine` (the `Ledger`'s engine).

    :param now: the clock for `created_at` / `updated_at`; the ledger's clock in tests.
    """

    def __init__(self, engine: Engine, *, now: Clock = utc_now) -> None:
        self._engine = engine
        self._now = now

    async def lookup(self, key: str) -> EffectRecord | None:
        """The record under `key`, or None."""
        return await asyncio.to_thread(self.lookup_now, key)

    async def record_pending(self, record: EffectRecord) -> EffectRecord:
        """Insert `record` as pending, or count one more send of the pending row under its key."""
        return await asyncio.to_thread(self._record_pending, record)

    async def record_outcome(
        self, key: str, *, output: Any, is_error: bool, status_code: int | None
    ) -> None:
        """Mark the effect under `key` done with the outcome the server gave."""
        await asyncio.to_thread(self._record_outcome, key, output, is_error, status_code)

    def lookup_now(self, key: str) -> EffectRecord | None:
        """`lookup`, synchronously (for the CLI and tests)."""
        with self._engine.connect() as connection, connection.begin():
            row = connection.execute(
                sa.select(effects).where(effects.c.idempotency_key == key)
            ).first()
        return None if row is None else _record(row._mapping)

    def for_run(self, run_id: str) -> list[EffectRecord]:
        """Every effect of `run_id`, oldest first."""
        with self._engine.connect() as connection, connection.begin():
            rows = connection.execute(
                sa.select(effects)
                .where(effects.c.run_id == run_id)
                .order_by(effects.c.created_at, effects.c.idempotency_key)
            ).all()
        return [_record(row._mapping) for row in rows]

    def _record_pending(self, record: EffectRecord) -> EffectRecord:
        now = self._now()
        key = effects.c.idempotency_key == record.key
        with self._write() as connection:
            known = connection.execute(sa.select(effects).where(key)).first()
            if known is None:
                connection.execute(
                    effects.insert().values(
                        idempotency_key=record.key,
                        run_id=record.run_id,
                        tool_name=record.tool_name,
                        scope=record.scope,
                        call_number=record.call_number,
                        method=record.method,
                        url=record.url,
                        fingerprint=record.fingerprint,
                        state="pending",
                        outcome=None,
                        is_error=False,
                        status_code=None,
                        sends=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                if known._mapping["state"] != "pending":
                    raise LedgerError(
                        f"effect {record.key!r} is already done; replay it instead of sending"
                    )
                connection.execute(
                    effects.update().where(key).values(sends=effects.c.sends + 1, updated_at=now)
                )
            row = connection.execute(sa.select(effects).where(key)).one()
        return _record(row._mapping)

    def _record_outcome(
        self, key: str, output: Any, is_error: bool, status_code: int | None
    ) -> None:
        with self._write() as connection:
            updated = connection.execute(
                effects.update()
                .where(effects.c.idempotency_key == key)
                .values(
                    state="done",
                    outcome=json.dumps(output, default=str),
                    is_error=is_error,
                    status_code=status_code,
                    updated_at=self._now(),
                )
            )
        if updated.rowcount != 1:
            raise LedgerError(f"no pending effect {key!r} to record an outcome for")

    def _write(self) -> AbstractContextManager[Connection]:
        return write_transaction(self._engine)


def _record(row: Any) -> EffectRecord:
    outcome = row["outcome"]
    return EffectRecord(
        key=row["idempotency_key"],
        run_id=row["run_id"],
        tool_name=row["tool_name"],
        scope=row["scope"],
        call_number=row["call_number"],
        method=row["method"],
        url=row["url"],
        fingerprint=row["fingerprint"],
        state=cast(EffectState, row["state"]),
        output=None if outcome is None else json.loads(outcome),
        is_error=bool(row["is_error"]),
        status_code=row["status_code"],
        sends=row["sends"],
    )
