"""HTTP tools: an analyzer's `HttpTool` definition turned into a tool the model can call.

One call validates the model's arguments against the tool's `input_schema`, fills the URL,
header and body templates (`{{name}}` from the arguments, `{{secrets.NAME}}` from the worker's
secrets), checks the final URL against the tool's `allowed_hosts`, and sends it through the
`HttpTransport` the worker put in the `ToolContext`. Everything the model can act on (bad
arguments, a refused URL, a 5xx, a timeout) comes back as an `is_error` outcome. A 404, an empty
body and a JSON `null` body are the result `None` (found nothing) unless the tool sets
`not_found_is_null: false`.

Secret values never reach the model: every text returned (response bodies included, since a
server may echo a header back) has the secrets used by the request replaced by `[redacted]`.

A write-effect tool (`HttpTool.effect == "write"`) goes through the run's effects (see
`analyzers.tools.effects`): an idempotency key in a header, a `pending` record before the
request, the outcome after, a recorded outcome replayed instead of calling again, and under
`dry_run` a description instead of a request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from analyzers.errors import ConfigError
from analyzers.tools.base import JSON, HttpRequest, HttpResponse, ToolContext, ToolKind, ToolOutcome
from analyzers.tools.effects import (
    EffectRecord,
    RunEffects,
    effect_scope,
    idempotency_key,
    request_fingerprint,
    variant_key,
)
from analyzers.tools.template_fill import TemplateError, as_text, fill, fill_text
from schemas.analyzer import HttpTool, default_port, host_allowed
from schemas.result import WriteEffect
from schemas.templates import placeholders, root_name

MAX_RESPONSE_CHARS = 20_000
"""A response body longer than this (as text or JSON) is cut before the model sees it."""

ERROR_EXCERPT_CHARS = 500
"""How much of an error response's body the model is shown."""

REDACTED = "[redacted]"

_TIMEOUT_GRACE_SECONDS = 1.0
"""The transport enforces the tool's timeout; this is a backstop should one not."""

_HEADER_BREAKERS = ("\r", "\n", "\x00")


class HttpToolCrashed(RuntimeError):
    """The transport failed in a way it should not (not an `OSError` or a timeout).

    Raised instead of the transport's own exception, whose message could carry a secret from the
    URL or a header: this one's message has them redacted.
    """


def argument_problems(schema: Mapping[str, Any], arguments: Any) -> list[str]:
    """Every way `arguments` breaks the JSON Schema `schema`, as `path: problem` lines."""
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(arguments), key=lambda error: error.json_path)
    return [f"{error.json_path}: {error.message}" for error in errors]


class HttpToolRunner:
    """An `HttpTool` as a `Tool` (kind "http")."""

    kind: ToolKind = "http"

    def __init__(self, spec: HttpTool) -> None:
        """Raise `ConfigError` when `spec` cannot work whatever the model sends."""
        try:
            Draft202012Validator.check_schema(spec.input_schema)
        except SchemaError as exc:
            raise ConfigError(
                f"http tool {spec.name!r}: input_schema is not a valid JSON Schema: {exc.message}"
            ) from None
        self.spec = spec
        self._secret_names = _secret_names(spec)

    @property
    def name(self) -> str:
        """The tool's name, as the model calls it."""
        return self.spec.name

    def definition(self) -> JSON:
        """The Messages API tool definition."""
        return {
            "name": self.spec.name,
            "description": self.spec.description,
            "input_schema": self.spec.input_schema,
        }

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        """Send the request; problems the model can act on come back as `is_error` outcomes."""
        prepared = self._prepare(arguments, context.secrets)
        if isinstance(prepared, ToolOutcome):
            return prepared
        request, redact = prepared
        if self.spec.effect == "write" and context.effects is not None:
            return await self._write(request, redact, context, context.effects)
        outcome, _status = await self._exchange(request, redact, context)
        return outcome

    async def _write(
        self, request: HttpRequest, redact: _Redactor, context: ToolContext, effects: RunEffects
    ) -> ToolOutcome:
        """A write: described under dry run, else keyed, recorded pending, sent, recorded done."""
        url = redact.text(request.url)
        body = redact.value(request.body)
        if effects.dry_run:
            described = json.dumps(body, ensure_ascii=False, default=str)
            return ToolOutcome(
                f"DRY RUN: nothing was sent. This analyzer runs with dry_run, so the write "
                f"{request.method} {url} with body {described} was described, not made; "
                "treat its effect as not having happened.",
                effect=WriteEffect(dry_run=True),
            )
        fingerprint = request_fingerprint(request.method, url, body)
        key = effects.unresolved.get(fingerprint)
        if key is None:
            scope = effect_scope(self.name, context.procedure_step)
            number = effects.next_call(scope)
            key = idempotency_key(effects.run_id, scope, number)
            known = await effects.store.lookup(key)
            if known is not None and known.fingerprint != fingerprint:
                # A different request where an earlier attempt made another: its own effect.
                key = variant_key(key, fingerprint)
                known = await effects.store.lookup(key)
            if known is not None and known.state == "done":
                return ToolOutcome(
                    known.output,
                    is_error=known.is_error,
                    effect=WriteEffect(idempotency_key=key, replayed=True),
                )
        else:
            scope, number = "", 0  # the same request again in this run: its key is known
        stored = await effects.store.record_pending(
            EffectRecord(
                key=key,
                run_id=effects.run_id,
                tool_name=self.name,
                scope=scope,
                call_number=number,
                method=request.method,
                url=url,
                fingerprint=fingerprint,
            )
        )
        header = self.spec.idempotency_header
        headers = {k: v for k, v in request.headers.items() if k.lower() != header.lower()}
        keyed = replace(request, headers={**headers, header: key})
        outcome, status = await self._exchange(keyed, redact, context)
        if status is not None and _definitive(status):
            await effects.store.record_outcome(
                key, output=outcome.output, is_error=outcome.is_error, status_code=status
            )
            effects.unresolved.pop(fingerprint, None)
        else:
            # No answer, or one that says "try again": whether the server acted is unknown.
            # The effect stays pending; sending it again (now or on a retry) reuses this key.
            effects.unresolved[fingerprint] = key
        return replace(outcome, effect=WriteEffect(idempotency_key=key, resent=stored.sends > 1))

    async def _exchange(
        self, request: HttpRequest, redact: _Redactor, context: ToolContext
    ) -> tuple[ToolOutcome, int | None]:
        """Send `request`: the outcome, and the HTTP status when an answer came back."""
        if context.http is None:
            return _error("HTTP tools are not configured in this worker"), None
        where = redact.text(f"{request.method} {request.url}")
        crash: str | None = None
        try:
            async with asyncio.timeout(request.timeout_seconds + _TIMEOUT_GRACE_SECONDS):
                response = await context.http.send(request)
        except TimeoutError:
            return _error(f"{where} timed out after {request.timeout_seconds:g} s"), None
        except OSError as exc:
            return _error(redact.text(f"{where} failed: {_describe(exc)}")), None
        except Exception as exc:
            crash = redact.text(f"{where}: the HTTP transport failed: {_describe(exc)}")
        if crash is not None:
            # Raised outside the `except` block so the original exception (whose message and
            # attributes may hold secrets) is not attached as its context.
            raise HttpToolCrashed(crash)
        outcome = _outcome(response, where, redact, null_when_absent=self.spec.not_found_is_null)
        return outcome, response.status

    def _prepare(
        self, arguments: JSON, all_secrets: Mapping[str, str]
    ) -> tuple[HttpRequest, _Redactor] | ToolOutcome:
        """The request to send and what to redact from its results, or why there is none."""
        problems = argument_problems(self.spec.input_schema, arguments)
        if problems:
            listed = "\n".join(f"- {problem}" for problem in problems)
            return _error(f"invalid input for {self.name}:\n{listed}")
        absent = [name for name in self._secret_names if name not in all_secrets]
        if absent:
            return _error(
                f"{self.name} cannot run: this worker has no secret named "
                f"{', '.join(repr(name) for name in absent)}; an operator must configure it"
            )
        # Only the secrets this tool names are in scope, so nothing else can be filled in.
        secrets = {name: all_secrets[name] for name in self._secret_names}
        values = {**arguments, "secrets": secrets}
        try:
            url = fill_text(self.spec.url, values, url_encode=True)
            headers = {key: fill_text(value, values) for key, value in self.spec.headers.items()}
            body = fill(self.spec.body, values)
        except TemplateError as exc:
            # A TemplateError names placeholders, not values; redact all the same.
            return _error(_Redactor(secrets.values()).text(str(exc)))
        except UnicodeError:
            # A lone surrogate in a value cannot be percent-encoded into the URL.
            return _error(
                f"invalid input for {self.name}: a value put into the URL holds text that "
                "cannot be encoded as UTF-8 (an unpaired surrogate); send plain text"
            )
        # A header built from a secret (`Bearer {{secrets.TOKEN}}`) is redacted whole.
        secret_headers = [
            headers[key]
            for key, template in self.spec.headers.items()
            if any(root_name(path) == "secrets" for path in placeholders(template))
        ]
        redact = _Redactor([*secrets.values(), *secret_headers])
        for key, value in headers.items():
            if any(breaker in value for breaker in _HEADER_BREAKERS):
                return _error(redact.text(f"header {key!r} would contain a line break: {value!r}"))
            problem = _header_encoding_problem(key, value)
            if problem is not None:
                return _error(redact.text(problem))
        problem = _body_encoding_problem(body)
        if problem is not None:
            return _error(redact.text(problem))
        refusal = url_refusal(url, self.spec.allowed_hosts)
        if refusal is not None:
            return _error(redact.text(refusal))
        request = HttpRequest(
            method=self.spec.method,
            url=url,
            headers=headers,
            body=body,
            timeout_seconds=self.spec.timeout_seconds,
        )
        return request, redact


def url_refusal(url: str, allowed_hosts: Iterable[str]) -> str | None:
    """Why `url` may not be requested, or None when it may.

    https only (plain http only to this machine), no credentials in the URL, and a host that is
    one of `allowed_hosts` (compared without case).
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"refused: {url!r} is not a valid URL ({exc})"
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host:
        return f"refused: {url!r} has no host"
    if "@" in parts.netloc or "\\" in url:
        return f"refused: {url!r} carries credentials or a backslash in its address"
    if scheme != "https" and not (scheme == "http" and _is_loopback(host)):
        return (
            f"refused: scheme {parts.scheme!r} of {url!r} is not allowed: "
            "HTTP tools use https (plain http only to this machine)"
        )
    allowed = sorted({entry.lower() for entry in allowed_hosts})
    fallback = default_port(scheme)
    port = parts.port or fallback
    if not host_allowed(host, port, fallback, allowed):
        return (
            f"refused: host {host!r} port {port} of {url!r} is not in this tool's "
            f"allowed_hosts {allowed}"
        )
    return None


LOOPBACK_NAMES = ("localhost",)


def address_refusal(
    host: str,
    addresses: Iterable[str],
    private_networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
) -> str | None:
    """Why `host`, resolved to `addresses`, may not be connected to; None when it may.

    `allowed_hosts` names hosts; this checks where a name really leads, so a public-looking name
    cannot reach this machine or an internal network (DNS rebinding, a hostile record):
    - an address literal was allowed as written: it is used as it is;
    - `localhost` (and `*.localhost`) must resolve to loopback addresses only;
    - any other name must resolve to public addresses only, or to addresses inside the
      `private_networks` an operator opened (e.g. 10.20.0.0/16 for an internal API).
    Every address must pass, not just one: a mixed answer is refused.
    """
    host = host.lower().strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    networks = list(private_networks)
    resolved = [_as_address(address) for address in addresses]
    if not resolved:
        return f"refused: {host!r} did not resolve to any address"
    loopback_name = host in LOOPBACK_NAMES or host.endswith(".localhost")
    for address in resolved:
        if address is None:
            return f"refused: {host!r} resolved to something that is not an IP address"
        if loopback_name:
            if not address.is_loopback:
                return f"refused: {host!r} resolved to {address}, which is not this machine"
            continue
        if address.is_global and not address.is_multicast:
            continue
        if any(address.version == net.version and address in net for net in networks):
            continue
        return (
            f"refused: {host!r} resolved to {address}, a non-public address "
            "(loopback, private, link-local or reserved) this worker does not allow"
        )
    return None


def _as_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret_names(spec: HttpTool) -> list[str]:
    names: set[str] = set()
    for path in placeholders([spec.url, spec.headers, spec.body]):
        if root_name(path) != "secrets":
            continue
        rest = path[len("secrets") :]
        if not rest.startswith("."):
            # `{{secrets}}` or `{{secrets[0]}}` would send every secret the worker has.
            raise ConfigError(
                f"http tool {spec.name!r}: placeholder {{{{{path}}}}} must name one secret, "
                "as {{secrets.NAME}}"
            )
        names.add(rest[1:].split(".")[0].split("[")[0])
    return sorted(names)


def _outcome(
    response: HttpResponse, where: str, redact: _Redactor, *, null_when_absent: bool
) -> ToolOutcome:
    body = redact.value(response.body)
    if null_when_absent and (
        response.status == 404 or (200 <= response.status < 300 and body in (None, ""))
    ):
        # "Nothing there" is an answer a procedure's condition tests (`lookup.result == null`).
        return ToolOutcome(None)
    if not 200 <= response.status < 300:
        excerpt = as_text(body) if body not in (None, "") else "(empty body)"
        if len(excerpt) > ERROR_EXCERPT_CHARS:
            excerpt = excerpt[:ERROR_EXCERPT_CHARS] + "…(truncated)"
        return _error(f"{where} answered HTTP {response.status}: {excerpt}")
    if body is None or body == "":
        return ToolOutcome(f"HTTP {response.status} with an empty body")
    text = as_text(body)
    if len(text) > MAX_RESPONSE_CHARS:
        return ToolOutcome(
            text[:MAX_RESPONSE_CHARS] + f"\n…(truncated: the response has {len(text)} characters; "
            f"only the first {MAX_RESPONSE_CHARS} are shown)"
        )
    return ToolOutcome(body)


def _definitive(status: int) -> bool:
    """Whether an answer settles a write: not a server failure nor a "try again later"."""
    return status < 500 and status not in (408, 425, 429)


def _header_encoding_problem(name: str, value: str) -> str | None:
    """Why `value` cannot go into header `name` (HTTP header values are ASCII), or None."""
    for position, character in enumerate(value):
        if not character.isascii():
            return (
                f"header {name!r} cannot carry {character!r} (character {position} of its "
                "value): HTTP header values are ASCII only; transliterate it (e.g. 'Jose' for "
                "'José') or leave it out"
            )
    return None


def _body_encoding_problem(body: Any) -> str | None:
    """Why `body` cannot be sent as JSON (an unpaired surrogate, NaN), or None."""
    try:
        json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return "the request body holds text that cannot be encoded as UTF-8 (an unpaired surrogate)"
    except (ValueError, TypeError, RecursionError) as exc:
        return f"the request body cannot be sent as JSON: {type(exc).__name__}: {exc}"
    return None


def _error(message: str) -> ToolOutcome:
    return ToolOutcome(message, is_error=True)


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class _Redactor:
    """Replaces secret values (and their URL-encoded forms) in text and JSON values."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if secret for form in (secret, quote(secret, ""))}
        # Longest first, so a secret containing another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def text(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        if not self._forms:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(key): self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value
