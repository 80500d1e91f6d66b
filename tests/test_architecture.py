"""The dependency rules of DESIGN.md, checked on the source: worker → analyzers → schemas."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)


def imports_of(package: str) -> Iterator[tuple[Path, str]]:
    """Every (file, top-level module) imported by a package's modules."""
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module


def top(module: str) -> str:
    """The top-level package of a dotted module name."""
    return module.split(".", maxsplit=1)[0]


def test_schemas_import_only_pydantic_and_the_standard_library() -> None:
    """The contracts are pure: no I/O libraries, no other posthoc package."""
    allowed = STDLIB | {"pydantic", "pydantic_core", "schemas", "__future__"}
    offenders = [(p.name, m) for p, m in imports_of("schemas") if top(m) not in allowed]
    assert offenders == []


def test_analyzers_never_import_the_worker_or_its_edges() -> None:
    """The runtime knows nothing of queues, databases, Slack or the worker."""
    forbidden = {"worker", "celery", "kombu", "slack_sdk", "sqlalchemy", "redis", "psycopg"}
    offenders = [(p.name, m) for p, m in imports_of("analyzers") if top(m) in forbidden]
    assert offenders == []


@pytest.mark.parametrize("package", ["schemas", "analyzers", "worker"])
def test_only_the_adapter_imports_the_anthropic_sdk(package: str) -> None:
    """`analyzers/model/anthropic.py` is the one module that imports `anthropic` (and the HTTP
    library the SDK runs on)."""
    adapter = ROOT / "analyzers" / "model" / "anthropic.py"
    offenders = [
        (str(p.relative_to(ROOT)), m)
        for p, m in imports_of(package)
        if top(m) in {"anthropic", "httpx2"} and p != adapter
    ]
    # The worker's HTTP tool transport uses httpx2 directly: it is an edge of the worker.
    offenders = [o for o in offenders if o != ("worker/http_transport.py", "httpx2")]
    assert offenders == []


# Inside `analyzers/`, the sub-packages are layered: the model edge knows only its protocol;
# definitions and tools never reach up into the run; only the runtime (and the package's
# entry points) may import it. The fakes stand beside the model edge and reach no higher.
ANALYZER_LAYERS: dict[str, set[str]] = {
    "model": {"errors", "model"},
    "fakes": {"errors", "model", "fakes"},
    "tools": {"errors", "tools", "definitions"},
    "definitions": {"errors", "definitions", "tools"},
    "procedures": {"errors", "procedures", "definitions", "tools", "model"},
    "runtime": {"errors", "runtime", "definitions", "tools", "model", "procedures"},
}


def _sub_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "analyzers" or len(parts) < 2:
        return None
    return parts[1]


@pytest.mark.parametrize("layer", sorted(ANALYZER_LAYERS))
def test_analyzer_sub_packages_import_only_their_layers(layer: str) -> None:
    allowed = ANALYZER_LAYERS[layer]
    offenders = [
        (str(p.relative_to(ROOT)), m)
        for p, m in imports_of(f"analyzers/{layer}")
        if (sub := _sub_package(m)) is not None and sub not in allowed
    ]
    assert offenders == []


def test_every_analyzer_sub_package_has_a_layer() -> None:
    """A new sub-package must say where it sits before it can be imported from."""
    packages = {p.parent.name for p in (ROOT / "analyzers").glob("*/__init__.py")}
    assert packages <= set(ANALYZER_LAYERS) | {"builtin"}
