"""The one settings object. Built once at the edge (CLI, Celery app); nothing below reads the
environment. Every field can be set as `POSTHOC_<FIELD>`; the Anthropic SDK's own
`ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL` are honoured too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from analyzers.definitions.limits import DEFAULT_LIMITS, InputLimits

DATA_DIR = Path("posthoc-data")
SECRET_PREFIX = "POSTHOC_SECRET_"  # noqa: S105 - a name prefix, not a secret


class Settings(BaseSettings):
    """How a posthoc process runs. Defaults run everything embedded in `./posthoc-data`."""

    model_config = SettingsConfigDict(env_prefix="POSTHOC_", extra="ignore", frozen=True)

    database_url: str = Field(
        default=f"sqlite:///{DATA_DIR}/posthoc.sqlite3",
        description="The ledger: a SQLite file (embedded) or postgresql+psycopg://...",
    )
    broker_url: str = Field(
        default=f"sqla+sqlite:///{DATA_DIR}/broker.sqlite3",
        description="Celery broker: redis://..., amqp://... or the embedded SQLite queue.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for the fleet-wide model rate limit; defaults to a redis:// broker.",
    )
    concurrency: int = Field(default=200, ge=1, le=2000, description="Analyses in flight.")
    processes: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="`posthoc worker`: worker processes on this node, sharing `concurrency` "
        "(default: the number of cores).",
    )
    worker_index: int | None = Field(
        default=None,
        ge=0,
        description="Set by `posthoc worker --processes N` for its children (0..N-1); "
        "not for hand use.",
    )
    model: str = Field(default="claude-sonnet-5-5", description="Default model id.")
    analyzer_dirs: list[Path] = Field(default_factory=list)
    procedure_dirs: list[Path] = Field(default_factory=list)
    schedule_dirs: list[Path] = Field(
        default_factory=list, description="Folders (or files) of `kind: schedule` YAML for beat."
    )
    beat_lease_seconds: int = Field(
        default=30,
        ge=2,
        description="`posthoc beat`: the scheduler lease; another beat takes "
        "over this long after the holder stops renewing it.",
    )
    beat_tick_seconds: float = Field(
        default=5.0, gt=0, description="`posthoc beat`: the longest sleep between two ticks."
    )
    builtin_analyzers: bool = Field(default=True, description="Load the built-in analyzers.")
    lease_seconds: int = Field(default=120, ge=10, description="A claimed run's lease.")
    heartbeat_seconds: int = Field(default=30, ge=1, description="How often leases renew.")
    start_jitter_seconds: float = Field(
        default=0.25,
        ge=0,
        le=60,
        description="`posthoc worker`: each run waits up to this long (at random) before it "
        "starts, so runs delivered together do not reach every model turn together.",
    )
    max_attempts: int = Field(default=5, ge=1, description="Attempts before a run dead-letters.")
    sweep_interval_seconds: int = Field(default=60, ge=1)
    stale_queued_seconds: int = Field(
        default=300, ge=1, description="Re-enqueue queued runs nobody claimed for this long."
    )
    retry_base_seconds: float = Field(default=10.0, gt=0)
    retry_max_seconds: float = Field(default=900.0, gt=0)
    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Fleet-wide model requests per minute, per model."
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Fleet-wide input tokens per minute, per model."
    )
    visibility_timeout_seconds: int = Field(
        default=3600, ge=1, description="Redis broker: when an unacked message is redelivered."
    )
    queue: str = Field(
        default="posthoc.runs",
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The broker queue that carries run ids (one per fleet sharing a broker).",
    )
    max_file_bytes: int = Field(
        default=DEFAULT_LIMITS.max_file_bytes, ge=1, description="A YAML or .json file read whole."
    )
    max_line_bytes: int = Field(
        default=DEFAULT_LIMITS.max_line_bytes, ge=1, description="One line of a .jsonl file."
    )
    max_depth: int = Field(
        default=DEFAULT_LIMITS.max_depth, ge=2, le=500, description="Nesting of objects/arrays."
    )
    max_number_chars: int = Field(
        default=DEFAULT_LIMITS.max_number_chars, ge=1, le=4000, description="One number literal."
    )
    max_string_chars: int = Field(default=DEFAULT_LIMITS.max_string_chars, ge=1)
    max_turns: int = Field(default=DEFAULT_LIMITS.max_turns, ge=1)
    max_events: int = Field(default=DEFAULT_LIMITS.max_events, ge=1)
    max_yaml_nodes: int = Field(
        default=DEFAULT_LIMITS.max_yaml_nodes,
        ge=1,
        description="A YAML document, aliases expanded.",
    )
    max_schema_nodes: int = Field(default=DEFAULT_LIMITS.max_schema_nodes, ge=1)
    max_expression_nesting: int = Field(
        default=DEFAULT_LIMITS.max_expression_nesting, ge=1, description="Nested CEL macros."
    )
    expression_budget: int = Field(
        default=DEFAULT_LIMITS.expression_budget, ge=1, description="Steps of one CEL evaluation."
    )
    webhook_sources: str | None = Field(
        default=None,
        description="`posthoc serve` webhook sources: a JSON object (source name -> "
        "{platform, tenant, secrets, events?}) or the path of a YAML or JSON file holding one.",
    )
    max_body_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="Largest request body `posthoc serve` reads."
    )
    procedure_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="`posthoc serve`: how long a tenant's procedures read from the store are "
        "reused when planning runs (a procedure approved elsewhere applies within this time; "
        "0 reads them for every request).",
    )
    health_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="`posthoc worker`: serve GET /healthz here (200 only while consuming).",
    )
    health_host: str = Field(default="127.0.0.1", description="Where the health port listens.")
    shutdown_drain_seconds: float = Field(
        default=60.0,
        ge=0,
        description="`posthoc worker` on SIGTERM: how long analyses in flight may finish "
        "before they are handed back to the queue (keep the supervisor's grace period above).",
    )
    heartbeat_file: Path | None = Field(
        default=None, description="`posthoc worker`: touched every second while consuming."
    )
    not_consuming_exit_seconds: int = Field(
        default=300,
        ge=5,
        description="A worker that has not consumed for this long exits (status 75) to be "
        "restarted by its supervisor.",
    )
    consumer_stall_seconds: int = Field(
        default=15,
        ge=2,
        description="A consumer that stalls with free slots (its prefetch window stuck full, or "
        "no task started for this long while work waits for it) reconnects.",
    )
    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PROMETHEUS_MULTIPROC_DIR", "POSTHOC_PROMETHEUS_MULTIPROC_DIR"
        ),
        description="prometheus_client's multiprocess directory (its own variable, which it "
        "reads at import): set for a worker of several processes, one empty directory each.",
    )
    tracing: Literal["off", "otlp", "console"] = Field(
        default="off",
        description="OpenTelemetry spans per run, model turn and tool call (needs the `otel` "
        "extra); `otlp` exports to OTEL_EXPORTER_OTLP_ENDPOINT, `console` prints them.",
    )
    rabbitmq_queue_type: Literal["classic", "quorum"] = Field(
        default="classic",
        description="RabbitMQ: the type the run queues are declared with (quorum in a fleet).",
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("POSTHOC_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
    )
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("POSTHOC_ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL"),
    )
    model_http_client: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp",
        description="The model adapter's HTTP transport: aiohttp (the SDK's aiohttp client, "
        "about half the CPU per call) or httpx (the SDK's default client), as a fallback.",
    )

    slack_bot_token: SecretStr | None = Field(
        default=None, description="Bot token (xoxb-...) for Slack sinks; needs chat:write."
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack Web API base URL (tests: the fake)."
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        description="`posthoc serve`: the Slack app's signing secret, checked on every "
        "request to POST /v1/slack/interactions (the procedure review buttons).",
    )
    procedure_review_channel: str | None = Field(
        default=None,
        description="Slack channel for the review messages of pending (learned) procedures.",
    )
    conversation_url_template: str | None = Field(
        default=None,
        description="Link shown in Slack, e.g. https://cx.example.com/{tenant_id}/{conversation_id}",
    )
    delivery_max_attempts: int = Field(default=8, ge=1, description="Before a dead letter.")
    delivery_lease_seconds: int = Field(default=120, ge=5)
    delivery_sweep_seconds: float = Field(
        default=10.0, gt=0, description="How often parked delivery retries are woken."
    )
    delivery_retry_base_seconds: float = Field(default=5.0, gt=0)
    delivery_retry_max_seconds: float = Field(default=3600.0, gt=0)

    def input_limits(self) -> InputLimits:
        """The input limits, as the plain object the loaders below `worker/` take."""
        return InputLimits(
            max_file_bytes=self.max_file_bytes,
            max_line_bytes=self.max_line_bytes,
            max_depth=self.max_depth,
            max_number_chars=self.max_number_chars,
            max_string_chars=self.max_string_chars,
            max_turns=self.max_turns,
            max_events=self.max_events,
            max_yaml_nodes=self.max_yaml_nodes,
            max_schema_nodes=self.max_schema_nodes,
            max_expression_nesting=self.max_expression_nesting,
            expression_budget=self.expression_budget,
        )

    @property
    def rate_limit_redis_url(self) -> str | None:
        """Where the shared rate limit lives: `redis_url`, else a Redis broker, else nowhere."""
        if self.redis_url:
            return self.redis_url
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else None


def tool_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Secrets for HTTP tools: `POSTHOC_SECRET_CRM_TOKEN` is `{{secrets.CRM_TOKEN}}`."""
    source = os.environ if environ is None else environ
    return {
        name.removeprefix(SECRET_PREFIX): value
        for name, value in source.items()
        if name.startswith(SECRET_PREFIX)
    }
