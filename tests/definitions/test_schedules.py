"""`kind: schedule` files: loaded by the definitions loader with located problems, fuzzed (no
traceback, every problem located), and the slot arithmetic every beat agrees on."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzers.definitions.checks import check_definitions
from analyzers.definitions.loading import load_definition_file
from analyzers.definitions.schedules import cron_problem, latest_slot, next_slot, slots_between
from schemas.schedule import ScheduleSpec
from tests.definitions.helpers import all_problems, at, line_of, load, write

EXAMPLES = 30 if os.environ.get("CI") else 60


def problems_of(*paths: Path) -> list[str]:
    return [str(problem) for problem in all_problems(*paths)]


def test_a_valid_schedule_loads_beside_analyzers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "nightly.yaml",
        """
        kind: schedule
        name: nightly_quality
        description: Re-run quality on yesterday's conversations of acme.
        cron: "0 2 * * *"
        timezone: Europe/Paris
        rerun:
          analyzer: quality@2
          tenant: acme
          since: {days: 1}
        ---
        kind: schedule
        name: digest
        interval: {hours: 24}
        standalone: {analyzer: daily_digest, tenant: acme, since: {hours: 24}}
        """,
    )
    loaded = load(path)
    assert loaded.problems == []
    nightly, digest = (sourced.value for sourced in loaded.schedules)
    assert nightly.rerun is not None
    assert nightly.rerun.since.as_timedelta() == timedelta(days=1)
    assert nightly.rerun.until.as_timedelta() == timedelta(0)
    assert digest.action.analyzer == "daily_digest"


def test_each_problem_names_its_line_field_and_rule(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        """
        kind: schedule
        name: bad_cron
        cron: "0 2 * *"
        standalone: {analyzer: daily_digest, since: {hours: 24}}
        ---
        kind: schedule
        name: bad_zone
        cron: "0 2 * * *"
        timezone: Mars/Olympus
        standalone: {analyzer: daily_digest, since: {hours: 24}}
        ---
        kind: schedule
        name: bad_window
        interval: {minutes: 5}
        standalone:
          analyzer: daily_digest
          since: {hours: 1}
          until: {hours: 2}
        ---
        kind: schedule
        name: both
        cron: "0 2 * * *"
        interval: {minutes: 5}
        standalone: {analyzer: daily_digest, since: {hours: 24}}
        ---
        kind: schedule
        name: never
        cron: "0 0 30 2 *"
        standalone: {analyzer: daily_digest, since: {hours: 24}}
        """,
    )
    problems = problems_of(path)
    cron = at(path, line_of(path, '"0 2 * *"'), "cron")
    zone = at(path, line_of(path, "Mars/Olympus"), "timezone")
    since = at(path, line_of(path, "since: {hours: 1}"), "since")
    both = at(path, line_of(path, "name: both") + 1, "cron")
    never = at(path, line_of(path, '"0 0 30 2 *"'), "cron")
    assert any(f"bad.yaml:{cron}: cron:" in p and "[cron-valid]" in p for p in problems)
    assert any(f"bad.yaml:{zone}: timezone:" in p and "[timezone-known]" in p for p in problems)
    assert any(
        f"bad.yaml:{since}: standalone.since:" in p and "[window-ordered]" in p for p in problems
    )
    assert any(f"bad.yaml:{both}: cron:" in p and "[schedule-time]" in p for p in problems)
    assert any(f"bad.yaml:{never}: cron:" in p and "never fires" in p for p in problems)
    assert len(problems) == 5


def test_an_action_naming_the_wrong_kind_of_analyzer_is_located(tmp_path: Path) -> None:
    analyzer = write(
        tmp_path,
        "a.yaml",
        """
        kind: analyzer
        name: triage
        description: Flags calls.
        instructions: Flag it.
        outputs:
          - {name: flag, description: A flag., schema: {type: boolean}}
        """,
    )
    schedule = write(
        tmp_path,
        "s.yaml",
        """
        kind: schedule
        name: wrong
        interval: {hours: 1}
        standalone:
          analyzer: triage
          since: {hours: 1}
        """,
    )
    problems = problems_of(analyzer, schedule)
    line = at(schedule, line_of(schedule, "analyzer: triage"), "analyzer")
    assert problems == [
        f"{schedule}:{line}: standalone.analyzer: analyzer 'triage' reads one conversation "
        "(input: conversation); a standalone action runs an analyzer with input: results "
        "[schedule-analyzer-kind]"
    ]


def test_ledger_tools_are_refused_on_a_conversation_analyzer(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.yaml",
        """
        kind: analyzer
        name: triage
        description: Flags calls.
        instructions: Flag it.
        tools: [query_results]
        outputs:
          - {name: flag, description: A flag., schema: {type: boolean}}
        """,
    )
    [problem] = problems_of(path)
    assert f"a.yaml:{line_of(path, 'tools:')}: tools[0]:" in problem
    assert "[tool-needs-results-input]" in problem


# --- fuzz ----------------------------------------------------------------------------------

_text = st.text(max_size=30)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12), _text)
_duration = st.one_of(
    _scalar,
    st.dictionaries(
        st.sampled_from(["days", "hours", "minutes", "seconds", "weeks"]),
        st.one_of(st.integers(-5, 10**9), _text),
        max_size=3,
    ),
)
_cron = st.one_of(
    _scalar,
    st.lists(
        st.sampled_from(["*", "0", "*/5", "1-5", "L", "60", "MON", "?", "#", "2/0", "99999"]),
        min_size=0,
        max_size=8,
    ).map(" ".join),
)
_action = st.fixed_dictionaries(
    {},
    optional={
        "analyzer": st.one_of(_scalar, st.sampled_from(["daily_digest", "quality@2"])),
        "since": _duration,
        "until": _duration,
        "tenant": _scalar,
        "where": _scalar,
        "budget_usd": st.one_of(_scalar, st.floats(allow_nan=True)),
    },
)
_schedule = st.fixed_dictionaries(
    {"kind": st.just("schedule")},
    optional={
        "name": st.one_of(_scalar, st.sampled_from(["nightly", "a" * 70])),
        "cron": _cron,
        "interval": _duration,
        "timezone": st.one_of(
            _scalar, st.sampled_from(["UTC", "Europe/Paris", "../../etc/passwd", "a\x00b", ""])
        ),
        "missed_grace": _duration,
        "enabled": _scalar,
        "rerun": st.one_of(_scalar, _action),
        "standalone": st.one_of(_scalar, _action),
        "extra": _scalar,
    },
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(documents=st.lists(_schedule, min_size=1, max_size=3))
def test_fuzzed_schedule_files_load_or_give_located_problems(
    tmp_path: Path, documents: list[dict[str, Any]]
) -> None:
    path = tmp_path / "fuzzed.yaml"
    path.write_text(yaml.safe_dump_all(documents, allow_unicode=True), encoding="utf-8")
    loaded = load(path)
    problems = loaded.problems + check_definitions(loaded)  # never a traceback
    assert loaded.schedules or problems
    for problem in problems:
        assert problem.file == str(path)
        assert problem.rule
        assert problem.field
        assert problem.line is not None, f"unlocated: {problem}"
    for sourced in loaded.schedules:
        spec = sourced.value
        # A loaded schedule has slots every beat can compute without an error.
        now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
        latest_slot(spec, now)
        next_slot(spec, now)


@settings(max_examples=EXAMPLES, deadline=None)
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_a_schedule_file_give_problems_not_tracebacks(raw: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "s.yaml"
        path.write_bytes(b"kind: schedule\n" + raw)
        loaded = load_definition_file(path)
        assert all(problem.file == str(path) for problem in loaded.problems)


_cron_fields = st.tuples(
    st.sampled_from(["*", "0", "15", "*/7", "5-10", "0,30"]),
    st.sampled_from(["*", "0", "2", "*/3", "9-17"]),
    st.sampled_from(["*", "1", "15", "28", "L"]),
    st.sampled_from(["*", "1", "3", "*/2"]),
    st.sampled_from(["*", "0", "1-5", "6"]),
).map(" ".join)
_zones = st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
_moments = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(cron=_cron_fields, zone=_zones, now=_moments)
def test_cron_slots_bracket_now_and_agree_with_the_listing(
    cron: str, zone: str, now: datetime
) -> None:
    assert cron_problem(cron, zone) is None
    spec = ScheduleSpec.model_validate(
        {
            "name": "s",
            "cron": cron,
            "timezone": zone,
            "standalone": {"analyzer": "daily_digest", "since": {"hours": 1}},
        }
    )
    latest = latest_slot(spec, now)
    upcoming = next_slot(spec, now)
    assert latest is not None
    assert upcoming is not None
    assert latest <= now < upcoming
    assert latest.tzinfo is not None
    # No slot lies strictly between the latest one and now.
    assert list(slots_between(spec, latest, now)) == []
    assert next(iter(slots_between(spec, latest - timedelta(microseconds=1), now))) == latest


@settings(max_examples=EXAMPLES, deadline=None)
@given(seconds=st.integers(1, 7 * 86400), now=_moments)
def test_interval_slots_are_the_same_for_every_beat(seconds: int, now: datetime) -> None:
    spec = ScheduleSpec.model_validate(
        {
            "name": "s",
            "interval": {"seconds": seconds},
            "standalone": {"analyzer": "daily_digest", "since": {"hours": 1}},
        }
    )
    latest = latest_slot(spec, now)
    assert latest is not None
    assert latest <= now < latest + timedelta(seconds=seconds)
    assert next_slot(spec, now) == latest + timedelta(seconds=seconds)
    assert int(latest.timestamp()) % seconds == 0
