"""Storing conversations: one row per (tenant, conversation id), replaced only when it changed."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas import Conversation
from worker.ledger._sql import upsert_insert
from worker.ledger.errors import ConversationNotFound
from worker.ledger.records import ConversationRef
from worker.ledger.tables import conversations


def save_conversation(
    connection: Connection, now: datetime, conversation: Conversation
) -> ConversationRef:
    """Insert the conversation, or update the stored one if its transcript hash changed.

    Race-free: the insert does nothing on a (tenant, conversation id) conflict, and the update
    is conditional on the hash differing, so two concurrent saves of the same conversation store
    it once and report it created once.
    """
    payload = conversation.model_dump(mode="json")
    digest = conversation.content_hash()
    key = (conversation.tenant_id, conversation.conversation_id)
    insert = (
        upsert_insert(connection, conversations)
        .values(
            tenant_id=key[0],
            conversation_id=key[1],
            payload=payload,
            transcript_hash=digest,
            received_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "conversation_id"])
        .returning(conversations.c.id)
    )
    same_key = sa.and_(
        conversations.c.tenant_id == key[0], conversations.c.conversation_id == key[1]
    )
    created_pk = connection.execute(insert).scalar_one_or_none()
    if created_pk is not None:
        return _ref(created_pk, conversation, digest, created=True, changed=True)
    updated_pk = connection.execute(
        sa.update(conversations)
        .where(same_key, conversations.c.transcript_hash != digest)
        .values(payload=payload, transcript_hash=digest, updated_at=now)
        .returning(conversations.c.id)
    ).scalar_one_or_none()
    if updated_pk is not None:
        return _ref(updated_pk, conversation, digest, created=False, changed=True)
    pk = connection.execute(sa.select(conversations.c.id).where(same_key)).scalar_one()
    return _ref(pk, conversation, digest, created=False, changed=False)


def _ref(
    pk: int, conversation: Conversation, digest: str, *, created: bool, changed: bool
) -> ConversationRef:
    return ConversationRef(
        pk=pk,
        tenant_id=conversation.tenant_id,
        conversation_id=conversation.conversation_id,
        transcript_hash=digest,
        created=created,
        changed=changed,
    )


def get_conversation(connection: Connection, conversation_pk: int) -> Conversation:
    """The stored conversation, or ConversationNotFound."""
    payload = connection.execute(
        sa.select(conversations.c.payload).where(conversations.c.id == conversation_pk)
    ).scalar_one_or_none()
    if payload is None:
        raise ConversationNotFound(conversation_pk)
    return Conversation.model_validate(payload)


def conversation_identity(connection: Connection, conversation_pk: int) -> tuple[str, str]:
    """(tenant_id, conversation_id) of a stored conversation, or ConversationNotFound."""
    row = connection.execute(
        sa.select(conversations.c.tenant_id, conversations.c.conversation_id).where(
            conversations.c.id == conversation_pk
        )
    ).one_or_none()
    if row is None:
        raise ConversationNotFound(conversation_pk)
    return row.tenant_id, row.conversation_id
