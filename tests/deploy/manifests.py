"""Reading deploy/ as data: a small kustomize renderer (the subset the files use), the compose
file, systemd units, and what the code says the manifests must agree with.

No kustomize, helm, docker or systemd binary is installed where the tests run, so the files are
rendered here. The renderer supports `resources` (files and directories with a
kustomization.yaml), `patches` with a `path` (strategic merge: maps merge, lists of maps merge by
`name`, other lists are replaced, as Kubernetes does for containers, env, ports and volumes),
`images` (`newName`, `newTag`), `namespace` and `labels`; `check_supported` fails on anything
else, so a file that uses more than the renderer knows is caught rather than half-rendered.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "patches", "images", "namespace", "labels"}
NAMESPACED_KINDS = {"ConfigMap", "Secret", "Deployment", "Service", "Job", "Ingress"}
NAMESPACED_KINDS |= {"HorizontalPodAutoscaler"}

Obj = dict[str, Any]


def load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def check_supported(kustomization: Obj, where: Path) -> None:
    unknown = set(kustomization) - KUSTOMIZE_KEYS
    if unknown:
        raise ValueError(f"{where}: the test renderer does not support {sorted(unknown)}")
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{where}: only `patches: [{{path: ...}}]` is supported: {patch}")


def _key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge, the subset Kubernetes applies to the fields these files patch."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for name, value in patch.items():
            merged[name] = merge(base[name], value) if name in base else copy.deepcopy(value)
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in base + patch)
    ):
        merged_list = [copy.deepcopy(item) for item in base]
        index = {item["name"]: position for position, item in enumerate(merged_list)}
        for item in patch:
            if item["name"] in index:
                position = index[item["name"]]
                merged_list[position] = merge(merged_list[position], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def render(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize directory` would print (for the supported subset)."""
    kustomization = load_all(directory / "kustomization.yaml")[0]
    check_supported(kustomization, directory)
    objects: list[Obj] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        objects += render(path) if path.is_dir() else load_all(path)
    for patch in kustomization.get("patches", []):
        [patch_obj] = load_all(directory / patch["path"])
        matches = [i for i, obj in enumerate(objects) if _key(obj) == _key(patch_obj)]
        if len(matches) != 1:
            raise ValueError(f"{directory}: patch {patch['path']} matches {len(matches)} objects")
        objects[matches[0]] = merge(objects[matches[0]], patch_obj)
    for label in kustomization.get("labels", []):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
    images = {image["name"]: image for image in kustomization.get("images", [])}
    for obj in objects:
        for container in containers(obj):
            image = images.get(container["image"].split(":")[0])
            if image is not None:
                container["image"] = f"{image['newName']}:{image['newTag']}"
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] in NAMESPACED_KINDS:
                obj["metadata"]["namespace"] = namespace
    return objects


def pod_spec(obj: Obj) -> Obj | None:
    if obj["kind"] in {"Deployment", "Job"}:
        spec: Obj = obj["spec"]["template"]["spec"]
        return spec
    return None


def containers(obj: Obj) -> Iterator[Obj]:
    spec = pod_spec(obj)
    if spec is not None:
        yield from spec["containers"]


def container_env(objects: list[Obj], container: Obj) -> dict[str, str]:
    """Every variable a container gets: its ConfigMaps' and Secrets' keys, then its own `env`."""
    by_key = {_key(obj): obj for obj in objects}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(by_key["ConfigMap", source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            env.update(by_key["Secret", source["secretRef"]["name"]]["stringData"])
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    return env


def systemd_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file: section -> key -> values (a key may repeat, as `Environment=` does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            raise ValueError(f"{path.name}:{number}: not a section or a key=value line: {line!r}")
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def command_words(exec_start: str) -> list[str]:
    return shlex.split(exec_start)


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip()
    return pairs
