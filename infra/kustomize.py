"""Render a kustomization the way `kustomize build` does, for the fields deploy/kubernetes
uses: `resources` (files, or directories with their own kustomization), `namespace` and
`images`. Any other field is refused, so a kustomization this cannot render faithfully fails
here instead of rendering differently from kustomize.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HANDLED = {"apiVersion", "kind", "resources", "namespace", "images"}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "PersistentVolume", "StorageClass", "PriorityClass"}  # fmt: skip


def render(directory: Path) -> list[dict]:
    directory = Path(directory)
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - HANDLED
    if unknown:
        raise ValueError(f"{directory}: kustomization fields not rendered here: {sorted(unknown)}")
    objects = []
    for resource in spec.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += render(path)
        else:
            objects += [o for o in yaml.safe_load_all(path.read_text()) if o]
    for obj in objects:
        if "namespace" in spec and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = spec["namespace"]
        for container in _containers(obj):
            container["image"] = _retag(container["image"], spec.get("images", []))
    return objects


def _containers(obj: dict) -> list[dict]:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return pod.get("containers", []) + pod.get("initContainers", [])


def _retag(image: str, rules: list[dict]) -> str:
    name, _, tag = image.partition(":")
    for rule in rules:
        if rule["name"] == name:
            return f"{rule.get('newName', name)}:{rule.get('newTag', tag or 'latest')}"
    return image
