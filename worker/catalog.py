"""The analyzers and procedures a worker knows: the built-ins and the configured folders."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import analyzers as analyzers_package
from analyzers.definitions.checks import check_definitions
from analyzers.definitions.loading import DefinitionSet, load_paths
from analyzers.definitions.triggers import analyzer_applies
from analyzers.errors import ConfigError
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from worker.ledger import RunPlan

BUILTIN_DIR = Path(analyzers_package.__file__).parent / "builtin"


@dataclass(frozen=True)
class Catalog:
    """Analyzers by name and every procedure, loaded and checked once per process."""

    analyzers: dict[str, AnalyzerSpec]
    procedures: tuple[Procedure, ...]

    @classmethod
    def load(
        cls,
        analyzer_dirs: Iterable[Path] = (),
        procedure_dirs: Iterable[Path] = (),
        *,
        builtins: bool = True,
    ) -> Catalog:
        """Load and check everything; any problem is a `ConfigError` that lists them all."""
        paths = [*([BUILTIN_DIR] if builtins else []), *analyzer_dirs, *procedure_dirs]
        loaded = DefinitionSet()
        if paths:
            loaded = load_paths(paths)
        problems = loaded.problems + check_definitions(loaded)
        if problems:
            listing = "\n".join(str(problem) for problem in problems)
            raise ConfigError(f"{len(problems)} problem(s) in analyzer definitions:\n{listing}")
        if loaded.conversations:
            files = sorted({c.file for c in loaded.conversations})
            raise ConfigError(f"analyzer and procedure folders hold conversations: {files}")
        return cls(
            analyzers={a.value.name: a.value for a in loaded.analyzers},
            procedures=tuple(p.value for p in loaded.procedures),
        )

    def select(self, names: Sequence[str] | None) -> list[AnalyzerSpec]:
        """The analyzers named (all of them for None); an unknown name is a `ConfigError`."""
        if not names:
            return list(self.analyzers.values())
        unknown = sorted(set(names) - set(self.analyzers))
        if unknown:
            raise ConfigError(f"unknown analyzer(s) {unknown}; known: {sorted(self.analyzers)}")
        return [self.analyzers[name] for name in dict.fromkeys(names)]

    def plan(
        self, conversation: Conversation, names: Sequence[str] | None, max_attempts: int
    ) -> list[RunPlan]:
        """One run plan per selected analyzer: queued when its trigger matches, else skipped."""
        plans = []
        for spec in self.select(names):
            decision = analyzer_applies(spec, conversation)
            plans.append(
                RunPlan(
                    analyzer=spec.name,
                    analyzer_version=spec.version,
                    skip_reason=None if decision.applies else decision.reason,
                    max_attempts=max_attempts,
                )
            )
        return plans

    def companions(self, spec: AnalyzerSpec, conversation: Conversation) -> list[AnalyzerSpec]:
        """The other analyzers that run on this conversation (they share its cached prompt)."""
        return [
            other
            for other in self.analyzers.values()
            if other.name != spec.name and analyzer_applies(other, conversation).applies
        ]
