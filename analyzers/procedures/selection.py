"""Which of the procedures an analyzer names apply to a conversation, with the record of why.

For each name, the newest version in scope is matched (`matching.procedure_applies`). Those the
event log and the patterns cannot decide go to the model in ONE cheap call (small `max_tokens`,
no thinking where the model allows it) that reads their trigger descriptions. A failure of that
call, or an answer that cannot be read, means "does not apply" with the reason recorded: never
a crash, since the analysis itself can still run without the procedure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from analyzers.errors import ModelError
from analyzers.model.profiles import profile_for
from analyzers.model.protocol import ModelClient, ModelRequest, ThinkingMode
from analyzers.procedures.matching import (
    Match,
    description_question,
    in_scope,
    procedure_applies,
    read_description_answer,
)
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from schemas.procedure_execution import ProcedureExecution
from schemas.usage import Usage

CHECK_MAX_TOKENS = 512
"""Enough for a JSON verdict per procedure when thinking is off."""

CHECK_MAX_TOKENS_THINKING = 2048
"""When the model cannot turn thinking off, room for a little of it before the verdict."""

CHECK_SYSTEM = (
    "You decide whether procedures apply to a finished customer conversation. Answer only "
    "with the JSON object asked for."
)


@dataclass(frozen=True)
class Selection:
    """The procedures that apply (in the analyzer's order) and a record for every named one."""

    applied: list[Procedure]
    records: list[ProcedureExecution]
    usage: Usage = field(default_factory=Usage)
    model_turns: int = 0

    def record(self, name: str) -> ProcedureExecution | None:
        """The record of the procedure named `name`."""
        return next((r for r in self.records if r.name == name), None)


async def select_procedures(
    names: Sequence[str],
    conversation: Conversation,
    candidates: Sequence[Procedure],
    *,
    model: ModelClient,
    model_id: str,
    timeout_seconds: float = 60.0,
) -> Selection:
    """Match each named procedure; ask the model once about the ones patterns leave open."""
    chosen: dict[str, Procedure] = {}
    matched: dict[str, Match] = {}
    for name in dict.fromkeys(names):
        procedure, match = _newest_in_scope(name, conversation, candidates)
        matched[name] = match
        if procedure is not None:
            chosen[name] = procedure
    undecided = [chosen[name] for name, match in matched.items() if match.applies is None]
    usage, turns = Usage(), 0
    if undecided:
        answers, usage, turns = await _ask_model(
            conversation, undecided, model, model_id, timeout_seconds
        )
        matched.update(answers)
    applied = [chosen[name] for name, match in matched.items() if match.applies]
    records = [_record(name, chosen.get(name), match) for name, match in matched.items()]
    return Selection(applied, records, usage, turns)


def _newest_in_scope(
    name: str, conversation: Conversation, candidates: Sequence[Procedure]
) -> tuple[Procedure | None, Match]:
    versions = sorted(
        (p for p in candidates if p.name == name), key=lambda p: p.version, reverse=True
    )
    if not versions:
        return None, Match(False, "undefined", "no procedure of this name is available")
    usable = [p for p in versions if in_scope(p, conversation) is None]
    if not usable:
        refusal = in_scope(versions[0], conversation)
        return versions[0], refusal or Match(False, "scope", "not usable here")
    newest = usable[0]
    return newest, procedure_applies(newest, conversation)


async def _ask_model(
    conversation: Conversation,
    undecided: list[Procedure],
    model: ModelClient,
    model_id: str,
    timeout_seconds: float,
) -> tuple[dict[str, Match], Usage, int]:
    profile = profile_for(model_id)
    thinking: ThinkingMode = "disabled" if profile.thinking_off is not None else "adaptive"
    request = ModelRequest(
        model=model_id,
        max_tokens=CHECK_MAX_TOKENS if thinking == "disabled" else CHECK_MAX_TOKENS_THINKING,
        system=[{"type": "text", "text": CHECK_SYSTEM}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": description_question(conversation, undecided)}
                ],
            }
        ],
        thinking=thinking,
        effort="low" if profile.supports_effort else None,
        deadline=time.monotonic() + timeout_seconds,
        idle_timeout=min(timeout_seconds, 60.0),
    )
    names = [p.name for p in undecided]
    try:
        turn = await model.complete(request)
    except ModelError as exc:
        # The exception's class says what failed; its message could quote the request.
        why = f"the description check failed ({type(exc).__name__}), so it is not applied"
        return {name: Match(False, "description", why) for name in names}, Usage(), 0
    return read_description_answer(turn.text(), names), turn.usage, 1


def _record(name: str, procedure: Procedure | None, match: Match) -> ProcedureExecution:
    applies = bool(match.applies)
    status: Literal["not_applied", "in_brief", "not_started"] = "not_applied"
    if applies and procedure is not None:
        status = "in_brief" if procedure.form == "free_form" else "not_started"
    return ProcedureExecution(
        name=name,
        version=procedure.version if procedure else None,
        form=procedure.form if procedure else None,
        applies=applies,
        path=match.path,
        reason=match.reason,
        status=status,
    )
