"""Analyzers: procedural agents defined as data (a YAML file), not code.

An analyzer says when it runs (trigger), what it is told (instructions and procedures), which
tools it may call, which structured outputs it must record (each one an output-recording tool),
how the model runs (model settings and limits), and where results go (sinks with routing
conditions). Built-in analyzers are YAML files loaded exactly like a user's.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Discriminator, Field, PositiveFloat, PositiveInt, Tag, model_validator

from schemas._base import Contract
from schemas.conversation import Channel, Slug
from schemas.outputs import OUTPUT_MODELS
from schemas.procedure import Name, NonEmptyText
from schemas.rules import RuleViolation, raise_if_any
from schemas.templates import placeholders, root_name

OUTPUT_TOOL_PREFIX = "record_"
"""Output `follow_up` is recorded by calling the tool `record_follow_up`."""


class AnalyzerTrigger(Contract):
    """Which conversations an analyzer runs on. Every given criterion must hold.

    Empty lists match everything. `outcomes` match the conversation's outcome ignoring case,
    spaces, dashes and underscores (`early_disconnect` matches `EarlyDisconnect`). `expression`
    is CEL over the conversation (`outcome`,
    `channel`, `turns`, `events`, `dynamic_variables`, `metadata`, `duration_seconds`, ...).
    `sample_rate` runs the analyzer on that share of matching conversations, decided by a hash of
    the conversation id so that a rerun makes the same choice. `settle_seconds` holds a run back
    that long after the conversation's last update: a conversation re-sent within the window is
    analysed once, on its newest version (the earlier runs are skipped as superseded).
    """

    outcomes: list[Slug] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=list)
    agents: list[str] = Field(default_factory=list)
    tenants: list[str] = Field(default_factory=list)
    expression: NonEmptyText | None = None
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    settle_seconds: float = Field(default=0.0, ge=0.0, le=86_400.0)


HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
"""An HTTP header name: an RFC 9110 token."""


def split_host_port(entry: str) -> tuple[str, int | None, bool]:
    """An `allowed_hosts` entry as (host, port, any_port); `ValueError` when it is malformed.

    `api.example.com` allows the URL scheme's default port only, `api.example.com:8443` that
    port, `api.example.com:*` every port. IPv6 addresses are written in brackets (`[::1]:8080`).
    """
    text = entry.strip().lower()
    if text.count(":") > 1 and not text.startswith("["):
        return text, None, False  # a bare IPv6 address (`::1`): no port can follow it
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r} is not host, host:port or [ipv6]:port")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if colon else None
        if not host or ":" in port_text_or_empty:
            raise ValueError(f"{entry!r} is not host, host:port or [ipv6]:port")
    if port_text is None:
        return host, None, False
    if port_text == "*":
        return host, None, True
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535, or *")
    return host, int(port_text), False


def host_allowed(host: str, port: int, default_port: int, allowed_hosts: list[str]) -> bool:
    """Whether `host:port` (the port already defaulted from the scheme) is in `allowed_hosts`.

    Malformed entries allow nothing (the analyzer's checks report them).
    """
    host = host.lower()
    for entry in allowed_hosts:
        try:
            allowed_host, allowed_port, any_port = split_host_port(entry)
        except ValueError:
            continue
        if allowed_host != host:
            continue
        if any_port or port == (default_port if allowed_port is None else allowed_port):
            return True
    return False


def default_port(scheme: str) -> int:
    """The port a URL of `scheme` uses when it names none."""
    return 80 if scheme.lower() == "http" else 443


class HttpTool(Contract):
    """A tool the agent may call that makes one HTTP request.

    `url`, `headers` and `body` are templates: `{{name}}` is filled from the tool input the
    model gives (described by `input_schema`) and `{{secrets.NAME}}` from the worker's secrets,
    which never reach the model or the logs. The request may only go to `allowed_hosts`
    (`host` for the scheme's default port, `host:port`, or `host:*` for any port).

    `effect` says whether a call changes something remotely (`write`, the default for every
    method but GET) or only reads (`read`). A write carries an idempotency key in the
    `idempotency_header`, and its outcome is recorded so that a retried run replays it instead
    of calling again; an analyzer with `dry_run` describes its writes instead of making them.
    """

    name: Name
    description: NonEmptyText
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: NonEmptyText
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    allowed_hosts: list[NonEmptyText] = Field(min_length=1)
    timeout_seconds: PositiveFloat = 10.0
    not_found_is_null: bool = Field(
        default=True,
        description="A 404, an empty body or a JSON null body is the result null (a lookup that "
        "found nothing), not a failure. Set false when those mean the call failed.",
    )
    effect: Literal["read", "write"] = "read"
    idempotency_header: Annotated[str, Field(pattern=HEADER_NAME_PATTERN, max_length=100)] = (
        "Idempotency-Key"
    )

    @model_validator(mode="before")
    @classmethod
    def _effect_follows_the_method(cls, data: Any) -> Any:
        # Not given: a GET only reads, every other method may change something remotely.
        if isinstance(data, dict) and data.get("effect") is None:
            data = {**data, "effect": "read" if data.get("method", "GET") == "GET" else "write"}
        return data


def _tool_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "builtin"
    if isinstance(value, dict | HttpTool):
        return "http"
    return None


ToolRef = Annotated[
    Annotated[Name, Tag("builtin"), Field(description="A built-in tool, by name.")]
    | Annotated[HttpTool, Tag("http")],
    Discriminator(
        _tool_kind,
        custom_error_type="tool_kind",
        custom_error_message="a tool is a built-in tool's name or an HTTP tool definition",
    ),
]


class OutputSpec(Contract):
    """A structured output the agent records by calling `record_<name>`.

    The value's shape is a JSON Schema (`schema`) or a named built-in model (`model`). `many`
    outputs may be recorded several times; `one` at most once. A `required` output must be
    recorded (possibly as `unknown`) before the run can succeed.
    """

    name: Name
    description: NonEmptyText
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    model: str | None = None
    cardinality: Literal["one", "many"] = "one"
    required: bool = True

    @model_validator(mode="after")
    def _one_source_of_shape(self) -> OutputSpec:
        if (self.json_schema is None) == (self.model is None):
            raise ValueError("give exactly one of 'schema' (a JSON Schema) or 'model'")
        if self.model is not None and self.model not in OUTPUT_MODELS:
            raise ValueError(
                f"model {self.model!r} is not a built-in output model "
                f"(known: {sorted(OUTPUT_MODELS)})"
            )
        return self

    @property
    def tool_name(self) -> str:
        """The output-recording tool's name."""
        return OUTPUT_TOOL_PREFIX + self.name

    def value_schema(self) -> dict[str, Any]:
        """The JSON Schema of one recorded value (a fresh copy the caller may change)."""
        if self.json_schema is not None:
            return copy.deepcopy(self.json_schema)
        schema: dict[str, Any] = json.loads(_output_model_schema(str(self.model)))
        return schema


@functools.cache
def _output_model_schema(name: str) -> str:
    # Generating a pydantic model's JSON Schema is slow; it never changes within a process.
    return json.dumps(OUTPUT_MODELS[name].model_json_schema())


class ModelSettings(Contract):
    """How the model runs for this analyzer, and the limits of one run."""

    id: str | None = Field(default=None, description="Model id; the worker's default if unset.")
    thinking: Literal["adaptive", "enabled", "disabled"] = "adaptive"
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    budget_tokens: int | None = Field(default=None, ge=1024)
    max_tokens: PositiveInt = 16_000
    max_turns: PositiveInt = Field(default=24, description="Model calls in one run.")
    max_output_retries: int = Field(
        default=3, ge=0, description="Invalid output-tool inputs sent back to the model."
    )
    max_nudges: int = Field(
        default=2, ge=0, description="Times to ask again when required outputs are missing."
    )
    timeout_seconds: PositiveFloat = Field(default=900.0, description="Deadline of one run.")
    idle_timeout_seconds: PositiveFloat = Field(
        default=300.0, description="How long a model stream may be silent."
    )
    max_cost_usd: PositiveFloat | None = None
    max_input_tokens: PositiveInt | None = Field(
        default=None,
        description="Read conversations longer than this in windows (default: the model's limit).",
    )

    @model_validator(mode="after")
    def _budget_fits(self) -> ModelSettings:
        if self.budget_tokens is not None:
            if self.thinking != "enabled":
                raise ValueError("budget_tokens applies only with thinking: enabled")
            if self.budget_tokens >= self.max_tokens:
                raise ValueError(
                    f"budget_tokens ({self.budget_tokens}) must be below max_tokens "
                    f"({self.max_tokens})"
                )
        return self


class _SinkBase(Contract):
    when: NonEmptyText | None = Field(
        default=None,
        description="CEL over the result (`status`, `outputs`, `conversation`); always if unset.",
    )


class SlackSink(_SinkBase):
    """Post a message to a Slack channel."""

    type: Literal["slack"]
    channel: NonEmptyText
    mention: list[str] = Field(default_factory=list, description="User or group ids to mention.")


class WebhookSink(_SinkBase):
    """POST the result as JSON, signed per Standard Webhooks."""

    type: Literal["webhook"]
    url: NonEmptyText
    secret: str | None = Field(
        default=None,
        description="`{{secrets.NAME}}`: the signing secret's name; the secret may hold several "
        "secrets separated by spaces while they rotate.",
    )
    mapping: dict[str, Any] | None = Field(
        default=None,
        description='A JSON template of the body: "{{path.to.field}}" strings take that value of '
        "the payload (`type`, `timestamp`, `data`: the result).",
    )
    timeout_seconds: float = Field(default=15.0, gt=0, le=60)


class JsonlSink(_SinkBase):
    """Append the result to a JSON Lines file."""

    type: Literal["jsonl"]
    path: NonEmptyText


SinkRoute = Annotated[SlackSink | WebhookSink | JsonlSink, Field(discriminator="type")]


class ChainAfter(Contract):
    """Run this analyzer after another one on the same conversation: a cheap triage first, the
    expensive agent only where it flags something.

    The child run is recorded in the transaction that completes a succeeded run of `analyzer`
    (its newest version runs), when `when` (CEL over that run's result: `status`, `outputs`,
    `conversation`, as in sink routing) holds; always when `when` is unset. The parent's
    outputs are in the child's brief. A chained analyzer is not triggered by conversations
    itself; its own `trigger` must still match. Cycles are refused at load.
    """

    analyzer: Name
    when: NonEmptyText | None = None


class AnalyzerSpec(Contract):
    """A procedural agent: when it runs, what it does, what it must output, where that goes."""

    kind: Literal["analyzer"] = "analyzer"
    name: Name
    version: Annotated[str, Field(min_length=1, max_length=64)] = "1"
    description: NonEmptyText
    input: Literal["conversation", "results"] = Field(
        default="conversation",
        description="`conversation`: runs on each conversation its trigger matches. `results`: "
        "a standalone analyzer, run by a schedule over the stored results of a tenant and time "
        "range (with the read-only tools `query_results` and `get_conversation`); its trigger "
        "is not used.",
    )
    trigger: AnalyzerTrigger = Field(default_factory=AnalyzerTrigger)
    after: ChainAfter | None = None
    instructions: NonEmptyText
    procedures: list[Name] = Field(default_factory=list)
    review_procedures: bool = Field(
        default=False,
        description="Show the agent's procedures for this conversation (named in its event log, "
        "or whose trigger matches it) as the standard to judge the agent against; the analyzer "
        "does not follow them itself. For reviews such as `quality`.",
    )
    tools: list[ToolRef] = Field(default_factory=list)
    outputs: list[OutputSpec] = Field(min_length=1)
    model: ModelSettings = Field(default_factory=ModelSettings)
    sinks: list[SinkRoute] = Field(default_factory=list)
    dry_run: bool = False
    """Describe HTTP writes (method, URL, body) to the model and trace instead of making them."""

    @model_validator(mode="after")
    def _check_rules(self) -> AnalyzerSpec:
        raise_if_any(analyzer_violations(self))
        return self

    def tool_names(self) -> list[str]:
        """Names of the tools this analyzer may call (not counting output-recording tools)."""
        return [tool if isinstance(tool, str) else tool.name for tool in self.tools]

    def http_tools(self) -> list[HttpTool]:
        """The HTTP tools among this analyzer's tools."""
        return [tool for tool in self.tools if isinstance(tool, HttpTool)]


def analyzer_violations(spec: AnalyzerSpec) -> list[RuleViolation]:
    """Rules spanning several fields of one analyzer file."""
    violations: list[RuleViolation] = []
    violations += _duplicates("outputs", [output.name for output in spec.outputs], "output")
    violations += _duplicates("tools", spec.tool_names(), "tool")
    violations += _duplicates("procedures", spec.procedures, "procedure")
    for index, name in enumerate(spec.tool_names()):
        if name.startswith(OUTPUT_TOOL_PREFIX):
            violations.append(
                RuleViolation(
                    ("tools", index),
                    "tool-name-reserved",
                    f"tool {name!r}: names starting with {OUTPUT_TOOL_PREFIX!r} are reserved "
                    "for output-recording tools",
                )
            )
    for index, tool in enumerate(spec.tools):
        if isinstance(tool, HttpTool):
            violations += _http_tool_violations(index, tool)
    return violations


def _duplicates(field: str, names: list[str], what: str) -> list[RuleViolation]:
    return [
        RuleViolation((field,), "name-unique", f"{what} {name!r} appears more than once")
        for name in sorted({name for name in names if names.count(name) > 1})
    ]


def _http_tool_violations(index: int, tool: HttpTool) -> list[RuleViolation]:
    violations: list[RuleViolation] = []
    for position, entry in enumerate(tool.allowed_hosts):
        try:
            split_host_port(entry)
        except ValueError as exc:
            violations.append(
                RuleViolation(
                    ("tools", index, "allowed_hosts", position), "tool-host-entry", str(exc)
                )
            )
    parts = urlsplit(tool.url)
    if "{{" in (parts.netloc or ""):
        violations.append(
            RuleViolation(
                ("tools", index, "url"),
                "tool-host-fixed",
                f"the host of {tool.url!r} must be written out, not a placeholder",
            )
        )
    elif not _url_host_allowed(tool.url, tool.allowed_hosts):
        violations.append(
            RuleViolation(
                ("tools", index, "url"),
                "tool-host-allowed",
                f"host {parts.hostname!r} of {tool.url!r} is not in allowed_hosts "
                f"{tool.allowed_hosts} (an entry without a port allows the scheme's default "
                "port only; write host:port or host:* for others)",
            )
        )
    inputs = set((tool.input_schema.get("properties") or {}).keys())
    for field, template in (("url", tool.url), ("headers", tool.headers), ("body", tool.body)):
        for path in placeholders(template):
            root = root_name(path)
            if root != "secrets" and root not in inputs:
                violations.append(
                    RuleViolation(
                        ("tools", index, field),
                        "template-undeclared",
                        f"placeholder {{{{{path}}}}} is not a property of input_schema "
                        f"(known: {sorted(inputs)}) nor a {{{{secrets.NAME}}}}",
                    )
                )
    return violations


def _url_host_allowed(url: str, allowed_hosts: list[str]) -> bool:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.hostname is None:
        return False
    fallback = default_port(parts.scheme)
    return host_allowed(parts.hostname, port or fallback, fallback, allowed_hosts)
