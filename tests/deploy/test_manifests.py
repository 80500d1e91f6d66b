"""deploy/ checked as data: every manifest renders and parses; images, commands, ports and probes
agree with the code; every variable a manifest passes is a setting; Kubernetes objects validate
against the Kubernetes schemas (offline, kubernetes-validate); the broker files are what
`posthoc broker-config` generates from the settings the manifests pass."""

from __future__ import annotations

import json
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer.main
import yaml
from pydantic import AliasChoices
from starlette.routing import Route

from tests.deploy.manifests import (
    DEPLOY,
    ROOT,
    Obj,
    command_words,
    container_env,
    containers,
    env_file,
    merge,
    pod_spec,
    render,
    systemd_unit,
)
from worker.catalog import Catalog
from worker.cli import app as cli_app
from worker.engine import broker_topology
from worker.http.app import Intake, create_app
from worker.ledger import Ledger
from worker.settings import Settings

K8S_VERSION = "1.33"
OVERLAYS = {
    "default": DEPLOY / "kubernetes" / "base",
    "production": DEPLOY / "kubernetes" / "overlays" / "production",
}
PENDING_COMMANDS: set[str] = set()
"""Commands the manifests run that another branch adds (`posthoc beat`, issue sched); remove
from here once merged: `test_pending_commands_are_still_pending` says when."""
NOT_SETTINGS = {"PGPASSWORD"}
"""Variables the manifests pass that libraries read, not posthoc's settings (libpq)."""
WORKER_PATHS = {"/healthz", "/metrics"}
"""What the worker's health port serves (worker/engine/liveness.py)."""
DRAIN_MARGIN_SECONDS = 15
"""Time a worker needs after its drain to hand runs back and exit."""


def settings_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"POSTHOC_{name.upper()}")
        if isinstance(field.validation_alias, AliasChoices):
            names |= {str(choice) for choice in field.validation_alias.choices}
    return names


def cli_commands() -> set[str]:
    group: Any = typer.main.get_command(cli_app)
    return set(group.commands)


def serve_paths() -> set[str]:
    with tempfile.TemporaryDirectory() as folder:
        ledger = Ledger.from_url(f"sqlite:///{folder}/ledger.sqlite3")
        try:
            app = create_app(
                Intake(ledger=ledger, catalog=Catalog.from_specs([]), enqueue=lambda _: None)
            )
            return {route.path for route in app.routes if isinstance(route, Route)}
        finally:
            ledger.dispose()


def assert_settings(env: dict[str, str], where: str) -> Settings:
    """Every variable is a setting (or known to be read by a library), and together they
    validate: the manifests pass nothing posthoc would ignore or refuse."""
    unknown = {
        name
        for name in env
        if name not in settings_variables()
        and name not in NOT_SETTINGS
        and not name.startswith("POSTHOC_SECRET_")
    }
    assert unknown == set(), f"{where}: not settings: {sorted(unknown)}"
    known = {name: value for name, value in env.items() if name not in NOT_SETTINGS}
    return _settings_from(known)


def _settings_from(env: dict[str, str]) -> Settings:
    import os

    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if name.startswith(("POSTHOC_", "ANTHROPIC_", "PROMETHEUS_")):
                del os.environ[name]
        os.environ.update({name: value for name, value in env.items() if value != ""})
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check_command(args: list[str], where: str) -> None:
    command = args[0]
    assert command in cli_commands() | PENDING_COMMANDS, f"{where}: no `posthoc {command}`"


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# -- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(OVERLAYS[request.param])


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def test_every_kubernetes_object_validates_against_the_schemas(
    rendered: tuple[str, list[Obj]],
) -> None:
    name, objects = rendered
    assert len(objects) >= 8, name
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {error.message}")


def test_a_broken_object_is_caught_by_the_validator() -> None:
    """The check above can fail: a misspelt field and a wrong type are refused."""
    deployment = by_kind(render(OVERLAYS["default"]), "Deployment")["posthoc-worker"]
    typo = merge(deployment, {"spec": {"replicas": "two"}})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)
    extra = merge(deployment, {"spec": {"replica": 2}})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(extra, K8S_VERSION, strict=True)


def test_every_workload_runs_the_one_image_with_a_real_command(
    rendered: tuple[str, list[Obj]],
) -> None:
    name, objects = rendered
    images = {c["image"] for obj in objects for c in containers(obj)}
    assert images == {"ghcr.io/example/posthoc:0.1.0"}, name
    commands = {c["args"][0] for obj in objects for c in containers(obj)}
    assert commands == {"serve", "worker", "beat", "migrate"}
    for obj in objects:
        for container in containers(obj):
            check_command(container["args"], f"{name}: {obj['metadata']['name']}")


def test_every_variable_a_workload_gets_is_a_setting(rendered: tuple[str, list[Obj]]) -> None:
    name, objects = rendered
    for obj in objects:
        for container in containers(obj):
            assert_settings(container_env(objects, container), f"{name}: {obj['metadata']['name']}")


def _port(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    [found] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(found)


def test_probes_and_ports_point_at_what_the_processes_serve(
    rendered: tuple[str, list[Obj]],
) -> None:
    name, objects = rendered
    deployments = by_kind(objects, "Deployment")
    [serve] = deployments["posthoc-serve"]["spec"]["template"]["spec"]["containers"]
    serve_port = int(option(serve["args"], "--port"))
    for probe in ("readinessProbe", "livenessProbe"):
        get = serve[probe]["httpGet"]
        assert get["path"] in serve_paths(), (name, probe)
        assert _port(serve, get["port"]) == serve_port
    service = by_kind(objects, "Service")["posthoc-serve"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {
        p["name"] for p in serve["ports"]
    }
    worker_template = deployments["posthoc-worker"]["spec"]["template"]
    [worker] = worker_template["spec"]["containers"]
    health_port = int(container_env(objects, worker)["POSTHOC_HEALTH_PORT"])
    assert container_env(objects, worker)["POSTHOC_HEALTH_HOST"] == "0.0.0.0"  # noqa: S104
    for probe in ("readinessProbe", "livenessProbe"):
        get = worker[probe]["httpGet"]
        assert get["path"] in WORKER_PATHS
        assert _port(worker, get["port"]) == health_port
    for template, port, paths in (
        (deployments["posthoc-serve"]["spec"]["template"], serve_port, serve_paths()),
        (worker_template, health_port, WORKER_PATHS),
    ):
        annotations = template["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == port
        assert annotations["prometheus.io/path"] in paths


def test_the_worker_grace_period_covers_the_drain(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    worker = by_kind(objects, "Deployment")["posthoc-worker"]
    spec = pod_spec(worker)
    assert spec is not None
    [container] = spec["containers"]
    settings = assert_settings(container_env(objects, container), "worker")
    grace = spec["terminationGracePeriodSeconds"]
    assert grace >= settings.shutdown_drain_seconds + DRAIN_MARGIN_SECONDS


def test_beat_is_a_single_replica_never_doubled_by_a_rollout(
    rendered: tuple[str, list[Obj]],
) -> None:
    _, objects = rendered
    beat = by_kind(objects, "Deployment")["posthoc-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert "horizontalpodautoscaler" not in json.dumps(beat).lower()
    targets = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in by_kind(objects, "HorizontalPodAutoscaler").values()
    }
    assert targets == {"posthoc-worker"}


def test_autoscaling_metrics_are_ones_posthoc_exports(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    exported = exported_metric_names()
    for hpa in by_kind(objects, "HorizontalPodAutoscaler").values():
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "External":
                assert metric["external"]["metric"]["name"] in exported


def test_secrets_hold_no_values_in_git(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    for secret in by_kind(objects, "Secret").values():
        assert set(secret["stringData"].values()) == {""}


def test_the_renderer_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(ValueError, match="configMapGenerator"):
        render(tmp_path)


# -- compose -----------------------------------------------------------------------------------


def compose() -> Obj:
    loaded: Obj = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def compose_env(service: Obj) -> dict[str, str]:
    """A service's environment with `${VAR:-default}` taken at its default."""
    return {
        name: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
        for name, value in service.get("environment", {}).items()
    }


def test_compose_runs_the_stack_with_real_commands_and_settings() -> None:
    services = compose()["services"]
    posthoc = {name: s for name, s in services.items() if "posthoc" in str(s.get("image", ""))}
    assert set(posthoc) == {"migrate", "serve", "worker", "beat"}
    assert {s["image"] for s in posthoc.values()} == {"${POSTHOC_IMAGE:-posthoc:0.1.0}"}
    for name, service in posthoc.items():
        check_command(service["command"], f"compose {name}")
        assert_settings(compose_env(service), f"compose {name}")
    assert services["migrate"]["restart"] == "no"
    for name in ("serve", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert {"postgres", "redis", "flower"} <= set(services)


def test_compose_ports_and_healthchecks_agree_with_the_code() -> None:
    services = compose()["services"]
    serve = services["serve"]
    port = option(serve["command"], "--port")
    assert serve["ports"] == [f"{port}:{port}"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(serve["healthcheck"]["test"])
    worker = services["worker"]
    env = compose_env(worker)
    assert f"127.0.0.1:{env['POSTHOC_HEALTH_PORT']}/healthz" in " ".join(
        worker["healthcheck"]["test"]
    )
    settings = assert_settings(env, "compose worker")
    grace = int(worker["stop_grace_period"].removesuffix("s"))
    assert grace >= settings.shutdown_drain_seconds + DRAIN_MARGIN_SECONDS


# -- systemd -----------------------------------------------------------------------------------

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit_path", UNITS, ids=[p.name for p in UNITS])
def test_systemd_units_run_real_commands_with_real_settings(unit_path: Path) -> None:
    unit = systemd_unit(unit_path)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    [exec_start] = service["ExecStart"]
    words = command_words(exec_start)
    assert words[0] == "/opt/posthoc/bin/posthoc"
    check_command(words[1:], unit_path.name)
    env = dict(env_file(DEPLOY / "systemd" / "posthoc.env.example"))
    for line in service.get("Environment", []):
        name, value = line.split("=", 1)
        env[name] = value.replace("%i", "1")
    settings = assert_settings(env, unit_path.name)
    assert service["User"] == ["posthoc"]
    if words[1] == "migrate":
        assert service["Type"] == ["oneshot"]
    else:
        assert unit["Unit"]["Requires"] == ["posthoc-migrate.service"]
        assert service["Restart"] == ["always"]
    if words[1] == "worker":
        assert int(service["TimeoutStopSec"][0]) >= (
            settings.shutdown_drain_seconds + DRAIN_MARGIN_SECONDS
        )


def test_the_systemd_units_cover_every_role() -> None:
    assert {p.name for p in UNITS} == {
        "posthoc-migrate.service",
        "posthoc-serve.service",
        "posthoc-worker@.service",
        "posthoc-beat.service",
    }


def test_pending_commands_are_still_pending() -> None:
    """Once `posthoc beat` exists, drop it from PENDING_COMMANDS so the check covers it."""
    assert PENDING_COMMANDS.isdisjoint(cli_commands())


# -- brokers, image, lock ------------------------------------------------------------------------


def test_broker_files_are_generated_from_the_settings_the_manifests_pass() -> None:
    env = compose_env(compose()["services"]["worker"])
    env["POSTHOC_BROKER_URL"] = "amqp://posthoc:posthoc@rabbitmq:5672//"
    settings = assert_settings(env, "compose worker on RabbitMQ")
    for name in ("rabbitmq.conf", "definitions.json"):
        checked_in = (DEPLOY / "rabbitmq" / name).read_text(encoding="utf-8")
        assert checked_in == broker_topology.render(settings, name), (
            f"deploy/rabbitmq/{name} is stale: regenerate it with `posthoc broker-config {name}`"
        )
    for name, objects in ((n, render(p)) for n, p in OVERLAYS.items()):
        [config] = [o for o in objects if o["kind"] == "ConfigMap"]
        k8s = assert_settings(config["data"], name)
        assert k8s.visibility_timeout_seconds == settings.visibility_timeout_seconds
        assert k8s.retry_max_seconds <= settings.retry_max_seconds


def test_the_consumer_timeout_outlasts_every_wait_of_an_unacknowledged_message() -> None:
    settings = Settings(broker_url="amqp://x//", visibility_timeout_seconds=7200)
    conf = broker_topology.rabbitmq_conf(settings)
    [timeout_ms] = re.findall(r"^consumer_timeout = (\d+)$", conf, re.MULTILINE)
    assert int(timeout_ms) > 7200 * 1000
    policy = broker_topology.rabbitmq_policy(settings)["definition"]
    assert policy["consumer-timeout"] == int(timeout_ms)
    assert policy["dead-letter-exchange"] == "posthoc.runs.dead-letter"
    pattern = re.compile(broker_topology.rabbitmq_policy(settings)["pattern"])
    assert pattern.match("posthoc.runs")
    assert pattern.match("posthoc.runs.takeover")
    assert not pattern.match("posthoc.runs.dead-letter")
    assert not pattern.match("posthocXruns")
    assert broker_topology.redis_transport_options(settings) == {"visibility_timeout": 7200}


def test_quorum_queues_are_declared_by_the_celery_app_only_when_asked() -> None:
    from worker.engine.celery_app import celery_config

    classic = celery_config(Settings(broker_url="amqp://x//"))
    assert "task_default_queue_type" not in classic
    quorum = celery_config(Settings(broker_url="amqp://x//", rabbitmq_queue_type="quorum"))
    assert quorum["task_default_queue_type"] == quorum["task_create_missing_queue_type"]
    assert quorum["task_default_queue_type"] == "quorum"
    redis = celery_config(Settings(broker_url="redis://x/0", rabbitmq_queue_type="quorum"))
    assert "task_default_queue_type" not in redis
    assert redis["broker_transport_options"] == {"visibility_timeout": 3600}


def test_the_image_is_multi_stage_slim_non_root_pinned_and_runs_posthoc() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(
        r"^ARG PYTHON_IMAGE=python:[\w.-]*slim[\w.-]*@sha256:[0-9a-f]{64}$",
        dockerfile,
        re.MULTILINE,
    )
    stages = re.findall(r"^FROM \$\{PYTHON_IMAGE\} AS (\w+)$", dockerfile, re.MULTILINE)
    assert stages == ["build", "runtime"]
    runtime = dockerfile.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE)
    assert 'ENTRYPOINT ["posthoc"]' in runtime
    assert "HEALTHCHECK" in runtime
    assert "-r requirements.lock" in dockerfile
    assert "--no-deps ." in dockerfile
    cmd = json.loads(re.findall(r"^CMD (.*)$", runtime, re.MULTILINE)[0])
    check_command(cmd, "Dockerfile CMD")


def test_the_lock_pins_exactly_what_pyproject_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    direct = project["dependencies"] + project["optional-dependencies"]["otel"]
    locked = {}
    for line in (DEPLOY / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            locked[_normal(name)] = version
    for requirement in direct:
        name, version = requirement.split("==")
        assert locked.get(_normal(name.split("[")[0])) == version, requirement


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def exported_metric_names() -> set[str]:
    """Every sample name posthoc's metrics produce (counters' `_total`, histograms' parts)."""
    from prometheus_client import REGISTRY

    import worker.observability.metrics  # noqa: F401 - registers the metrics

    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("posthoc_"):
            names.add(family.name)
            if family.type == "counter":
                names.add(f"{family.name}_total")
            if family.type == "histogram":
                names |= {f"{family.name}_{part}" for part in ("bucket", "sum", "count")}
    return names


def test_a_variable_posthoc_would_ignore_or_refuse_is_caught() -> None:
    with pytest.raises(AssertionError, match="POSTHOC_CONCURENCY"):
        assert_settings({"POSTHOC_CONCURENCY": "10"}, "typo")
    with pytest.raises(ValueError, match="concurrency"):
        assert_settings({"POSTHOC_CONCURRENCY": "0"}, "out of range")
