"""The fake's Message Batches endpoints, faithful enough for `client.messages.batches.*`.

`POST /v1/messages/batches` takes `{"requests": [{"custom_id", "params"}]}` and answers a
`message_batch` object `in_progress`; every request is validated and answered like a
non-streaming `POST /v1/messages` (same script queue or responder, same prompt cache), and a
request the API would refuse is an `errored` result rather than a failed batch. The batch ends
`batch_seconds` after creation; `GET /v1/messages/batches/{id}` then says `ended` with its
`request_counts` and a `results_url`, and `GET .../results` streams one JSON line per request:
`{"custom_id", "result": {"type": "succeeded", "message"}}` or `{"type": "errored", "error"}`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from analyzers.fakes import validation
from analyzers.fakes.cache import serialisation_memo
from analyzers.fakes.replies import JSON, HttpError
from analyzers.fakes.validation import ApiError

if TYPE_CHECKING:
    from analyzers.fakes.messages_api import FakeMessagesAPI

MAX_REQUESTS = 100_000


@dataclass
class FakeBatch:
    """One batch: when it was made, when it ends, and each request's result line."""

    id: str
    created_at: datetime
    ends_at: float
    results: list[JSON] = field(default_factory=list)

    def ended(self) -> bool:
        return time.monotonic() >= self.ends_at

    def as_json(self, base_url: str) -> JSON:
        ended = self.ended()
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        for line in self.results:
            counts[line["result"]["type"] if ended else "processing"] += 1
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": self.created_at.isoformat(),
            "expires_at": (self.created_at + timedelta(hours=24)).isoformat(),
            "ended_at": datetime.now(UTC).isoformat() if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{base_url}v1/messages/batches/{self.id}/results" if ended else None,
        }


def _errored(custom_id: str, kind: str, message: str) -> JSON:
    error = {"type": "error", "error": {"type": kind, "message": message}, "request_id": None}
    return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}


async def create_batch(api: FakeMessagesAPI, request: Request) -> Response:
    """`POST /v1/messages/batches`."""
    recorded, body = api._record(request, await request.body())
    try:
        validation.check_auth(recorded.headers, api.api_key)
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise validation.invalid("requests: Field required (a list of requests)")
        requests = body["requests"]
        if not 0 < len(requests) <= MAX_REQUESTS:
            raise validation.invalid(f"requests: between 1 and {MAX_REQUESTS} requests")
        ids = [item.get("custom_id") if isinstance(item, dict) else None for item in requests]
        if any(not isinstance(custom_id, str) or not custom_id for custom_id in ids):
            raise validation.invalid("requests: every request needs a custom_id string")
        if len(set(ids)) != len(ids):
            raise validation.invalid("requests: custom_id values must be unique in a batch")
    except ApiError as error:
        return api._error(error, recorded.request_id)
    batch = FakeBatch(
        id=f"msgbatch_{uuid.uuid4().hex[:24]}",
        created_at=datetime.now(UTC),
        ends_at=time.monotonic() + api.batch_seconds,
    )
    for item in requests:
        batch.results.append(_answer(api, recorded, item["custom_id"], item.get("params")))
    api.batches[batch.id] = batch
    return JSONResponse(batch.as_json(str(request.base_url)), headers=_id(recorded))


def _answer(api: FakeMessagesAPI, recorded: Any, custom_id: str, params: Any) -> JSON:
    """One request of the batch, answered as a non-streaming Messages call would be."""
    with serialisation_memo(params):  # the checks, responder and plan share serialisations
        try:
            if isinstance(params, dict) and params.get("stream"):
                raise validation.invalid("params.stream: streaming is not supported in batches")
            checked, profile = api._validate_body(recorded, params)
            scripted = api._next(checked, len(api.requests))
        except ApiError as error:
            return _errored(custom_id, error.error_type, error.message)
        if isinstance(scripted, HttpError):
            return _errored(custom_id, scripted.error_type, scripted.message)
        plan = api.cache.plan(checked)
        built = api._build(scripted, checked, profile, plan, recorded.request_id)
    api.cache.commit(plan)
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": built.message}}


async def retrieve_batch(api: FakeMessagesAPI, request: Request) -> Response:
    """`GET /v1/messages/batches/{batch_id}`."""
    recorded, _ = api._record(request, b"{}")
    batch = api.batches.get(request.path_params["batch_id"])
    try:
        validation.check_auth(recorded.headers, api.api_key)
        if batch is None:
            raise ApiError(404, "not_found_error", "message batch not found")
    except ApiError as error:
        return api._error(error, recorded.request_id)
    return JSONResponse(batch.as_json(str(request.base_url)), headers=_id(recorded))


async def batch_results(api: FakeMessagesAPI, request: Request) -> Response:
    """`GET /v1/messages/batches/{batch_id}/results`: JSON Lines, once the batch ended."""
    recorded, _ = api._record(request, b"{}")
    batch = api.batches.get(request.path_params["batch_id"])
    try:
        validation.check_auth(recorded.headers, api.api_key)
        if batch is None:
            raise ApiError(404, "not_found_error", "message batch not found")
        if not batch.ended():
            raise validation.invalid("the batch has not ended yet; its results are not ready")
    except ApiError as error:
        return api._error(error, recorded.request_id)
    lines = "".join(json.dumps(line) + "\n" for line in batch.results)
    return Response(lines, media_type="application/binary", headers=_id(recorded))


def _id(recorded: Any) -> dict[str, str]:
    return {"request-id": recorded.request_id}
