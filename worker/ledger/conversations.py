"""Storing conversations: one identity row per (tenant, conversation id), and every distinct
content it was received with as an append-only version.

A re-sent conversation with new content becomes a new version; the same content again is the
version it was the first time. Runs point at the version they were recorded for, so a run queued
before a re-send still analyses what it was recorded for. The identity row keeps a copy of the
newest content for the reads that want "the conversation" (status, retry, the CLI).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas import Conversation
from worker.ledger._sql import upsert_insert
from worker.ledger.errors import ConversationNotFound, LedgerError
from worker.ledger.records import ConversationRef, ConversationVersion
from worker.ledger.tables import conversation_versions, conversations

versions = conversation_versions


def save_conversation(
    connection: Connection, now: datetime, conversation: Conversation
) -> ConversationRef:
    """Store the conversation's content as a version, and make it the current content.

    Race-free: the identity insert does nothing on a (tenant, conversation id) conflict, and the
    identity row is then locked (PostgreSQL; SQLite serialises writers) while the version number
    is chosen, so two concurrent saves never pick the same number or store one content twice.
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
    created_pk = connection.execute(insert).scalar_one_or_none()
    if created_pk is not None:
        pk, changed = created_pk, True
    else:
        current = connection.execute(
            sa.select(conversations.c.id, conversations.c.transcript_hash)
            .where(conversations.c.tenant_id == key[0], conversations.c.conversation_id == key[1])
            .with_for_update()
        ).one()
        pk, changed = current.id, current.transcript_hash != digest
        if changed:
            connection.execute(
                sa.update(conversations)
                .where(conversations.c.id == pk)
                .values(payload=payload, transcript_hash=digest, updated_at=now)
            )
    version_id, version = _version_of(connection, now, pk, digest, payload)
    return ConversationRef(
        pk=pk,
        tenant_id=conversation.tenant_id,
        conversation_id=conversation.conversation_id,
        transcript_hash=digest,
        created=created_pk is not None,
        changed=changed,
        version_id=version_id,
        version=version,
    )


def _version_of(
    connection: Connection, now: datetime, pk: int, digest: str, payload: object
) -> tuple[int, int]:
    """(id, number) of the version with this content, stored now if it is new."""
    found = connection.execute(
        sa.select(versions.c.id, versions.c.version).where(
            versions.c.conversation_pk == pk, versions.c.content_hash == digest
        )
    ).one_or_none()
    if found is not None:
        return found.id, found.version
    newest = connection.execute(
        sa.select(sa.func.max(versions.c.version)).where(versions.c.conversation_pk == pk)
    ).scalar_one_or_none()
    number = (newest or 0) + 1
    version_id = connection.execute(
        sa.insert(versions)
        .values(
            conversation_pk=pk,
            version=number,
            content_hash=digest,
            payload=payload,
            received_at=now,
        )
        .returning(versions.c.id)
    ).scalar_one()
    return version_id, number


def current_version_id(connection: Connection, conversation_pk: int) -> int:
    """The id of the version holding the conversation's current content."""
    row = connection.execute(
        sa.select(versions.c.id)
        .select_from(
            conversations.join(
                versions,
                sa.and_(
                    versions.c.conversation_pk == conversations.c.id,
                    versions.c.content_hash == conversations.c.transcript_hash,
                ),
            )
        )
        .where(conversations.c.id == conversation_pk)
    ).scalar_one_or_none()
    if row is None:
        raise ConversationNotFound(conversation_pk)
    return int(row)


def check_version_belongs(connection: Connection, conversation_pk: int, version_id: int) -> None:
    """LedgerError unless `version_id` is a version of conversation `conversation_pk`."""
    owner = connection.execute(
        sa.select(versions.c.conversation_pk).where(versions.c.id == version_id)
    ).scalar_one_or_none()
    if owner != conversation_pk:
        raise LedgerError(
            f"conversation version {version_id} is not a version of conversation pk "
            f"{conversation_pk}"
            + ("" if owner is None else f" (it belongs to conversation pk {owner})")
        )


def get_conversation(connection: Connection, conversation_pk: int) -> Conversation:
    """The conversation's current (newest received) content, or ConversationNotFound."""
    payload = connection.execute(
        sa.select(conversations.c.payload).where(conversations.c.id == conversation_pk)
    ).scalar_one_or_none()
    if payload is None:
        raise ConversationNotFound(conversation_pk)
    return Conversation.model_validate(payload)


def get_version(connection: Connection, version_id: int) -> Conversation:
    """The content stored as this version, or ConversationNotFound."""
    payload = connection.execute(
        sa.select(versions.c.payload).where(versions.c.id == version_id)
    ).scalar_one_or_none()
    if payload is None:
        raise ConversationNotFound(version_id, what="conversation version")
    return Conversation.model_validate(payload)


def list_versions(connection: Connection, conversation_pk: int) -> list[ConversationVersion]:
    """Every version of the conversation, oldest first (ConversationNotFound if it is unknown)."""
    conversation_identity(connection, conversation_pk)
    rows = connection.execute(
        sa.select(
            versions.c.id,
            versions.c.conversation_pk,
            versions.c.version,
            versions.c.content_hash,
            versions.c.received_at,
        )
        .where(versions.c.conversation_pk == conversation_pk)
        .order_by(versions.c.version)
    )
    return [
        ConversationVersion(
            id=row.id,
            conversation_pk=row.conversation_pk,
            version=row.version,
            content_hash=row.content_hash,
            received_at=row.received_at,
        )
        for row in rows
    ]


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
