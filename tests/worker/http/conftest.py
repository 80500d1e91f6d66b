"""Fixtures: an intake over a fresh SQLite ledger with the built-in analyzers, sources for every
platform, and the server on a loopback port. The broker is a list that records what was sent."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.worker.http.payloads import NOW, STANDARD_OLD_SECRET, STANDARD_SECRET
from tests.worker.http.server import Server, serving
from worker.catalog import Catalog
from worker.http.app import Intake
from worker.http.sources import parse_sources
from worker.ledger import Ledger

SOURCES = {
    "el": {"platform": "elevenlabs", "tenant": "acme", "secrets": ["wsec_new"]},
    "rt": {"platform": "retell", "tenant": "acme", "secrets": ["key_old", "key_new"]},
    "rt-ended": {
        "platform": "retell",
        "tenant": "acme",
        "secrets": ["key_new"],
        "events": ["call_ended", "call_analyzed"],
    },
    "vp": {"platform": "vapi", "tenant": "acme", "secrets": ["hmac_new"]},
    "vp-token": {"platform": "vapi", "tenant": "acme", "secrets": ["tok_1"]},
    "std": {
        "platform": "standard",
        "tenant": "beta",
        "secrets": [STANDARD_SECRET, STANDARD_OLD_SECRET],
    },
}


class Enqueued(list[str]):
    def __call__(self, run_ids: Sequence[str]) -> None:
        self.extend(run_ids)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ledger.migrate()
    yield ledger
    ledger.dispose()


@pytest.fixture
def enqueued() -> Enqueued:
    return Enqueued()


@pytest.fixture
def intake(ledger: Ledger, catalog: Catalog, enqueued: Enqueued) -> Intake:
    import json

    return Intake(
        ledger=ledger,
        catalog=catalog,
        enqueue=enqueued,
        sources=parse_sources(json.dumps(SOURCES)),
        max_body_bytes=64 * 1024,
        clock=lambda: NOW,
    )


@pytest.fixture
def server(intake: Intake) -> Iterator[Server]:
    with serving(intake) as running:
        yield running
