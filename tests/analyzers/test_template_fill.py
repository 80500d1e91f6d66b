"""Filling `{{placeholder}}` templates: types kept, text rendering, paths, errors, URL encoding."""

from __future__ import annotations

from typing import Any

import pytest

from analyzers.tools.template_fill import TemplateError, fill, fill_text, missing_names

VALUES: dict[str, Any] = {
    "name": "TechCorp",
    "count": 3,
    "ratio": 0.5,
    "flag": True,
    "nothing": None,
    "vendor": {"id": "V-9912", "tags": ["a", "b"]},
    "items": [{"id": "first"}, {"id": "second"}],
    "step": {"result": {"vendorId": "V-1", "nested": {"deep": [10, 20]}}},
    "query": "a b/c?d=e&f#g",
    "secrets": {"API_KEY": "sk-123"},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{count}}", 3),
        ("{{ratio}}", 0.5),
        ("{{flag}}", True),
        ("{{nothing}}", None),
        ("{{vendor}}", {"id": "V-9912", "tags": ["a", "b"]}),
        ("{{vendor.tags}}", ["a", "b"]),
        ("{{ name }}", "TechCorp"),
        ("{{step.result.vendorId}}", "V-1"),
        ("{{items[1].id}}", "second"),
        ("{{step.result.nested.deep[1]}}", 20),
        ("{{secrets.API_KEY}}", "sk-123"),
    ],
)
def test_a_lone_placeholder_keeps_the_value_and_its_type(template: str, expected: Any) -> None:
    assert fill(template, VALUES) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hello {{name}}!", "Hello TechCorp!"),
        ("n={{count}}", "n=3"),
        ("r={{ratio}}", "r=0.5"),
        ("flag={{flag}}", "flag=true"),
        ("x={{nothing}}", "x=null"),
        ("v={{vendor}}", 'v={"id":"V-9912","tags":["a","b"]}'),
        ("{{items[0].id}}/{{items[1].id}}", "first/second"),
        ("no placeholders", "no placeholders"),
        ("{{ not a placeholder }}", "{{ not a placeholder }}"),
    ],
)
def test_embedded_placeholders_become_text(template: str, expected: str) -> None:
    assert fill(template, VALUES) == expected


def test_dicts_and_lists_are_walked_keys_included() -> None:
    template = {
        "vendor": "{{vendor.id}}",
        "count": "{{count}}",
        "label": "{{name}} ({{count}})",
        "{{name}}_key": ["{{flag}}", 7, None, {"deep": "{{items[0]}}"}],
    }
    assert fill(template, VALUES) == {
        "vendor": "V-9912",
        "count": 3,
        "label": "TechCorp (3)",
        "TechCorp_key": [True, 7, None, {"deep": {"id": "first"}}],
    }


def test_non_template_values_pass_through() -> None:
    assert fill(None, VALUES) is None
    assert fill(42, VALUES) == 42
    assert fill([1.5, False], VALUES) == [1.5, False]


def test_the_template_is_not_modified() -> None:
    template = {"a": ["{{name}}"]}
    fill(template, VALUES)
    assert template == {"a": ["{{name}}"]}


@pytest.mark.parametrize(
    ("template", "placeholder", "fragment"),
    [
        ("{{missing}}", "missing", "'missing' is not in the values given (available: count,"),
        ("x {{step.result.vendor_id}}", "step.result.vendor_id", "not in step.result"),
        ("{{items[5].id}}", "items[5].id", "items has 2 item(s), so [5] is out of range"),
        ("{{name.first}}", "name.first", "name is a str, not an object or a list"),
        ("{{vendor[0]}}", "vendor[0]", "'[0]' is not in vendor"),
        ("{{secrets.OTHER}}", "secrets.OTHER", "available: API_KEY"),
    ],
)
def test_a_missing_value_names_the_placeholder(
    template: str, placeholder: str, fragment: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        fill(template, VALUES)
    assert caught.value.placeholder == placeholder
    assert f"{{{{{placeholder}}}}}" in str(caught.value)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_missing_name_errors_list_names_never_values() -> None:
    with pytest.raises(TemplateError) as caught:
        fill("{{secrets.OTHER}}", VALUES)
    assert caught.value.available == ["API_KEY"]
    assert "sk-123" not in str(caught.value)


def test_missing_names_lists_each_unresolvable_path_once_in_order() -> None:
    template = {"a": "{{zeta}} {{name}}", "b": ["{{alpha}}", "{{zeta}}", "{{items[9]}}"]}
    assert missing_names(template, VALUES) == ["zeta", "alpha", "items[9]"]
    assert missing_names("{{name}} {{step.result.vendorId}}", VALUES) == []


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("https://api.example.com/v/{{query}}", "https://api.example.com/v/a%20b%2Fc%3Fd%3De%26f%23g"),
        ("https://api.example.com/v?q={{name}}&n={{count}}", "https://api.example.com/v?q=TechCorp&n=3"),
        ("https://api.example.com/{{vendor}}", "https://api.example.com/%7B%22id%22%3A%22V-9912%22%2C%22tags%22%3A%5B%22a%22%2C%22b%22%5D%7D"),
        ("{{count}}", "3"),
        ("https://api.example.com/é/{{name}}", "https://api.example.com/é/TechCorp"),
    ],
)  # fmt: skip
def test_url_encoding_escapes_values_not_the_template(template: str, expected: str) -> None:
    assert fill(template, VALUES, url_encode=True) == expected


def test_url_encoding_encodes_unicode_as_utf8() -> None:
    assert fill("/p/{{x}}", {"x": "Zoë"}, url_encode=True) == "/p/Zo%C3%AB"


@pytest.mark.parametrize("value", [".", ".."])
def test_url_encoding_refuses_dot_segments(value: str) -> None:
    with pytest.raises(TemplateError, match="would change the URL's path"):
        fill("https://api.example.com/vendors/{{id}}", {"id": value}, url_encode=True)
    assert fill("/vendors/{{id}}", {"id": value}) == f"/vendors/{value}"


def test_fill_text_always_renders_text() -> None:
    assert fill_text("{{count}}", VALUES) == "3"
    assert fill_text("{{nothing}}", VALUES) == "null"
    assert fill_text("Bearer {{secrets.API_KEY}}", VALUES) == "Bearer sk-123"
