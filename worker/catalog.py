"""The analyzers and procedures a worker knows: the built-ins and the configured folders.

Several versions of one analyzer may be loaded at once. A bare name means its newest version
(ordered by `analyzers.definitions.versions.version_key`); `name@version` selects one exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import analyzers as analyzers_package
from analyzers.definitions.chaining import chained_after, child_applies, with_parent_outputs
from analyzers.definitions.checks import check_definitions
from analyzers.definitions.expressions import SharedVariables, conversation_variables
from analyzers.definitions.loading import DefinitionSet, load_paths
from analyzers.definitions.triggers import analyzer_applies
from analyzers.definitions.versions import parse_selector, selector, version_key
from analyzers.errors import ConfigError
from analyzers.runtime.snapshot import SnapshotCache, build_snapshot
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from schemas.result import AnalysisResult
from worker.ledger import RunPlan

BUILTIN_DIR = Path(analyzers_package.__file__).parent / "builtin"
STANDALONE_SKIP_REASON = (
    "a standalone analyzer (input: results) runs over stored results, not on one "
    "conversation: run it from a schedule (`kind: schedule`, `posthoc beat`)"
)


@dataclass(frozen=True)
class Catalog:
    """Analyzers and every procedure, loaded and checked once per process.

    `analyzers` holds the newest version of each analyzer by name (the default everywhere a
    bare name is used); `versions` every loaded version, by name and then version, oldest first.
    """

    analyzers: dict[str, AnalyzerSpec]
    procedures: tuple[Procedure, ...]
    versions: dict[str, dict[str, AnalyzerSpec]] = field(default_factory=dict)
    snapshots: SnapshotCache = field(
        default_factory=SnapshotCache, compare=False, repr=False, hash=False
    )
    """Snapshots built for `plan`, shared by the conversations they are the same for."""

    def __post_init__(self) -> None:
        if not self.versions:
            versions = {name: {spec.version: spec} for name, spec in self.analyzers.items()}
            object.__setattr__(self, "versions", versions)

    @classmethod
    def from_specs(
        cls, specs: Iterable[AnalyzerSpec], procedures: Iterable[Procedure] = ()
    ) -> Catalog:
        """A catalog of these analyzers (any number of versions each) and procedures."""
        by_name: dict[str, dict[str, AnalyzerSpec]] = {}
        for spec in specs:
            by_name.setdefault(spec.name, {})[spec.version] = spec
        versions = {
            name: dict(sorted(found.items(), key=lambda item: version_key(item[0])))
            for name, found in by_name.items()
        }
        newest = {name: list(found.values())[-1] for name, found in versions.items()}
        return cls(analyzers=newest, procedures=tuple(procedures), versions=versions)

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
        return cls.from_specs(
            (a.value for a in loaded.analyzers), (p.value for p in loaded.procedures)
        )

    def get(self, name: str, version: str | None = None) -> AnalyzerSpec | None:
        """The analyzer `name` at `version` (its newest for None), or None if not loaded."""
        if version is None:
            return self.analyzers.get(name)
        return self.versions.get(name, {}).get(version)

    def select(self, names: Sequence[str] | None) -> list[AnalyzerSpec]:
        """The analyzers named (`name` or `name@version`; for None the newest of each that runs
        on conversations: standalone analyzers run only when named or scheduled).

        An unknown name or version is a `ConfigError` listing what is loaded.
        """
        if not names:
            return [spec for spec in self.analyzers.values() if spec.input == "conversation"]
        chosen: dict[tuple[str, str], AnalyzerSpec] = {}
        unknown = []
        for wanted in names:
            spec = self.get(*parse_selector(wanted))
            if spec is None:
                unknown.append(wanted)
            else:
                chosen.setdefault((spec.name, spec.version), spec)
        if unknown:
            loaded = ", ".join(
                selector(name, version)
                for name, found in sorted(self.versions.items())
                for version in found
            )
            raise ConfigError(
                f"unknown analyzer(s) {sorted(unknown)}; known: {sorted(self.versions)} "
                f"(loaded versions: {loaded}; a bare name means the newest version)"
            )
        return list(chosen.values())

    def plan(
        self,
        conversation: Conversation,
        names: Sequence[str] | None,
        max_attempts: int,
        procedures: Sequence[Procedure] | None = None,
    ) -> list[RunPlan]:
        """One run plan per selected analyzer: queued (with the snapshot it will execute) when
        its trigger matches, else skipped with the reason. Snapshots resolve procedures from
        `procedures` (the store's, `worker.procedure_source`), else from the loaded files."""
        available = self.procedures if procedures is None else procedures
        plans = []
        # A chained analyzer runs after its parent (`after:`), not on conversations by itself,
        # unless it is asked for by name.
        chosen = [spec for spec in self.select(names) if names or spec.after is None]
        # The variables trigger expressions see, built once for all of them.
        variables = (
            SharedVariables(conversation_variables(conversation))
            if any(spec.trigger.expression for spec in chosen)
            else None
        )
        for spec in chosen:
            if spec.input == "results":
                plans.append(
                    RunPlan(
                        analyzer=spec.name,
                        analyzer_version=spec.version,
                        skip_reason=STANDALONE_SKIP_REASON,
                        max_attempts=max_attempts,
                    )
                )
                continue
            decision = analyzer_applies(spec, conversation, variables)
            plans.append(
                RunPlan(
                    analyzer=spec.name,
                    analyzer_version=spec.version,
                    skip_reason=None if decision.applies else decision.reason,
                    max_attempts=max_attempts,
                    snapshot=(
                        self.snapshots.build(spec, conversation, available)
                        if decision.applies
                        else None
                    ),
                    settle_seconds=spec.trigger.settle_seconds,
                )
            )
        return plans

    def chain_plans(
        self, parent: AnalysisResult, conversation: Conversation, max_attempts: int
    ) -> list[RunPlan]:
        """Run plans for the analyzers chained after `parent`'s analyzer that apply to this
        result (newest versions; see `analyzers.definitions.chaining`)."""
        plans = []
        for child in chained_after(parent.analyzer, list(self.analyzers.values())):
            if not child_applies(child, parent, conversation).applies:
                continue
            told = with_parent_outputs(child, parent)
            plans.append(
                RunPlan(
                    analyzer=child.name,
                    analyzer_version=child.version,
                    max_attempts=max_attempts,
                    snapshot=build_snapshot(told, conversation, self.procedures),
                )
            )
        return plans

    def companions(self, spec: AnalyzerSpec, conversation: Conversation) -> list[AnalyzerSpec]:
        """The other analyzers that run on this conversation (they share its cached prompt)."""
        others = [
            other
            for other in self.analyzers.values()
            if other.name != spec.name and other.input == "conversation"
        ]
        # The variables trigger expressions see, built once for all of them (every run).
        variables = (
            SharedVariables(conversation_variables(conversation))
            if any(other.trigger.expression for other in others)
            else None
        )
        return [
            other for other in others if analyzer_applies(other, conversation, variables).applies
        ]
