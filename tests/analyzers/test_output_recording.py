"""Output recording under hostile input: whatever the model sends, a clear answer, no traceback."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from analyzers.runtime.output_tools import OutputRecorder, OutputTool, RecordOutputTool
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


@settings(max_examples=120, deadline=None)
@given(
    arguments=ARGUMENTS,
    output=st.sampled_from(["follow_up", "quality_assessment", ""]) | JSON_VALUES,
)
def test_any_record_output_input_is_kept_for_an_own_output_or_refused(
    arguments: dict[str, Any], output: Any
) -> None:
    spec = builtin_analyzer("follow_ups")
    conv = conversation()
    recorder = OutputRecorder(spec.outputs, len(conv.turns), 0)
    tool = RecordOutputTool(tuple(spec.outputs), recorder)
    context = ToolContext(conversation=conv, coverage=ReadCoverage(len(conv.turns)))

    outcome = asyncio.run(tool.call({**arguments, "output": output}, context))

    kept = recorder.recorded.get("follow_up", [])
    assert set(recorder.recorded) <= {"follow_up"}, "only the analyzer's own output is kept"
    if output != "follow_up":
        assert outcome.is_error
        assert "output must name one of your outputs (follow_up)" in str(outcome.output)
    elif not outcome.is_error:
        (recorded,) = kept
        assert recorded.evidence_events == []
