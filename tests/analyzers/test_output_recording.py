"""Output recording under hostile input: whatever the model sends, a clear answer, no traceback."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from analyzers.runtime.output_tools import OutputRecorder, OutputTool
from analyzers.tools.base import ReadCoverage, ToolContext
from tests.analyzers.helpers import builtin_analyzer, conversation

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=15), children, max_size=5)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    ["value", "unknown", "unknown_reason", "evidence_turns", "evidence_events", "extra"]
)
ARGUMENTS = st.dictionaries(KEYS | st.text(max_size=10), JSON_VALUES, max_size=6)


@settings(max_examples=120, deadline=None)
@given(arguments=ARGUMENTS)
def test_any_recording_input_is_kept_valid_or_refused_with_reasons(
    arguments: dict[str, Any],
) -> None:
    spec = builtin_analyzer("follow_ups")
    conv = conversation()
    recorder = OutputRecorder(spec.outputs, len(conv.turns), 2)
    tool = OutputTool(spec.outputs[0], recorder)
    context = ToolContext(conversation=conv, coverage=ReadCoverage(len(conv.turns)))

    outcome = asyncio.run(tool.call(arguments, context))

    kept = recorder.recorded.get("follow_up", [])
    if outcome.is_error:
        assert kept == []
        assert "problem(s)" in str(outcome.output)
    else:
        (recorded,) = kept
        assert all(0 <= turn < len(conv.turns) for turn in recorded.evidence_turns)
        assert all(0 <= event < 2 for event in recorded.evidence_events)
