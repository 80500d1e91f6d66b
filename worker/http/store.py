"""The intake's own ledger tables: tenant API keys and the webhook delivery log.

Keys are `phk_<id>_<secret>`; only the sha256 of the whole key is stored, so the ledger never
holds a usable key. The delivery log records what arrived and what was answered, never the body.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas.conversation import Conversation
from worker.ledger import Ledger
from worker.ledger.engine import write_transaction
from worker.ledger.tables import api_keys, conversations, webhook_deliveries

KEY_PREFIX = "phk_"


@dataclass(frozen=True)
class ApiKey:
    """A stored key without its secret."""

    id: str
    tenant_id: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class DeliveryRecord:
    """One webhook delivery as logged."""

    id: int
    received_at: datetime
    source: str
    tenant_id: str | None
    event_type: str | None
    event_id: str | None
    signature: str
    status_code: int
    outcome: str
    detail: str | None
    run_ids: list[str]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def create_api_key(
    ledger: Ledger, tenant_id: str, now: datetime, label: str | None = None
) -> tuple[ApiKey, str]:
    """A new key for `tenant_id`: the record, and the key itself (shown once, never stored)."""
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    row = {
        "id": key_id,
        "tenant_id": tenant_id,
        "key_hash": hash_key(key),
        "label": label,
        "created_at": now,
        "revoked_at": None,
    }
    with _write(ledger) as connection:
        connection.execute(sa.insert(api_keys).values(row))
    return ApiKey(key_id, tenant_id, label, now, None), key


def tenant_of_key(ledger: Ledger, key: str) -> str | None:
    """The tenant a live key belongs to, or None for an unknown or revoked key."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    with ledger.engine.connect() as connection:
        row = connection.execute(
            sa.select(api_keys.c.tenant_id).where(
                api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None)
            )
        ).first()
    return None if row is None else str(row.tenant_id)


def list_api_keys(ledger: Ledger, tenant_id: str | None = None) -> list[ApiKey]:
    query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    if tenant_id is not None:
        query = query.where(api_keys.c.tenant_id == tenant_id)
    with ledger.engine.connect() as connection:
        rows = connection.execute(query).all()
    return [ApiKey(r.id, r.tenant_id, r.label, r.created_at, r.revoked_at) for r in rows]


def revoke_api_key(ledger: Ledger, key_id: str, now: datetime) -> bool:
    """Revoke a key by id; False when no live key has that id."""
    with _write(ledger) as connection:
        result = connection.execute(
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    return bool(result.rowcount)


def list_deliveries(
    ledger: Ledger,
    *,
    source: str | None = None,
    statuses: Sequence[int] = (),
    limit: int = 100,
) -> list[DeliveryRecord]:
    query = sa.select(webhook_deliveries).order_by(webhook_deliveries.c.id.desc()).limit(limit)
    if source is not None:
        query = query.where(webhook_deliveries.c.source == source)
    if statuses:
        query = query.where(webhook_deliveries.c.status_code.in_(list(statuses)))
    with ledger.engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        DeliveryRecord(
            id=r.id,
            received_at=r.received_at,
            source=r.source,
            tenant_id=r.tenant_id,
            event_type=r.event_type,
            event_id=r.event_id,
            signature=r.signature,
            status_code=r.status_code,
            outcome=r.outcome,
            detail=r.detail,
            run_ids=list(r.run_ids or []),
        )
        for r in rows
    ]


def _write(ledger: Ledger) -> AbstractContextManager[Connection]:
    return write_transaction(ledger.engine)


def find_conversation(
    ledger: Ledger, tenant_id: str, conversation_id: str
) -> tuple[int, Conversation] | None:
    """A tenant's stored conversation by its id, with its ledger key; None when absent."""
    with ledger.engine.connect() as connection:
        row = connection.execute(
            sa.select(conversations.c.id, conversations.c.payload).where(
                conversations.c.tenant_id == tenant_id,
                conversations.c.conversation_id == conversation_id,
            )
        ).first()
    if row is None:
        return None
    return int(row.id), Conversation.model_validate(row.payload)
