"""The alert rules and the Grafana dashboard in deploy/, checked the way promtool would where it
can be (promtool is not installable here): they parse, every rule has the fields Prometheus
requires, durations are durations, parentheses balance, and every metric they query is one
posthoc exports, by its exposed name. Plus the metric definitions themselves: Prometheus naming,
bounded labels, and a multiprocess scrape that adds up several processes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, ROOT
from tests.deploy.test_manifests import exported_metric_names

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
METRIC = re.compile(r"\b(posthoc_[a-z_]+)\b")
FORBIDDEN_LABELS = {"conversation_id", "run_id", "tenant_id", "delivery_id", "event_id"}


def alert_rules() -> list[dict[str, object]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    rules = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        rules += group["rules"]
    return rules


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(
        (DEPLOY / "grafana" / "posthoc-dashboard.json").read_text(encoding="utf-8")
    )
    assert dashboard["uid"]
    assert dashboard["panels"]
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for char in expr:
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_alert_rules_are_well_formed() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert isinstance(rule["expr"], str)
        assert rule["expr"].strip()
        assert balanced(rule["expr"]), rule["alert"]
        if "for" in rule:
            assert DURATION.match(str(rule["for"])), rule["alert"]
        labels = rule["labels"]
        assert isinstance(labels, dict)
        assert labels["severity"] in {"page", "ticket"}
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert "summary" in annotations


def test_the_alerts_the_issue_asks_for_exist() -> None:
    queried = " ".join(str(rule["expr"]) for rule in alert_rules())
    for needed in (
        'posthoc_runs_total{status="failed"}',
        'posthoc_deliveries_total{status="dead"}',
        "posthoc_queue_oldest_waiting_seconds",
        "posthoc_worker_free_slots",
        "posthoc_model_cost_dollars_total",
    ):
        assert needed in queried


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_queried_metric_is_exported(source: str) -> None:
    expressions = (
        [str(rule["expr"]) for rule in alert_rules()]
        if source == "alerts"
        else dashboard_expressions()
    )
    exported = exported_metric_names()
    for expr in expressions:
        assert balanced(expr), expr
        unknown = set(METRIC.findall(expr)) - exported
        assert unknown == set(), f"{expr}: not exported: {sorted(unknown)}"


def test_metric_names_follow_the_conventions_and_labels_are_bounded() -> None:
    from prometheus_client import REGISTRY

    families = [f for f in REGISTRY.collect() if f.name.startswith("posthoc_")]
    assert len(families) == 13
    for family in families:
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            assert FORBIDDEN_LABELS.isdisjoint(sample.labels), family.name


def test_every_panel_and_alert_query_names_only_labels_the_metric_has() -> None:
    """`by (...)` and matchers use labels the metric really carries (a typo would silently
    match nothing)."""
    from worker.observability import metrics

    labels = {
        "posthoc_runs_total": {"analyzer", "version", "status"},
        "posthoc_run_duration_seconds_bucket": {"analyzer", "status", "le"},
        "posthoc_model_request_duration_seconds_bucket": {"model", "le"},
        "posthoc_model_tokens_total": {"analyzer", "kind"},
        "posthoc_model_cost_dollars_total": {"analyzer"},
        "posthoc_model_retries_total": {"cause"},
        "posthoc_deliveries_total": {"sink", "status"},
        "posthoc_webhook_requests_total": {"source", "answer"},
    }
    assert metrics.RUNS._labelnames == ("analyzer", "version", "status")
    for expr in [str(r["expr"]) for r in alert_rules()] + dashboard_expressions():
        for name, matchers in re.findall(r"(posthoc_[a-z_]+)\{([^}]*)\}", expr):
            used = {m.split("=")[0].strip(" !~") for m in matchers.split(",")}
            assert used <= labels[name], expr


MULTIPROCESS_CHILD = """
import os, sys
from worker.observability import metrics
metrics.configure_slots(10)
metrics.run_started()
metrics.RUNS.labels("quality", "1.0.0", "succeeded").inc(int(sys.argv[1]))
print(os.getpid())
"""


def test_a_multiprocess_scrape_adds_up_every_process(tmp_path: Path) -> None:
    """Two worker processes write to one PROMETHEUS_MULTIPROC_DIR; one scrape sums them: runs
    add up, in-flight and free slots are the sums over processes still alive; a child that
    exited stops counting once its parent says so (`process_exited`)."""
    from worker.observability import metrics

    python = ROOT / ".venv" / "bin" / "python"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    pids = [
        int(
            subprocess.run(  # noqa: S603 - our interpreter, a fixed script
                [str(python), "-c", MULTIPROCESS_CHILD, count],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        for count in ("2", "3")
    ]

    def scrape() -> str:
        return metrics.exposition(tmp_path)[0].decode()

    text = scrape()
    assert 'posthoc_runs_total{analyzer="quality",status="succeeded",version="1.0.0"} 5.0' in text
    assert "posthoc_worker_runs_in_flight 2.0" in text
    assert "posthoc_worker_free_slots 18.0" in text
    metrics.process_exited(pids[0], tmp_path)
    text = scrape()
    assert "posthoc_worker_runs_in_flight 1.0" in text
    assert "posthoc_worker_free_slots 9.0" in text
    assert 'posthoc_runs_total{analyzer="quality",status="succeeded",version="1.0.0"} 5.0' in text
    assert metrics.exposition(None)[1].startswith("text/plain")
