"""Fill `{{placeholder}}` templates with values: tool arguments, step results, secrets.

Pure: no I/O, nothing read from the environment. The placeholder syntax is
`schemas.templates.PLACEHOLDER`: `{{name}}`, `{{step.result.vendorId}}`, `{{items[0].id}}`.

A string that is exactly one placeholder becomes the value itself, keeping its JSON type (a
number stays a number, an object an object, null stays null). A placeholder inside longer text is
replaced by the value's text: strings as they are, everything else as compact JSON (`null`,
`true`, `42`, `{"a":1}`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from schemas.templates import PLACEHOLDER, placeholders

_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")

_DOT_SEGMENTS = frozenset({".", ".."})
"""Values that would climb the URL path (`/vendors/..`) even when percent-encoded."""


class TemplateError(ValueError):
    """A placeholder cannot be filled. `placeholder` is its path, `available` the names in scope
    where the lookup failed (names only, never values)."""

    def __init__(self, message: str, *, placeholder: str, available: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.placeholder = placeholder
        self.available = list(available)


def fill(template: Any, values: Mapping[str, Any], *, url_encode: bool = False) -> Any:
    """`template` with every placeholder replaced from `values`.

    Walks strings, dicts (keys and values) and lists; anything else is returned unchanged.
    With `url_encode=True` every value is rendered as text and percent-encoded for a URL path
    segment or query value (`/`, `?`, `&`, `#`, spaces, ... all escaped), so a string template
    always yields a string; `.` and `..` are refused there because they would change the path.

    Raises `TemplateError` naming the placeholder when a name or index cannot be resolved.
    """
    if isinstance(template, str):
        return _fill_string(template, values, url_encode=url_encode)
    if isinstance(template, dict):
        return {
            fill_text(key, values, url_encode=url_encode) if isinstance(key, str) else key: fill(
                value, values, url_encode=url_encode
            )
            for key, value in template.items()
        }
    if isinstance(template, list):
        return [fill(item, values, url_encode=url_encode) for item in template]
    return template


def fill_text(template: str, values: Mapping[str, Any], *, url_encode: bool = False) -> str:
    """Like `fill` for one string, but always text: a lone placeholder is rendered, not kept raw.

    For places that only take text, such as URLs and header values.
    """
    return PLACEHOLDER.sub(
        lambda match: _embedded(match.group(1), values, url_encode=url_encode), template
    )


def missing_names(template: Any, values: Mapping[str, Any]) -> list[str]:
    """Placeholder paths in `template` that `values` cannot fill, in order, each once."""
    missing: list[str] = []
    for path in placeholders(template):
        if path in missing:
            continue
        try:
            resolve(path, values)
        except TemplateError:
            missing.append(path)
    return missing


def resolve(path: str, values: Mapping[str, Any]) -> Any:
    """The value at a placeholder path such as `step.result.items[0].id`."""
    current: Any = values
    walked = ""
    for match in _PATH_PART.finditer(path):
        name, index = match.group(1), match.group(2)
        if name is not None:
            if not isinstance(current, Mapping) or name not in current:
                raise _missing(path, walked, name, current)
            current = current[name]
            walked = f"{walked}.{name}" if walked else name
        else:
            position = int(index)
            if not _is_list(current) or position >= len(current):
                raise _missing(path, walked, f"[{position}]", current)
            current = current[position]
            walked = f"{walked}[{position}]"
    return current


def as_text(value: Any) -> str:
    """How a value reads inside longer text: strings as they are, the rest as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _fill_string(template: str, values: Mapping[str, Any], *, url_encode: bool) -> Any:
    whole = PLACEHOLDER.fullmatch(template)
    if whole is not None and not url_encode:
        return resolve(whole.group(1), values)
    return fill_text(template, values, url_encode=url_encode)


def _embedded(path: str, values: Mapping[str, Any], *, url_encode: bool) -> str:
    text = as_text(resolve(path, values))
    if not url_encode:
        return text
    if text in _DOT_SEGMENTS:
        raise TemplateError(
            f"placeholder {{{{{path}}}}} is {text!r}, which would change the URL's path; "
            "give a real value",
            placeholder=path,
        )
    return quote(text, safe="")


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _missing(path: str, walked: str, step: str, container: Any) -> TemplateError:
    where = walked or "the values given"
    if isinstance(container, Mapping):
        available = sorted(str(key) for key in container)
        shown = ", ".join(available) if available else "nothing"
        detail = f"{step!r} is not in {where} (available: {shown})"
    elif _is_list(container):
        available = []
        detail = f"{where} has {len(container)} item(s), so {step} is out of range"
    else:
        available = []
        detail = f"{where} is a {type(container).__name__}, not an object or a list"
    return TemplateError(
        f"placeholder {{{{{path}}}}} has no value: {detail}",
        placeholder=path,
        available=available,
    )
