"""Rule violations found in a valid-shaped definition, with where they are and which rule.

Shape errors (a wrong type, a missing field) are pydantic's job. Rules that span several fields
(an `if` step may not come first) are checked by pure functions that return `RuleViolation`s;
the models raise them as one pydantic error of type `rule_violations` whose context carries the
list, so a loader can point at the exact file line of each one.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_core import PydanticCustomError

Loc = tuple[str | int, ...]

RULE_VIOLATIONS = "rule_violations"


@dataclass(frozen=True)
class RuleViolation:
    """One broken rule: `loc` is the path inside the definition, `rule` a stable short id."""

    loc: Loc
    rule: str
    message: str

    def render_loc(self) -> str:
        """`steps[2].arguments` style path, or `(top level)`."""
        return render_loc(self.loc)


def render_loc(loc: Loc) -> str:
    """Render a pydantic-style location as a dotted path with list indices in brackets."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def raise_if_any(violations: list[RuleViolation]) -> None:
    """Raise all violations as one pydantic error so model validation reports them together."""
    if not violations:
        return
    summary = "; ".join(f"{v.render_loc()}: {v.message} (rule {v.rule})" for v in violations)
    raise PydanticCustomError(
        RULE_VIOLATIONS,
        "{summary}",
        {
            "summary": summary,
            "violations": [
                {"loc": list(v.loc), "rule": v.rule, "message": v.message} for v in violations
            ],
        },
    )
