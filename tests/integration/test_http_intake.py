"""Webhook intake on PostgreSQL with the real broker: a signed delivery is durable and queued on
Redis / RabbitMQ before the 202, and concurrent redeliveries of one event record one set of runs."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.conftest import Broker
from tests.worker.http.payloads import body_of, retell_headers, retell_payload
from tests.worker.http.server import serving
from worker.catalog import Catalog
from worker.engine.celery_app import create_celery, enqueue_with
from worker.http import store
from worker.http.app import Intake
from worker.http.sources import parse_sources
from worker.ledger import Ledger
from worker.ledger.tables import analysis_runs
from worker.settings import Settings

pytestmark = pytest.mark.integration
SOURCES = {"rt": {"platform": "retell", "tenant": "acme", "secrets": ["key_new"]}}


def test_concurrent_redeliveries_record_one_set_of_runs_on_postgres(
    ledger: Ledger, broker: Broker
) -> None:
    celery = create_celery(Settings(broker_url=broker.url, queue=broker.queue))
    intake = Intake(
        ledger=ledger,
        catalog=Catalog.load(),
        enqueue=enqueue_with(celery),
        sources=parse_sources(json.dumps(SOURCES)),
    )
    body = body_of(retell_payload("call-pg"))
    headers = retell_headers(body, "key_new", at=time.time())
    with serving(intake) as server, ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: server.request("POST", "/v1/webhooks/rt", body, headers), range(8))
        )
    statuses = sorted(a.status for a in answers)
    assert 202 in statuses
    assert set(statuses) <= {200, 202}
    assert len({tuple(a.body["run_ids"]) for a in answers}) == 1
    with ledger.engine.connect() as connection:
        runs = connection.execute(sa.select(analysis_runs.c.id)).scalars().all()
    assert sorted(runs) == sorted(answers[0].body["run_ids"])
    queued = [run for run in runs if ledger.get_run(run).status == "queued"]
    with celery.connection_for_read() as connection:
        channel: Any = connection.default_channel
        waiting = channel.queue_declare(broker.queue, passive=True).message_count
    celery.close()
    assert waiting == len(queued)
    log = store.list_deliveries(ledger, source="rt")
    assert len(log) == 8
    assert sum(d.outcome == "accepted" for d in log) == statuses.count(202)
