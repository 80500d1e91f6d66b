"""Helpers shared by the benchmarks: inputs, statistics, and the fake Messages API in a child
process.

Not a benchmark itself: `.ci/run` runs every file in `benchmarks/` with `--smoke`, so running
this module as a script does nothing and exits 0.

The fake server runs in a separate (spawned) process when a benchmark measures CPU time, so
that `time.process_time()` in the benchmark's own process counts only the client side: the SDK,
the adapter and the runtime, never uvicorn, SSE rendering or the cache simulation.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import httpx2

from analyzers.definitions.loading import load_paths
from analyzers.fakes import FakeMessagesAPI, Responder, serve_fake_messages_api
from schemas import AnalyzerSpec, Conversation

ROOT = Path(__file__).resolve().parents[1]
CONVERSATIONS = ROOT / "examples" / "conversations"
BUILTINS = ROOT / "analyzers" / "builtin"
BUILTIN_NAMES = ("next_steps", "follow_ups", "quality")
MODEL = "claude-sonnet-5-5"
"""The runtime's default model; every built-in uses it."""

JSON = dict[str, Any]
Http = Literal["h11", "httptools"]
Loop = Literal["asyncio", "uvloop"]


def example_conversation(name: str) -> Conversation:
    """An example conversation, by file stem."""
    loaded = load_paths([CONVERSATIONS / f"{name}.json"])
    if loaded.problems or len(loaded.conversations) != 1:
        raise RuntimeError(f"cannot load example conversation {name!r}: {loaded.problems}")
    return loaded.conversations[0].value


def builtin_analyzers() -> dict[str, AnalyzerSpec]:
    """The built-in analyzers by name."""
    loaded = load_paths([BUILTINS / f"{name}.yaml" for name in BUILTIN_NAMES])
    if loaded.problems:
        raise RuntimeError(f"cannot load the built-in analyzers: {loaded.problems}")
    return {sourced.value.name: sourced.value for sourced in loaded.analyzers}


def first_turns(conversation: Conversation, count: int) -> Conversation:
    """The conversation cut after its first `count` turns, with the events of those turns."""
    turns = conversation.turns[:count]
    events = [
        event
        for event in conversation.events
        if event.turn_index is None or event.turn_index < count
    ]
    ended_at = conversation.ended_at
    last_at = turns[-1].at if turns else None
    if last_at is not None:
        ended_at = last_at + timedelta(seconds=5)
    data = conversation.model_dump()
    data.update(turns=turns, events=events, ended_at=ended_at)
    return Conversation.model_validate(data)


def median(values: Sequence[float]) -> float:
    """The median of `values` (the machine is shared: medians, not means)."""
    return statistics.median(values)


def verdict(met: bool) -> str:
    """How a benchmark says whether its goal is met."""
    return "MET" if met else "NOT MET"


# -- the raw-HTTP floor of a model call ----------------------------------------------------------


def floor_headers(api_key: str) -> dict[str, str]:
    """The headers the Messages API needs, and nothing the SDK adds for itself."""
    return {
        "x-api-key": api_key,
        "anthropic-version": "2026-10-21",
        "content-type": "application/json",
        "accept": "application/json",
    }


async def raw_http_model_call(
    client: httpx2.AsyncClient, url: str, body: bytes, headers: dict[str, str]
) -> int:
    """The raw-HTTP floor of one streamed model call: one POST of `body` on a keep-alive
    `httpx2.AsyncClient`, the response's SSE `data:` lines parsed as JSON, nothing else (no
    accumulation, no retries, no models). Returns the number of events, so nothing is skipped.

    Benchmarks compare the model adapter's (and the worker's) CPU per call against this, in the
    same process and run, with the same body bytes (`analyzers.model.anthropic.stream_body`).
    """
    events = 0
    async with client.stream("POST", url, content=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"the floor's POST got HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                json.loads(line[5:])
                events += 1
    return events


# -- the fake Messages API in a child process -------------------------------------------------


def _serve(connection: Connection, responder: Responder, http: Http, loop: Loop) -> None:
    """The child process: serve a fake until told to stop; answer commands on `connection`."""
    api = FakeMessagesAPI(responder=responder)
    with serve_fake_messages_api(api, http=http, loop=loop) as base_url:
        connection.send(base_url)
        while True:
            command = connection.recv()
            if command == "stop":
                break
            if command == "request_ids":
                connection.send([recorded.request_id for recorded in api.requests])
            elif command == "bodies":
                connection.send([recorded.body for recorded in api.requests])
            elif command == "reset":
                api.reset()
                connection.send(None)
            else:
                connection.send(RuntimeError(f"unknown command {command!r}"))
    connection.close()


@dataclass
class RemoteFakeAPI:
    """A `FakeMessagesAPI` served by a child process, seen from the benchmark's process."""

    base_url: str
    _connection: Connection

    def _ask(self, command: str) -> Any:
        self._connection.send(command)
        answer = self._connection.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def bodies(self) -> list[JSON]:
        """The body of every request received since the last reset, in order."""
        bodies: list[JSON] = self._ask("bodies")
        return bodies

    def body_digests(self) -> list[str]:
        """A digest of the raw bytes of every request since the last reset (the fake puts the
        first 16 hex digits of the body's sha256 at the end of its request id)."""
        ids: list[str] = self._ask("request_ids")
        return [request_id[-16:] for request_id in ids]

    def reset(self) -> None:
        """Forget recorded requests and the prompt cache."""
        self._ask("reset")


@contextmanager
def fake_api_in_child_process(
    responder: Responder,
    *,
    startup_timeout: float = 60.0,
    http: Http = "httptools",
    loop: Loop = "uvloop",
) -> Iterator[RemoteFakeAPI]:
    """Serve a `FakeMessagesAPI(responder=responder)` from a spawned child process and yield a
    handle on it. `responder` must be a module-level function (it is pickled by name).

    The fake shares the machine's cores with what a benchmark measures, so by default it is
    served with uvicorn's compiled HTTP parser and event loop (`http`, `loop`): less CPU per
    call than the pure-Python defaults of `serve_fake_messages_api`."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=_serve,
        args=(theirs, responder, http, loop),
        name="fake-messages-api",
        daemon=True,
    )
    process.start()
    theirs.close()
    try:
        if not ours.poll(startup_timeout):
            raise RuntimeError("the fake Messages API process did not start in time")
        try:
            base_url: str = ours.recv()
        except EOFError:
            process.join(timeout=5)
            raise RuntimeError(
                f"the fake Messages API process exited at startup (code {process.exitcode})"
            ) from None
        yield RemoteFakeAPI(base_url, ours)
    finally:
        with contextlib.suppress(OSError):  # the child may already be gone
            ours.send("stop")
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()
            process.join(timeout=10)
        process.close()
        ours.close()


if __name__ == "__main__":
    sys.exit(0)  # not a benchmark: see the module docstring
