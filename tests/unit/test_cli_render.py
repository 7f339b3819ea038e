"""``dna-hub render``: the admin's preview, through the real spawner, with no cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from dna_hub.profiles.provisioning import DIGEST_ANNOTATION


def render(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig"}  # proves no cluster is used
    return subprocess.run(
        [sys.executable, "-m", "dna_hub.cli", "render", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_render_prints_profile_objects_and_pod() -> None:
    result = render(
        "--user", "Alice.Smith@Example.com", "--owner", "Alice.Smith@Example.com", "--pod"
    )
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    kinds = [d["kind"] for d in docs]
    assert kinds == [
        "Profile",
        "PodDefault",
        "LimitRange",
        "AuthorizationPolicy",
        "NetworkPolicy",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Pod",
    ]
    profile, pod = docs[0], docs[-1]
    namespace = profile["metadata"]["name"]
    assert namespace.startswith("kubeflow-alice-smith-example-com---")
    assert profile["spec"]["owner"]["name"] == "Alice.Smith@Example.com"
    assert len(profile["metadata"]["annotations"][DIGEST_ANNOTATION]) == 32

    assert pod["metadata"]["namespace"] == namespace
    assert pod["metadata"]["labels"]["access-ml-pipeline"] == "true"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "default-editor"
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KF_PIPELINES_ENDPOINT"] == "http://ml-pipeline.kubeflow:8888"
    assert env["KF_PIPELINES_UI_ENDPOINT"] == "http://ml-pipeline-ui.kubeflow:80"
    assert env["KALE_SECURITY_CONTEXT_RUN_AS_USER"] == "8737"
    # owned by the PodDefault: defining it too would get the pod rejected by the webhook
    assert "KF_PIPELINES_SA_TOKEN_PATH" not in env
    # the API token is not in the pod spec: a Secret owned by the pod (issue 18, item 4)
    assert env["JUPYTERHUB_API_TOKEN"] is None
    (token_var,) = [e for e in container["env"] if e["name"] == "JUPYTERHUB_API_TOKEN"]
    ref = token_var["valueFrom"]["secretKeyRef"]
    assert ref["name"].startswith(f"{pod['metadata']['name']}-api-token-")
    assert "<generated at spawn>" not in json.dumps(pod)
    # Pod Security Standard "restricted"
    csc = container["securityContext"]
    assert csc["runAsNonRoot"] is True and csc["runAsUser"] != 0
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_render_reads_the_hub_config(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        "c = get_config()  # noqa\n"
        "c.DnaSpawner.namespace_template = 'ml-{username}'\n"
        "c.DnaSpawner.legacy_envoy_filter = True\n"
        "c.DnaSpawner.profile_owner_fallback = '{username}@corp.example'\n"
        "c.DnaSpawner.profile_resource_quota = {'hard': {'cpu': '2'}}\n"
    )
    result = render("--user", "bob", "--config", str(config))
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert docs[0]["metadata"]["name"] == "ml-bob"
    assert docs[0]["spec"]["owner"]["name"] == "bob@corp.example"
    assert docs[0]["spec"]["resourceQuotaSpec"] == {"hard": {"cpu": "2"}}
    assert "EnvoyFilter" in [d["kind"] for d in docs]


def test_render_without_owner_says_what_is_missing() -> None:
    result = render("--user", "bob")
    assert result.returncode == 2
    assert "profile_owner_fallback" in result.stderr
    assert result.stdout == ""


def test_render_with_a_broken_template_names_it(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "50-x.yaml.j2").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        f"c = get_config()  # noqa\nc.DnaSpawner.profile_template_dirs = [{str(templates)!r}]\n"
    )
    result = render("--user", "bob", "--owner", "bob@x", "--config", str(config))
    assert result.returncode == 2
    assert "50-x.yaml.j2" in result.stderr and "metadata.name" in result.stderr


def test_render_refuses_a_bad_namespace_template(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text("c = get_config()  # noqa\nc.DnaSpawner.namespace_template = '{username}'\n")
    result = render("--user", "kube-system", "--owner", "x@y", "--config", str(config))
    assert result.returncode == 2
    assert "reserved namespace 'kube-system'" in result.stderr


def test_a_bad_owner_fallback_is_refused_at_config_time(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        "c = get_config()  # noqa\nc.DnaSpawner.profile_owner_fallback = '{user.name}@x'\n"
    )
    result = render("--user", "bob", "--config", str(config))
    assert result.returncode == 2
    assert "may only use {username}" in result.stderr
    assert "Traceback" not in result.stderr


def test_render_with_groups_previews_team_profiles_and_contributors(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        'c.DnaSpawner.hub_namespace = "jupyterhub"\n'
        'c.DnaSpawner.team_profiles = {"fraud": "edit", "Risk.Analytics": {"role": "view",'
        ' "resource_quota": {"hard": {"cpu": "4"}}}, "ops": "edit"}\n'
    )
    result = render(
        *("--user", "alice", "--owner", "Alice.Smith@Example.com", "--config", str(config)),
        *("--group", "fraud", "--group", "Risk.Analytics", "--group", "not-a-team"),
    )
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    profiles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Profile"}
    risk = next(n for n in profiles if n.startswith("kubeflow-team-risk-analytics---"))
    assert sorted(profiles) == sorted(["kubeflow-alice", "kubeflow-team-fraud", risk])
    team = profiles["kubeflow-team-fraud"]
    # each team is owned by its own identity, never the hub (issue 24)
    assert team["spec"]["owner"] == {"kind": "User", "name": "dna-hub-team:kubeflow-team-fraud"}
    assert team["metadata"]["annotations"]["dna-hub.io/team-group"] == "fraud"
    assert profiles[risk]["spec"]["resourceQuotaSpec"] == {"hard": {"cpu": "4"}}
    # every team gets the same objects as a personal profile, in its own namespace
    per_namespace: dict[str, list[str]] = {}
    for d in docs:
        namespace = d["metadata"].get("namespace")
        if namespace and not d["metadata"]["name"].startswith("user-"):
            per_namespace.setdefault(namespace, []).append(d["kind"])
    assert per_namespace[risk] == per_namespace["kubeflow-alice"]
    assert per_namespace["kubeflow-team-fraud"] == per_namespace["kubeflow-alice"]
    contributors = [
        (d["kind"], d["metadata"]["namespace"], d["metadata"]["name"])
        for d in docs
        if d["metadata"]["name"].startswith("user-")
    ]
    assert contributors == [
        ("RoleBinding", "kubeflow-team-fraud", "user-alice-smith-example-com-clusterrole-edit"),
        (
            "AuthorizationPolicy",
            "kubeflow-team-fraud",
            "user-alice-smith-example-com-clusterrole-edit",
        ),
        ("RoleBinding", risk, "user-alice-smith-example-com-clusterrole-view"),
        ("AuthorizationPolicy", risk, "user-alice-smith-example-com-clusterrole-view"),
    ]
    assert "kubeflow-team-ops" not in result.stdout  # not in her groups


def test_render_refuses_a_user_on_a_team_namespace(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text('c.DnaSpawner.team_profiles = {"fraud": "edit"}\n')
    result = render("--user", "team-fraud", "--owner", "x@example.com", "--config", str(config))
    assert result.returncode == 2
    assert "team 'fraud'" in result.stderr and "nothing written" in result.stderr
    assert result.stdout == ""


GATED_OPTIONS_CONFIG = """c = get_config()  # noqa
c.DnaSpawner.server_options = [
    {"display_name": "Standard", "slug": "standard", "default": True},
    {"display_name": "GPU server", "slug": "gpu", "dna_hub_groups": ["gpu-users"],
     "kubespawner_override": {"extra_resource_limits": {"nvidia.com/gpu": "1"},
                              "node_selector": {"nvidia.com/gpu.present": "true"}}},
]
"""


def test_render_previews_the_form_and_the_pod_of_a_gated_option(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(GATED_OPTIONS_CONFIG)
    base = ("--user", "alice", "--owner", "alice@x", "--config", str(config))

    form = render(*base, "--form", "--group", "data-science")
    assert form.returncode == 0, form.stderr
    assert [e["slug"] for e in yaml.safe_load(form.stdout)] == ["standard"]
    form = render(*base, "--form", "--group", "data-science", "--group", "gpu-users")
    assert form.returncode == 0, form.stderr
    entries = yaml.safe_load(form.stdout)
    assert [e["slug"] for e in entries] == ["standard", "gpu"]
    assert "dna_hub_groups" not in form.stdout

    # the pod of the GPU option: KubeSpawner's overrides, for a member of gpu-users
    result = render(*base, "--pod", "--group", "gpu-users", "--option", "profile=gpu")
    assert result.returncode == 0, result.stderr
    pod = list(yaml.safe_load_all(result.stdout))[-1]
    assert pod["kind"] == "Pod"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}

    # refused as the hub refuses it, for anyone else
    refused = render(*base, "--pod", "--group", "data-science", "--option", "profile=gpu")
    assert refused.returncode == 2
    assert "server option 'gpu' is for groups ['gpu-users']" in refused.stderr
    assert refused.stdout == ""
