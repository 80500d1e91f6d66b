"""Analyzer snapshots in the ledger: stored once per content hash, read back by the worker.

A snapshot's key is its own `spec_hash`, recomputed here from the content rather than trusted,
so a row can never hold content that does not match its key. That makes a snapshot row
immutable, so a worker process keeps the ones it parsed (`cached_snapshot`): parsing one is
milliseconds of CPU, and every run of an analyzer executes the same few.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas.snapshot import AnalyzerSnapshot
from worker.ledger._sql import upsert_insert
from worker.ledger.errors import SnapshotNotFound
from worker.ledger.tables import analyzer_snapshots

CACHED_SNAPSHOTS = 256
_cache: OrderedDict[str, AnalyzerSnapshot] = OrderedDict()
_cache_lock = threading.Lock()


def save_snapshot(connection: Connection, now: datetime, snapshot: AnalyzerSnapshot) -> str:
    """Store the snapshot unless a snapshot with its hash is stored already; return the hash."""
    spec_hash = snapshot.spec_hash()
    connection.execute(
        upsert_insert(connection, analyzer_snapshots)
        .values(
            spec_hash=spec_hash,
            analyzer=snapshot.analyzer,
            analyzer_version=snapshot.analyzer_version,
            snapshot=snapshot.model_dump(mode="json", by_alias=True),
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["spec_hash"])
    )
    return spec_hash


def get_snapshot(connection: Connection, spec_hash: str) -> AnalyzerSnapshot:
    """The snapshot stored under `spec_hash`, or SnapshotNotFound."""
    stored = connection.execute(
        sa.select(analyzer_snapshots.c.snapshot).where(analyzer_snapshots.c.spec_hash == spec_hash)
    ).scalar_one_or_none()
    if stored is None:
        raise SnapshotNotFound(spec_hash)
    return AnalyzerSnapshot.model_validate(stored)


def cached_snapshot(connection: Connection, spec_hash: str) -> AnalyzerSnapshot:
    """`get_snapshot`, from this process's cache of the most recently used ones when it can.

    Safe because a row's content is its key (see the module docstring); a missing snapshot is
    never cached, so one stored later is found.
    """
    found = remembered_snapshot(spec_hash)
    if found is not None:
        return found
    snapshot = get_snapshot(connection, spec_hash)
    with _cache_lock:
        _cache[spec_hash] = snapshot
        while len(_cache) > CACHED_SNAPSHOTS:
            _cache.popitem(last=False)
    return snapshot


def remembered_snapshot(spec_hash: str) -> AnalyzerSnapshot | None:
    """The snapshot if this process's cache holds it (no database needed), else None."""
    with _cache_lock:
        found = _cache.get(spec_hash)
        if found is not None:
            _cache.move_to_end(spec_hash)
        return found
