"""A fake Slack Web API over real HTTP, for driving the real `slack_sdk` `WebClient`.

    slack = FakeSlack(token="xoxb-test")
    with serve_fake_slack(slack) as base_url:           # "http://127.0.0.1:PORT/api/"
        client = WebClient(token="xoxb-test", base_url=base_url)
        slack.fail_next("chat.postMessage", AcceptThenDrop())
        ...
    slack.messages("#escalations"); slack.duplicates()

Blocks may be `header`, `section`, `context` and `actions` (buttons, checked against Slack's
limits); `signed_interaction` and `block_actions_payload` build the signed request Slack sends
to an app when someone clicks a button.

It answers `auth.test`, `chat.postMessage` (with `metadata`, `thread_ts`), `chat.update`,
`conversations.history`, `conversations.replies`, `conversations.list`, and incoming-webhook
URLs (`/services/...`, answering the text `ok`) the way Slack does where it matters for
exactly-once delivery:

- messages get a `ts` unique in their channel, and answers name the channel by id (`C…`);
- `conversations.history` lists top-level messages newest first (`replies`: a thread, oldest
  first) and includes each message's `metadata` **only** with `include_all_metadata=true`, as
  Slack does;
- a message whose blocks break a Block Kit limit is refused (`invalid_blocks`,
  `msg_too_long`) like Slack refuses it;
- faults: HTTP 429 with `Retry-After`, HTTP 500, a refusal (`ok: false`), and accept-then-drop
  (the post is stored, then the connection is closed without an answer: the case where a blind
  retry posts twice).

It counts duplicates: messages that carry the same `delivery_id` in their metadata.
The server is the standard library's threading HTTP server, so a fault can close the socket at
exactly the moment it wants to.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from worker.sinks.render import (
    MAX_ACTION_ELEMENTS,
    MAX_ACTION_ID_CHARS,
    MAX_BLOCKS,
    MAX_BUTTON_TEXT_CHARS,
    MAX_BUTTON_VALUE_CHARS,
    MAX_CONTEXT_ELEMENTS,
    MAX_FIELD_CHARS,
    MAX_FIELDS_PER_SECTION,
    MAX_HEADER_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_SECTION_CHARS,
    MAX_TEXT_CHARS,
)

METADATA_DELIVERY_KEY = "delivery_id"
INCOMING_WEBHOOK_CHANNEL = "#incoming"
"""The channel the fake's incoming-webhook URLs (`{base}/services/...`) post to."""


@dataclass(frozen=True)
class RateLimited:
    """HTTP 429 with `Retry-After: seconds`; nothing is stored."""

    retry_after: int = 1


@dataclass(frozen=True)
class ServerError:
    """HTTP 500; nothing is stored."""


@dataclass(frozen=True)
class AcceptThenDrop:
    """The request is carried out, then the connection closes without an answer."""


@dataclass(frozen=True)
class Refused:
    """HTTP 200 with `ok: false` and this error (a permanent refusal); nothing is stored."""

    error: str = "is_archived"


Fault = RateLimited | ServerError | AcceptThenDrop | Refused


@dataclass
class StoredMessage:
    channel: str
    ts: str
    text: str
    blocks: list[Any]
    thread_ts: str | None
    metadata: dict[str, Any] | None
    edits: int = 0

    def as_api(self, *, with_metadata: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text}
        data["blocks"] = self.blocks
        if self.thread_ts:
            data["thread_ts"] = self.thread_ts
        if with_metadata and self.metadata is not None:
            data["metadata"] = self.metadata
        return data


@dataclass
class FakeSlack:
    """The fake workspace: channels, messages, scripted faults, and every call received."""

    token: str = "xoxb-fake"  # noqa: S105 - the fake's own test token
    fault_plan: Callable[[str, Mapping[str, Any]], Fault | None] | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _messages: list[StoredMessage] = field(default_factory=list)
    _channel_ids: dict[str, str] = field(default_factory=dict)
    _scripted: dict[str, list[Fault]] = field(default_factory=dict)
    _clock: int = 1_764_000_000_000_000
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, method: str, *faults: Fault) -> None:
        """The next calls of `method` meet these faults, in order."""
        with self._lock:
            self._scripted.setdefault(method, []).extend(faults)

    def channel_id(self, channel: str) -> str:
        """The id of a channel given by name (`#x` or `x`) or id."""
        name = channel.lstrip("#")
        if name in self._channel_ids.values():
            return name
        return self._channel_ids.setdefault(name, f"C{len(self._channel_ids) + 1:08d}")

    def messages(self, channel: str) -> list[StoredMessage]:
        """Every message in `channel`, oldest first, replies included."""
        with self._lock:
            cid = self.channel_id(channel)
            return [m for m in self._messages if m.channel == cid]

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for name, _ in self.calls if name == method)

    def duplicates(self) -> int:
        """How many messages repeat a (delivery id, part) already posted; 0 when exactly once."""
        with self._lock:
            keys = Counter(
                (payload.get(METADATA_DELIVERY_KEY), payload.get("part"))
                for payload in (
                    (m.metadata or {}).get("event_payload") or {} for m in self._messages
                )
                if payload.get(METADATA_DELIVERY_KEY) is not None
            )
        return sum(n - 1 for n in keys.values())

    def delivered(self, channel: str) -> Counter[str]:
        """Headline messages in `channel` by the delivery id in their metadata."""
        return Counter(
            str(((m.metadata or {}).get("event_payload") or {}).get(METADATA_DELIVERY_KEY))
            for m in self.messages(channel)
            if m.thread_ts is None and m.metadata
        )

    # -- the API -------------------------------------------------------------------------------

    def handle(self, method: str, args: dict[str, Any]) -> tuple[Fault | None, dict[str, Any]]:
        """Carry out one call: (the fault to act out, the JSON answer)."""
        with self._lock:
            self.calls.append((method, args))
            scripted = self._scripted.get(method)
            fault = scripted.pop(0) if scripted else None
        if fault is None and self.fault_plan is not None:
            fault = self.fault_plan(method, args)
        if isinstance(fault, Refused):
            return None, {"ok": False, "error": fault.error}
        if isinstance(fault, RateLimited | ServerError):
            return fault, {
                "ok": False,
                "error": "ratelimited" if isinstance(fault, RateLimited) else "internal_error",
            }
        with self._lock:
            answer = self._carry_out(method, args)
        return fault, answer

    def _carry_out(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "team": "fake", "user": "posthoc", "bot_id": "B0001"}
        if method in {"chat.postMessage", "incoming-webhook"}:
            return self._post(args)
        if method == "chat.update":
            return self._update(args)
        if method == "conversations.history":
            return self._history(args)
        if method == "conversations.replies":
            return self._replies(args)
        if method == "conversations.list":
            channels = [{"id": cid, "name": name} for name, cid in self._channel_ids.items()]
            return {"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}}
        return {"ok": False, "error": "unknown_method"}

    def _post(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        problem = _content_problem(args)
        if problem:
            return {"ok": False, "error": problem}
        cid = self.channel_id(str(args["channel"]))
        thread_ts = args.get("thread_ts")
        if thread_ts and not any(m.ts == thread_ts and m.channel == cid for m in self._messages):
            return {"ok": False, "error": "thread_not_found"}
        self._clock += 1
        ts = f"{self._clock // 1_000_000}.{self._clock % 1_000_000:06d}"
        metadata = _parse_json(args.get("metadata"))
        message = StoredMessage(
            channel=cid,
            ts=ts,
            text=str(args.get("text", "")),
            blocks=_parse_json(args.get("blocks")) or [],
            thread_ts=thread_ts,
            metadata=metadata,
        )
        self._messages.append(message)
        return {"ok": True, "channel": cid, "ts": ts, "message": message.as_api(with_metadata=True)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        cid = self.channel_id(str(args.get("channel", "")))
        found = [m for m in self._messages if m.channel == cid and m.ts == args.get("ts")]
        if not found:
            return {"ok": False, "error": "message_not_found"}
        problem = _content_problem(args)
        if problem:
            return {"ok": False, "error": problem}
        message = found[0]
        message.text = str(args.get("text", message.text))
        message.blocks = _parse_json(args.get("blocks")) or message.blocks
        if args.get("metadata"):
            message.metadata = _parse_json(args["metadata"])
        message.edits += 1
        return {"ok": True, "channel": cid, "ts": message.ts, "text": message.text}

    def _history(self, args: dict[str, Any]) -> dict[str, Any]:
        cid = self.channel_id(str(args.get("channel", "")))
        with_metadata = str(args.get("include_all_metadata", "")).lower() in {"true", "1"}
        limit = max(1, min(999, int(args.get("limit") or 100)))
        oldest = float(args.get("oldest") or 0)
        top = [m for m in reversed(self._messages) if m.channel == cid and m.thread_ts is None]
        top = [m for m in top if float(m.ts) >= oldest]
        return {
            "ok": True,
            "messages": [m.as_api(with_metadata=with_metadata) for m in top[:limit]],
            "has_more": len(top) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
        cid = self.channel_id(str(args.get("channel", "")))
        with_metadata = str(args.get("include_all_metadata", "")).lower() in {"true", "1"}
        parent = str(args.get("ts", ""))
        thread = [m for m in self._messages if m.channel == cid and parent in (m.ts, m.thread_ts)]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        return {
            "ok": True,
            "messages": [m.as_api(with_metadata=with_metadata) for m in thread],
            "has_more": False,
        }


def _parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _content_problem(args: Mapping[str, Any]) -> str | None:
    blocks = _parse_json(args.get("blocks"))
    text = str(args.get("text") or "")
    if not text and not blocks:
        return "no_text"
    if len(text) > MAX_TEXT_CHARS:
        return "msg_too_long"
    if blocks is not None and (not isinstance(blocks, list) or message_problems(text, blocks)):
        return "invalid_blocks"
    return None


def message_problems(text: str, blocks: list[Any]) -> list[str]:
    """Every Block Kit limit `blocks` (and `text`) break, as Slack checks them; [] when fine."""
    problems = []
    if len(text) > MAX_TEXT_CHARS:
        problems.append(f"text has {len(text)} characters")
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks")
    total = 0
    for number, block in enumerate(blocks):
        for content, limit in _block_texts(number, block, problems):
            total += len(content)
            if not content or len(content) > limit:
                problems.append(f"block {number} has a text of {len(content)} characters")
    if total > MAX_MESSAGE_CHARS:
        problems.append(f"blocks hold {total} characters in all")
    return problems


def _block_texts(number: int, block: Any, problems: list[str]) -> list[tuple[str, int]]:
    """The texts of one block with their limits; structural problems go to `problems`."""
    kind = block.get("type") if isinstance(block, dict) else None
    texts: list[tuple[str, int]] = []
    if kind == "header":
        texts.append((block["text"]["text"], MAX_HEADER_CHARS))
    elif kind == "section":
        texts.append((block["text"]["text"], MAX_SECTION_CHARS))
        fields = block.get("fields", [])
        if len(fields) > MAX_FIELDS_PER_SECTION:
            problems.append(f"block {number} has {len(fields)} fields")
        texts += [(f["text"], MAX_FIELD_CHARS) for f in fields]
    elif kind == "context":
        elements = block.get("elements", [])
        if not elements or len(elements) > MAX_CONTEXT_ELEMENTS:
            problems.append(f"block {number} has {len(elements)} elements")
        texts += [(e["text"], MAX_FIELD_CHARS) for e in elements]
    elif kind == "actions":
        problems += _actions_problems(number, block.get("elements"))
    else:
        problems.append(f"block {number} has unknown type {kind!r}")
    return texts


def _actions_problems(number: int, elements: Any) -> list[str]:
    """An `actions` block: 1-25 buttons, each with plain text, an action_id unique in the
    block, and a value within Slack's limits."""
    if not isinstance(elements, list) or not 0 < len(elements) <= MAX_ACTION_ELEMENTS:
        return [f"block {number} has {len(elements) if isinstance(elements, list) else 0} elements"]
    problems = []
    seen: set[str] = set()
    for element in elements:
        if not isinstance(element, dict) or element.get("type") != "button":
            problems.append(f"block {number} has an element that is not a button")
            continue
        label = (element.get("text") or {}).get("text") or ""
        action_id = str(element.get("action_id") or "")
        value = str(element.get("value") or "")
        if not label or len(label) > MAX_BUTTON_TEXT_CHARS:
            problems.append(f"block {number} has a button text of {len(label)} characters")
        if not action_id or len(action_id) > MAX_ACTION_ID_CHARS or action_id in seen:
            problems.append(f"block {number} has a missing, long or repeated action_id")
        if len(value) > MAX_BUTTON_VALUE_CHARS:
            problems.append(f"block {number} has a button value of {len(value)} characters")
        if element.get("style") not in (None, "primary", "danger"):
            problems.append(f"block {number} has a button style {element.get('style')!r}")
        seen.add(action_id)
    return problems


def signed_interaction(
    signing_secret: str, payload: Mapping[str, Any], timestamp: int
) -> tuple[bytes, dict[str, str]]:
    """The body and headers Slack sends to an app's interactivity URL when someone clicks a
    button: `payload=<json>` form-encoded, signed with the app's signing secret."""
    from urllib.parse import urlencode  # noqa: PLC0415

    from slack_sdk.signature import SignatureVerifier  # noqa: PLC0415

    body = urlencode({"payload": json.dumps(payload)}).encode()
    signature = SignatureVerifier(signing_secret).generate_signature(
        timestamp=str(timestamp), body=body
    )
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": str(timestamp),
        "x-slack-signature": signature or "",
    }
    return body, headers


def block_actions_payload(
    message: StoredMessage, action_id: str, *, user_id: str = "U0REVIEW"
) -> dict[str, Any]:
    """What Slack sends when `user_id` clicks the button `action_id` of `message`."""
    buttons = [
        element
        for block in message.blocks
        if isinstance(block, dict) and block.get("type") == "actions"
        for element in block.get("elements", [])
    ]
    [button] = [b for b in buttons if b.get("action_id") == action_id]
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": "reviewer"},
        "team": {"id": "T0FAKE"},
        "channel": {"id": message.channel},
        "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel},
        "message": {"ts": message.ts, "text": message.text},
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "review",
                "value": button.get("value"),
                "action_ts": message.ts,
            }
        ],
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the fake stays quiet
        return

    def do_GET(self) -> None:
        self._serve(dict(parse_qsl(urlsplit(self.path).query)))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        args: dict[str, Any] = dict(parse_qsl(urlsplit(self.path).query))
        if "json" in (self.headers.get("Content-Type") or ""):
            body = _parse_json(raw)
            args.update(body if isinstance(body, dict) else {})
        else:
            args.update(parse_qsl(raw))
        self._serve(args)

    def _serve(self, args: dict[str, Any]) -> None:
        slack = self.server.slack
        if urlsplit(self.path).path.startswith("/services/"):
            self._incoming_webhook(args)
            return
        method = urlsplit(self.path).path.rsplit("/", 1)[-1]
        if self.headers.get("Authorization") != f"Bearer {slack.token}":
            self._answer(200, {"ok": False, "error": "invalid_auth"})
            return
        fault, answer = slack.handle(method, args)
        if isinstance(fault, AcceptThenDrop):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(fault, RateLimited):
            self._answer(429, answer, {"Retry-After": str(fault.retry_after)})
            return
        if isinstance(fault, ServerError):
            self._answer(500, {"ok": False, "error": "internal_error"})
            return
        self._answer(200, answer)

    def _incoming_webhook(self, args: dict[str, Any]) -> None:
        """`/services/...`: an incoming webhook bound to `#incoming`; answers the text `ok`."""
        fault, answer = self.server.slack.handle(
            "incoming-webhook", {**args, "channel": INCOMING_WEBHOOK_CHANNEL}
        )
        if isinstance(fault, RateLimited):
            self._answer(429, {}, {"Retry-After": str(fault.retry_after)})
            return
        if isinstance(fault, ServerError):
            self._answer(500, {})
            return
        data = b"ok" if answer.get("ok") else str(answer.get("error", "invalid")).encode()
        self.send_response(200 if answer.get("ok") else 400)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(
        self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, slack: FakeSlack) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.slack = slack


@contextmanager
def serve_fake_slack(slack: FakeSlack) -> Iterator[str]:
    """Serve `slack` on an ephemeral loopback port; yield the base URL for `WebClient`."""
    server = _Server(slack)
    thread = threading.Thread(target=server.serve_forever, name="fake-slack", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
