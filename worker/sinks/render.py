"""Block Kit messages from an analysis result: pure, no I/O.

A result becomes a headline message (a header, the conversation's ids and link, mentions, a
summary, and as many output items as fit) plus thread replies for the items that did not fit.
Every message stays within Slack's limits, checked by property tests:

- at most 50 blocks per message, 10 fields per section, 10 elements per context block;
- 150 characters in a header, 3,000 in a section's text, 2,000 in a field or context element;
- 40,000 characters in the top-level `text` (the plain-text fallback; we keep it to 4,000, the
  length Slack recommends for notifications);
- an aggregate of `MAX_MESSAGE_CHARS` characters of block text per message: Slack refuses
  messages whose blocks are too long in total (`msg_blocks_too_long`) at an undocumented
  threshold observed near 13,000 characters, so we stay below it.

Whatever is cut is said so in the message itself ("trimmed", "N more items not shown"), never
dropped silently. User text is escaped for mrkdwn (`&`, `<`, `>`), so a transcript cannot
inject mentions or links.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from schemas.conversation import Conversation
from schemas.result import AnalysisResult, RecordedOutput

MAX_BLOCKS = 50
MAX_HEADER_CHARS = 150
MAX_SECTION_CHARS = 3000
MAX_FIELD_CHARS = 2000
MAX_FIELDS_PER_SECTION = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_TEXT_CHARS = 40_000
FALLBACK_TEXT_CHARS = 4000
MAX_MESSAGE_CHARS = 12_000
MAX_THREAD_REPLIES = 10
MAX_ACTION_ELEMENTS = 25
MAX_BUTTON_TEXT_CHARS = 75
MAX_BUTTON_VALUE_CHARS = 2000
MAX_ACTION_ID_CHARS = 255
"""Replies beyond this are not posted: the headline says how many items were left out."""
ITEM_FIELD_CHARS = 6000
"""What the fields of one item may take in total, so any item fits in one message."""
TITLE_CHARS = 500
QUOTE_CHARS = 300
"""How much of a cited turn is quoted under an item."""

Block = dict[str, Any]


@dataclass(frozen=True)
class SlackMessage:
    """One message: Block Kit blocks and the plain-text fallback Slack notifies with."""

    text: str
    blocks: list[Block]


@dataclass(frozen=True)
class RenderedResult:
    """A headline for the channel and the details posted in its thread."""

    headline: SlackMessage
    replies: list[SlackMessage] = field(default_factory=list)

    @property
    def messages(self) -> list[SlackMessage]:
        return [self.headline, *self.replies]


# -- text helpers -------------------------------------------------------------------------------


def escape_mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives meaning to."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int, *, note: str = "… (trimmed)") -> str:
    """`text` cut to at most `limit` characters, ending with `note` when it was cut.

    Never cuts inside an escaped entity (`&amp;`), so the result is still valid mrkdwn.
    """
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(note))
    cut = text[:keep]
    entity = cut.rfind("&", max(0, keep - 5))
    if entity != -1 and ";" not in cut[entity:]:
        cut = cut[:entity]
    return (cut + note)[:limit]


def _plain(value: Any) -> str:
    """A value as one line of plain text: nested objects as `key: value` pairs."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{_label(str(k))}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(_plain(item) for item in value)
    return str(value)


def _label(name: str) -> str:
    return name.replace("_", " ").strip().capitalize() or name


# -- mentions and links -------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
URL_PLACEHOLDERS = frozenset({"conversation_id", "tenant_id", "run_id"})


def conversation_url(template: str, *, conversation_id: str, tenant_id: str, run_id: str) -> str:
    """Fill `POSTHOC_CONVERSATION_URL_TEMPLATE` (`{conversation_id}`, `{tenant_id}`,
    `{run_id}`), each value URL-quoted; an unknown placeholder is a `ValueError` naming it."""
    unknown = sorted(set(_PLACEHOLDER.findall(template)) - URL_PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"conversation_url_template uses unknown placeholder(s) {unknown}; "
            f"available: {sorted(URL_PLACEHOLDERS)}"
        )
    values = {"conversation_id": conversation_id, "tenant_id": tenant_id, "run_id": run_id}
    return _PLACEHOLDER.sub(lambda m: quote(values[m.group(1)], safe=""), template)


_MENTION_ID = re.compile(r"^[A-Z0-9]{2,40}$")


def mention_markup(mention: str) -> str:
    """Slack markup for a mention: a user (`U…`/`W…`), a user group (`S…`), or `here`,
    `channel`; anything else is shown escaped, never as markup."""
    name = mention.strip().lstrip("@")
    if name in {"here", "channel", "everyone"}:
        return f"<!{name}>"
    if _MENTION_ID.match(name):
        return f"<!subteam^{name}>" if name.startswith("S") else f"<@{name}>"
    return escape_mrkdwn(mention)


# -- what each output type looks like -----------------------------------------------------------

Fields = list[tuple[str, str]]
Describer = Callable[[Mapping[str, Any]], tuple[str, Fields]]


def _follow_up(value: Mapping[str, Any]) -> tuple[str, Fields]:
    priority = str(value.get("priority", "")).lower()
    marker = {"urgent": ":rotating_light:", "high": ":warning:"}.get(
        priority, ":information_source:"
    )
    title = f"{marker} {_label(priority) or 'Follow-up'} follow-up"
    keys = ("reason", "customer_ask", "suggested_action")
    return title, [(_label(k), _plain(value[k])) for k in keys if value.get(k) not in (None, "")]


def _next_step(value: Mapping[str, Any]) -> tuple[str, Fields]:
    title = f":white_check_mark: {_plain(value.get('action', 'Next step'))}"
    return title, [(_label(k), _plain(v)) for k, v in value.items() if k != "action"]


def _quality(value: Mapping[str, Any]) -> tuple[str, Fields]:
    title = (
        f":bar_chart: {_label(str(value.get('success', 'unknown')))}, "
        f"{_plain(value.get('resolution', '')).replace('_', ' ')}"
    )
    skip = {"success", "resolution"}
    return title, [(_label(k), _plain(v)) for k, v in value.items() if k not in skip]


DESCRIBERS: dict[str, Describer] = {
    "follow_up": _follow_up,
    "next_step": _next_step,
    "quality_assessment": _quality,
}
"""Per output name, the title and fields of one item; other outputs use `_generic`."""


def _generic(name: str) -> Describer:
    def describe(value: Mapping[str, Any]) -> tuple[str, Fields]:
        return _label(name), [(_label(str(k)), _plain(v)) for k, v in value.items()]

    return describe


# -- blocks ---------------------------------------------------------------------------------------


def _header(text: str) -> Block:
    return {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": clip(text, MAX_HEADER_CHARS) if text.strip() else "—",
            "emoji": True,
        },
    }


def _section(mrkdwn: str, fields: Sequence[str] = ()) -> Block:
    block: Block = {"type": "section", "text": _mrkdwn(clip(mrkdwn, MAX_SECTION_CHARS))}
    if fields:
        block["fields"] = [_mrkdwn(clip(f, MAX_FIELD_CHARS)) for f in fields]
    return block


def _context(parts: Sequence[str]) -> Block:
    return {
        "type": "context",
        "elements": [_mrkdwn(clip(p, MAX_FIELD_CHARS)) for p in parts[:MAX_CONTEXT_ELEMENTS]],
    }


def _mrkdwn(text: str) -> dict[str, str]:
    # Slack refuses empty text objects; a dash says "nothing here" without an error.
    return {"type": "mrkdwn", "text": text if text.strip() else "—"}


def _item_blocks(
    output: str, item: RecordedOutput, conversation: Conversation | None
) -> list[Block]:
    """One recorded value: a section (title + fields), then its evidence as a context."""
    if item.unknown:
        reason = escape_mrkdwn(item.unknown_reason or "no reason given")
        blocks = [_section(f"*{escape_mrkdwn(_label(output))}*: _unknown_ ({reason})")]
    else:
        value = item.value if isinstance(item.value, Mapping) else {"value": item.value}
        title, fields = DESCRIBERS.get(output, _generic(output))(value)
        if len(fields) > MAX_FIELDS_PER_SECTION:
            rest = "; ".join(f"{label}: {text}" for label, text in fields[9:])
            fields = [*fields[:9], ("More", rest)]
        # Every item fits in one message however long its values: fields share a budget.
        room = min(MAX_FIELD_CHARS, ITEM_FIELD_CHARS // max(1, len(fields)))
        rendered = [
            clip(f"*{escape_mrkdwn(label)}*\n{escape_mrkdwn(text)}", room) for label, text in fields
        ]
        blocks = [_section(clip(f"*{escape_mrkdwn(title)}*", TITLE_CHARS), rendered)]
    evidence = _evidence(item.evidence_turns, conversation)
    if evidence:
        blocks.append(_context(evidence))
    return blocks


def _evidence(turns: Sequence[int], conversation: Conversation | None) -> list[str]:
    if not turns:
        return []
    shown = sorted(set(turns))
    parts = [f"Evidence: turn{'s' if len(shown) > 1 else ''} {', '.join(map(str, shown[:20]))}"]
    if len(shown) > 20:
        parts[0] += f" (+{len(shown) - 20} more)"
    if conversation is not None:
        for number in shown[: MAX_CONTEXT_ELEMENTS - 1]:
            if number < len(conversation.turns):
                turn = conversation.turns[number]
                quoted = clip(escape_mrkdwn(" ".join(turn.text.split())), QUOTE_CHARS)
                parts.append(f"> turn {number} ({turn.role}): “{quoted}”")
    return parts


def _summary(result: AnalysisResult) -> str:
    if result.status == "failed" and result.error is not None:
        return (
            f":x: *Run failed*: `{escape_mrkdwn(result.error.type)}`: "
            f"{escape_mrkdwn(result.error.message)}"
        )
    if result.status == "skipped":
        return f":fast_forward: *Skipped*: {escape_mrkdwn(result.skip_reason or '')}"
    counts = [f"{len(items)} {_label(name).lower()}" for name, items in result.outputs.items()]
    return "*Outputs*: " + (", ".join(counts) if counts else "none recorded")


def _block_chars(block: Block) -> int:
    total = 0
    text = block.get("text")
    if isinstance(text, dict):
        total += len(text.get("text", ""))
    for part in [*block.get("fields", []), *block.get("elements", [])]:
        total += len(part.get("text", ""))
    return total


# -- the result as messages ---------------------------------------------------------------------


def render_result(
    result: AnalysisResult,
    *,
    conversation: Conversation | None = None,
    url: str | None = None,
    mentions: Sequence[str] = (),
) -> RenderedResult:
    """The headline and thread replies for `result`, each within every Slack limit."""
    header = _header(f"{result.analyzer}: {_headline_phrase(result)}")
    ids = [
        f"Conversation `{escape_mrkdwn(result.conversation_id)}`",
        f"Tenant `{escape_mrkdwn(result.tenant_id or '—')}`",
        f"Run `{escape_mrkdwn(result.run_id)}`",
        f"{escape_mrkdwn(result.analyzer)} v{escape_mrkdwn(result.analyzer_version)}",
    ]
    if url:
        ids.append(f"<{escape_mrkdwn(url)}|Open conversation>")
    top: list[Block] = [header, _context(ids)]
    marked = [mention_markup(m) for m in mentions if m.strip()]
    if marked:
        top.append(_section(" ".join(marked)))
    top.append(_section(_summary(result)))

    groups = [
        _item_blocks(name, item, conversation)
        for name, items in result.outputs.items()
        for item in items
    ]
    pages = _paginate(top, groups)
    kept, left_out = (
        pages[: 1 + MAX_THREAD_REPLIES],
        sum(len(p[1]) for p in pages[1 + MAX_THREAD_REPLIES :]),
    )
    if left_out or len(kept) > 1:
        note = (
            f"{sum(len(p[1]) for p in kept[1:])} more item(s) in the thread"
            if len(kept) > 1
            else ""
        )
        if left_out:
            note += (
                "; " if note else ""
            ) + f"{left_out} item(s) not shown: see run `{result.run_id}`"
        kept[0][0].append(_context([f":page_facing_up: {escape_mrkdwn(note)}"]))
    fallback = _fallback(result)
    headline = SlackMessage(text=fallback, blocks=kept[0][0])
    replies = [
        SlackMessage(text=clip(f"{fallback} (part {n + 2})", FALLBACK_TEXT_CHARS), blocks=blocks)
        for n, (blocks, _) in enumerate(kept[1:])
    ]
    return RenderedResult(headline=headline, replies=replies)


def _paginate(
    top: list[Block], groups: list[list[Block]]
) -> list[tuple[list[Block], list[list[Block]]]]:
    """Pack item groups into messages: the headline starts with `top` and keeps room for one
    note; every page holds whole items only, within the block and character budgets."""
    pages: list[tuple[list[Block], list[list[Block]]]] = [(list(top), [])]
    block_room = MAX_BLOCKS - 1  # one block stays free for the headline's note
    char_room = MAX_MESSAGE_CHARS - MAX_FIELD_CHARS
    for group in groups:
        blocks, items = pages[-1]
        chars = sum(_block_chars(b) for b in blocks) + sum(_block_chars(b) for b in group)
        if len(blocks) + len(group) > block_room or chars > char_room:
            pages.append(([], []))
            blocks, items = pages[-1]
        blocks.extend(group)
        items.append(group)
    return pages


def _headline_phrase(result: AnalysisResult) -> str:
    if result.status == "failed":
        return "run failed"
    if result.status == "skipped":
        return "skipped"
    total = sum(len(items) for items in result.outputs.values())
    return f"{total} item{'s' if total != 1 else ''} for {result.conversation_id}"


def _fallback(result: AnalysisResult) -> str:
    """The plain text Slack notifies with and shows where blocks cannot be displayed."""
    lines = [f"{result.analyzer}: {_headline_phrase(result)} (run {result.run_id})"]
    if result.error is not None:
        lines.append(f"{result.error.type}: {result.error.message}")
    for name, items in result.outputs.items():
        for item in items:
            if item.unknown:
                lines.append(f"- {_label(name)}: unknown")
                continue
            value = item.value if isinstance(item.value, Mapping) else {"value": item.value}
            title, _ = DESCRIBERS.get(name, _generic(name))(value)
            lines.append(f"- {title}")
    return clip(escape_mrkdwn("\n".join(lines)), FALLBACK_TEXT_CHARS)
