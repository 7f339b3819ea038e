"""Secure notebook pod defaults: resources (checked by checkov), a pinned image, a LimitRange."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from devstack.paths import REPO_ROOT
from dna_hub.policy.pod_defaults import (
    DEFAULT_LIMIT_RANGE,
    SINGLEUSER_IMAGE,
    SINGLEUSER_IMAGE_NAME,
    SINGLEUSER_IMAGE_VERSION,
)
from dna_hub.policy.rendering import ProfileContext, render_profile
from tests.support.checkov import run_checkov
from tests.unit.test_cli_render import render

#: CPU request, memory request, memory limit, image tag fixed (not latest or blank).
RESOURCE_CHECKS = ["CKV_K8S_10", "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_14"]


def rendered_pod(*args: str) -> dict:
    result = render("--user", "alice", "--owner", "alice@example.com", "--pod", *args)
    assert result.returncode == 0, result.stderr
    (pod,) = [d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Pod"]
    return pod


@pytest.fixture(scope="module")
def default_pod() -> dict:
    return rendered_pod()


def checkov_verdicts(pod: dict, tmp_path: Path) -> dict[str, str]:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(pod))
    report = run_checkov(manifest, RESOURCE_CHECKS)
    results = report.get("results", {})
    verdicts = {c["check_id"]: "passed" for c in results.get("passed_checks", [])}
    verdicts.update({c["check_id"]: "failed" for c in results.get("failed_checks", [])})
    return verdicts


def test_default_pod_passes_checkovs_resource_checks(default_pod: dict, tmp_path: Path) -> None:
    assert checkov_verdicts(default_pod, tmp_path) == dict.fromkeys(RESOURCE_CHECKS, "passed")


def test_checkov_catches_a_pod_without_resources(default_pod: dict, tmp_path: Path) -> None:
    # the check above can fail: the same pod without our defaults fails each resource check
    bare = yaml.safe_load(yaml.safe_dump(default_pod))
    (container,) = bare["spec"]["containers"]
    del container["resources"]
    container["image"] = "quay.io/jupyterhub/singleuser:latest"
    assert checkov_verdicts(bare, tmp_path) == dict.fromkeys(RESOURCE_CHECKS, "failed")


def test_default_resources_and_image(default_pod: dict) -> None:
    (container,) = default_pod["spec"]["containers"]
    resources = container["resources"]
    assert resources["requests"]["memory"] == 1024**3
    assert resources["limits"]["memory"] == 4 * 1024**3
    assert float(resources["requests"]["cpu"]) == 0.5
    assert "cpu" not in resources.get("limits", {}), "no CPU limit, by design"
    assert container["image"] == SINGLEUSER_IMAGE
    images = [c["image"] for c in default_pod["spec"].get("initContainers", [])]
    for image in [container["image"], *images]:
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
    assert "latest" not in yaml.safe_dump(default_pod)


def test_defaults_are_overridable(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        "c = get_config()  # noqa\n"
        "c.KubeSpawner.image = 'registry.example.com/other:1.2'\n"
        "c.DnaSpawner.mem_limit = '8G'\n"
        "c.DnaSpawner.cpu_limit = 2.0\n"
    )
    pod = rendered_pod("--config", str(config))
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example.com/other:1.2"
    assert container["resources"]["limits"] == {"memory": 8 * 1024**3, "cpu": 2.0}


def test_default_image_is_the_singleuser_image() -> None:
    dockerfile = (REPO_ROOT / "images" / "singleuser" / "Dockerfile").read_text()
    version = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', dockerfile)
    title = re.search(r'org\.opencontainers\.image\.title="([^"]+)"', dockerfile)
    assert version and version.group(1) == SINGLEUSER_IMAGE_VERSION
    assert title and SINGLEUSER_IMAGE_NAME.endswith("/" + title.group(1))
    values = yaml.safe_load((REPO_ROOT / "helm-values" / "values.yaml").read_text())
    image = values["singleuser"]["image"]
    assert (image["name"], image["tag"]) == (SINGLEUSER_IMAGE_NAME, SINGLEUSER_IMAGE_VERSION)


def context(**kw: object) -> ProfileContext:
    return ProfileContext(
        username="alice", namespace="kubeflow-alice", owner="a@x", hub_namespace="hub", **kw
    )


def test_limit_range_in_every_profile_by_default() -> None:
    (limit_range,) = [o for o in render_profile(context()).namespaced if o["kind"] == "LimitRange"]
    assert limit_range["metadata"]["namespace"] == "kubeflow-alice"
    assert limit_range["spec"] == DEFAULT_LIMIT_RANGE
    (limits,) = limit_range["spec"]["limits"]
    assert limits["type"] == "Container"
    assert set(limits["defaultRequest"]) == {"cpu", "memory"}
    assert set(limits["default"]) == {"memory"}, "no default CPU limit, by design"


def limit_ranges(ctx: ProfileContext) -> list[dict]:
    return [o for o in render_profile(ctx).namespaced if o["kind"] == "LimitRange"]


def test_limit_range_can_be_changed_or_dropped(tmp_path: Path) -> None:
    custom = {"limits": [{"type": "Container", "default": {"memory": "1Gi"}}]}
    (obj,) = limit_ranges(context(limit_range=custom))
    assert obj["spec"] == custom
    assert not limit_ranges(context(limit_range=None))
    config = tmp_path / "jupyterhub_config.py"
    config.write_text("c = get_config()  # noqa\nc.DnaSpawner.profile_limit_range = {}\n")
    result = render("--user", "bob", "--owner", "b@x", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "LimitRange" not in [d["kind"] for d in yaml.safe_load_all(result.stdout)]
