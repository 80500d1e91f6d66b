"""`{{placeholder}}` templates in tool arguments, URLs and expressions. Pure string handling."""

from __future__ import annotations

import re
from typing import Any

PLACEHOLDER = re.compile(
    r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)\s*\}\}"
)
"""`{{name}}`, `{{step.result.vendorId}}` or `{{items[0].id}}`, with optional inner spaces."""

NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""What a parameter, variable, tool, output or procedure name may look like."""

SYSTEM_VARIABLE_PREFIX = "system__"
"""Dynamic variables the platform fills itself (`system__agent_turns`): always in scope."""


def placeholders(template: Any) -> list[str]:
    """Every placeholder path in a template: a string, or JSON made of dicts, lists and strings."""
    found: list[str] = []
    _collect(template, found)
    return found


def _collect(template: Any, found: list[str]) -> None:
    if isinstance(template, str):
        found.extend(match.group(1) for match in PLACEHOLDER.finditer(template))
    elif isinstance(template, dict):
        for key, value in template.items():
            _collect(key, found)
            _collect(value, found)
    elif isinstance(template, list):
        for item in template:
            _collect(item, found)


def root_name(path: str) -> str:
    """The first name of a placeholder path: `vendor_lookup` for `vendor_lookup.result.id`."""
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def strip_braces(expression: str) -> str:
    """Let expressions use the seeds' `{{system__agent_turns}} == 0` spelling as well as CEL's."""
    return PLACEHOLDER.sub(lambda match: match.group(1), expression)
