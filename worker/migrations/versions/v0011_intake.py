"""One accepted webhook delivery per event identity (source, event id), enforced by the database.

Revision ID: 0011_intake
Revises: 0010_sched
Create Date: 2026-11-30

Webhook intake records deliveries in batches (group commit) and claims each event by inserting
its accepted delivery row first; this partial unique index makes a concurrent claim of the same
event, in another batch or another process, a conflict rather than a second set of runs. Older
ledgers may hold two accepted rows of one event (two deliveries with different content raced
before); the later ones become duplicates, as they would be answered now.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_intake"
down_revision: str | Sequence[str] | None = "0010_sched"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "uq_webhook_deliveries_accepted_event"
_ACCEPTED = sa.text("outcome = 'accepted'")


def upgrade() -> None:
    op.execute(
        "UPDATE webhook_deliveries SET outcome = 'duplicate' WHERE outcome = 'accepted' "
        "AND id NOT IN (SELECT min(id) FROM webhook_deliveries WHERE outcome = 'accepted' "
        "GROUP BY source, event_id)"
    )
    op.create_index(
        _INDEX,
        "webhook_deliveries",
        ["source", "event_id"],
        unique=True,
        postgresql_where=_ACCEPTED,
        sqlite_where=_ACCEPTED,
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="webhook_deliveries")
