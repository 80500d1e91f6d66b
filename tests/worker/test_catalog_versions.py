"""The catalog with several versions of one analyzer: the newest by default, `name@version` to
choose, and any selector string either chosen or refused with a clear `ConfigError`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzers.definitions.versions import parse_selector
from analyzers.errors import ConfigError
from tests.analyzers.helpers import conversation
from worker.catalog import BUILTIN_DIR, Catalog


def two_quality_versions(folder: Path) -> Path:
    """The built-in quality analyzer, plus a copy of it as version 1.10.0."""
    folder.mkdir()
    text = (BUILTIN_DIR / "quality.yaml").read_text(encoding="utf-8")
    assert 'version: "1.0.0"' in text
    (folder / "quality_next.yaml").write_text(
        text.replace('version: "1.0.0"', 'version: "1.10.0"'), encoding="utf-8"
    )
    return folder


def test_the_newest_version_is_the_default_and_name_at_version_selects(tmp_path: Path) -> None:
    catalog = Catalog.load([two_quality_versions(tmp_path / "more")])
    assert list(catalog.versions["quality"]) == ["1.0.0", "1.10.0"]
    assert catalog.analyzers["quality"].version == "1.10.0"
    assert [s.version for s in catalog.select(["quality"])] == ["1.10.0"]
    assert [s.version for s in catalog.select(["quality@1.0.0"])] == ["1.0.0"]
    chosen = catalog.select(["quality@1.0.0", "quality", "quality@1.10.0"])
    assert [s.version for s in chosen] == ["1.0.0", "1.10.0"]  # each version once
    # The newest of each analyzer that runs on conversations; standalone ones only by name.
    assert catalog.select(None) == [
        spec for spec in catalog.analyzers.values() if spec.name != "daily_digest"
    ]
    assert [s.name for s in catalog.select(["daily_digest"])] == ["daily_digest"]
    with pytest.raises(ConfigError, match=r"\['quality@2'\].*quality@1\.0\.0, quality@1\.10\.0"):
        catalog.select(["quality@2"])


def test_the_same_name_and_version_twice_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "dup"
    folder.mkdir()
    (folder / "quality.yaml").write_text(
        (BUILTIN_DIR / "quality.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="analyzer-unique"):
        Catalog.load([folder])


@pytest.fixture(scope="module")
def builtin_catalog() -> Catalog:
    return Catalog.load()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(
                ["quality", "quality@1.0.0", "quality@", "@1.0.0", "quality@1.0.0@x", "follow_ups"]
            ),
        ),
        max_size=4,
    )
)
def test_any_selector_is_chosen_or_refused_with_a_config_error(
    builtin_catalog: Catalog, names: list[str]
) -> None:
    known = {wanted for wanted in names if builtin_catalog.get(*parse_selector(wanted)) is not None}
    if known != set(names):
        with pytest.raises(ConfigError, match=r"unknown analyzer\(s\)"):
            builtin_catalog.select(names)
        return
    chosen = builtin_catalog.select(names)
    for spec_ in chosen:
        assert builtin_catalog.get(spec_.name, spec_.version) is spec_


def test_only_triggered_analyzers_carry_a_snapshot(builtin_catalog: Catalog) -> None:
    plans = builtin_catalog.plan(conversation(), ["quality@1.0.0"], max_attempts=2)
    [plan] = plans
    assert plan.skip_reason is None
    assert plan.snapshot is not None
    assert plan.snapshot.spec.version == "1.0.0"
