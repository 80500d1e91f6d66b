"""Built-in read-only tools over the conversation being analysed.

They let an agent read a long conversation in parts instead of all at once. Analyzers list them
by name under `tools:`.
"""

from __future__ import annotations

BUILTIN_TOOL_NAMES = frozenset({"get_turns", "get_events", "search_conversation"})
"""`get_turns` (a range of turns), `get_events` (a range of events), `search_conversation`
(turns and events containing a text)."""
