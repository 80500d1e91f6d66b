"""The OpenAPI 3.1 description of `posthoc serve`, served at `/openapi.json` and checked in as
`docs/openapi.json` (a test keeps the two equal). Written out by hand beside the routes in
`app.py`: the request and answer shapes are small, and the conversation schema comes from the
contract itself."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from schemas.conversation import Conversation

_ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "The field and the problem."},
        "field": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["error"],
}
_RUN_IDS = {
    "type": "object",
    "properties": {"run_ids": {"type": "array", "items": {"type": "string"}}},
    "required": ["run_ids"],
}
_RUN = {
    "type": "object",
    "properties": {
        "run_id": {"type": "string"},
        "conversation_id": {"type": "string"},
        "analyzer": {"type": "string"},
        "analyzer_version": {"type": "string"},
        "status": {"enum": ["queued", "running", "succeeded", "failed", "skipped"]},
        "trigger": {"type": "string"},
        "attempts": {"type": "integer"},
        "skip_reason": {"type": ["string", "null"]},
        "error": {"type": ["object", "null"]},
        "result": {"type": ["object", "null"], "description": "The AnalysisResult when done."},
    },
    "required": ["run_id", "analyzer", "status"],
}

_SLACK_INTERACTION = {
    "type": "object",
    "properties": {
        "procedure_id": {"type": "string"},
        "status": {"enum": ["approved", "pending", "rejected"]},
        "changed": {"type": "boolean", "description": "Whether this click decided it."},
        "ignored": {"type": "string", "description": "An interaction that is not a review."},
        "error": {"type": "string"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_PROBLEM = _ref("Problem")
_AUTH: list[dict[str, list[str]]] = [{"apiKey": []}]


def _operation(summary: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **more}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": description,
    }


@cache
def _document() -> dict[str, Any]:
    conversation = Conversation.model_json_schema(
        mode="validation", ref_template="#/components/schemas/{model}"
    )
    definitions = conversation.pop("$defs", {})
    bad = {
        "400": _json(_PROBLEM, "The body is not JSON."),
        "401": _json(_PROBLEM, "Missing, unknown or revoked API key."),
        "413": _json(_PROBLEM, "The body is larger than POSTHOC_MAX_BODY_BYTES."),
        "422": _json(_PROBLEM, "The JSON does not map; the field is named."),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "posthoc",
            "version": "1",
            "description": "Conversation intake, runs and synchronous analyzer invocation.",
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Conversation": conversation,
                **definitions,
                "Problem": _ERROR,
                "RunIds": _RUN_IDS,
                "Run": _RUN,
                "SlackInteraction": _SLACK_INTERACTION,
            },
        },
        "paths": {
            "/v1/webhooks/{source}": {
                "post": _operation(
                    "A platform's conversation-end webhook (signed; see the source's platform).",
                    {
                        "202": _json(_ref("RunIds"), "Runs recorded."),
                        "200": _json(_ref("RunIds"), "A duplicate delivery or an ignored event."),
                        "400": bad["400"],
                        "401": _json(_PROBLEM, "Missing, bad or stale signature."),
                        "404": _json(_PROBLEM, "No such source."),
                        "413": bad["413"],
                        "422": bad["422"],
                    },
                    parameters=[_path_param("source", "A configured webhook source.")],
                    requestBody={
                        "required": True,
                        "content": {"application/json": {"schema": {}}},
                    },
                )
            },
            "/v1/conversations": {
                "post": _operation(
                    "Submit one canonical conversation or an array of them.",
                    {"202": _json(_ref("RunIds"), "Runs recorded."), **bad},
                    security=_AUTH,
                    requestBody={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _ref("Conversation"),
                                        {"type": "array", "items": _ref("Conversation")},
                                    ]
                                }
                            }
                        },
                    },
                )
            },
            "/v1/conversations/{conversation_id}": {
                "get": _operation(
                    "A conversation of the key's tenant, with its runs and results.",
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "conversation": _ref("Conversation"),
                                    "runs": {"type": "array", "items": _ref("Run")},
                                },
                            },
                            "The conversation.",
                        ),
                        "401": bad["401"],
                        "404": _json(_PROBLEM, "No such conversation for this tenant."),
                    },
                    security=_AUTH,
                    parameters=[_path_param("conversation_id", "The conversation id.")],
                )
            },
            "/v1/runs/{run_id}": {
                "get": _operation(
                    "A run of the key's tenant.",
                    {
                        "200": _json(_ref("Run"), "The run."),
                        "401": bad["401"],
                        "404": _json(_PROBLEM, "No such run for this tenant."),
                    },
                    security=_AUTH,
                    parameters=[_path_param("run_id", "The run id.")],
                )
            },
            "/v1/runs/{run_id}/retry": {
                "post": _operation(
                    "Queue a failed run again.",
                    {
                        "202": _json(_ref("RunIds"), "Queued again."),
                        "401": bad["401"],
                        "404": _json(_PROBLEM, "No such run for this tenant."),
                        "409": _json(_PROBLEM, "The run is not failed."),
                    },
                    security=_AUTH,
                    parameters=[_path_param("run_id", "The run id.")],
                )
            },
            "/v1/analyzers/{name}/invoke": {
                "post": _operation(
                    "Run one analyzer on the conversation so far and wait for its result.",
                    {
                        "200": _json(_ref("Run"), "The finished run with its result."),
                        "504": _json(_ref("Run"), "Not finished in time: what was recorded."),
                        "404": _json(_PROBLEM, "No such analyzer."),
                        **bad,
                    },
                    security=_AUTH,
                    parameters=[
                        _path_param("name", "The analyzer."),
                        {
                            "name": "timeout_seconds",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
                        },
                    ],
                    requestBody={
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Conversation")}},
                    },
                )
            },
            "/v1/slack/interactions": {
                "post": _operation(
                    "Slack's interactivity URL: the Approve and Reject buttons of procedure "
                    "review messages (signed with POSTHOC_SLACK_SIGNING_SECRET).",
                    {
                        "200": _json(_ref("SlackInteraction"), "Decided, already so, or ignored."),
                        "400": _json(_PROBLEM, "The payload does not parse; the field is named."),
                        "401": _json(_PROBLEM, "Missing, bad or stale Slack signature."),
                        "404": _json(_PROBLEM, "No such procedure, or no signing secret set."),
                        "409": _json(_ref("SlackInteraction"), "Already decided the other way."),
                        "413": bad["413"],
                    },
                    parameters=[
                        {
                            "name": name,
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                        for name in ("X-Slack-Signature", "X-Slack-Request-Timestamp")
                    ],
                    requestBody={
                        "required": True,
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "payload": {
                                            "type": "string",
                                            "description": "Slack's interaction payload, JSON.",
                                        }
                                    },
                                    "required": ["payload"],
                                }
                            }
                        },
                    },
                )
            },
            "/healthz": {"get": _operation("The process is up.", {"200": {"description": "Up."}})},
            "/readyz": {
                "get": _operation(
                    "The database and the broker are reachable.",
                    {"200": {"description": "Ready."}, "503": {"description": "Not ready."}},
                )
            },
            "/metrics": {
                "get": _operation(
                    "Prometheus metrics (text exposition format).",
                    {"200": {"description": "Metrics."}},
                )
            },
            "/openapi.json": {
                "get": _operation("This document.", {"200": {"description": "OpenAPI 3.1."}})
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The spec (a copy: callers may change it)."""
    return copy.deepcopy(_document())
