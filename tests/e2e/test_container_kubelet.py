"""The kubelet stand-in's podman runtime: pods as containers from real images.

On the control plane, a pod on node ``standin-podman`` runs from the single-user image in
its own network namespace; from *inside* the container it reports what it sees (user,
groups, read-only root, capabilities, volumes, tokens, the API server), served over HTTP
on its pod IP. Each security setting is also checked from the refusing side.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from devstack.pod_network import (
    CONTAINER_NODE,
    POD_ON_CONTAINERS,
    TOKEN_REFRESH_SECONDS,
    PodNetwork,
)
from devstack.standins import JSON, Kube
from devstack.standins.containers import (
    ContainerConfigError,
    security_args,
    verify_run_as_non_root,
)
from devstack.standins.kubelet import pod_fits_node
from devstack.standins_process import StandIns

KFP_AUDIENCE = "pipelines.kubeflow.org"

# What the container reports (runs as the pod's command, then serves the report).
PROBE = r"""
import json, os, socket, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
out = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
       "env_pod_ip": os.environ.get("POD_IP"), "cm": open("/etc/probe/cm/greeting").read(),
       "secret": open("/etc/probe/secret/password").read(),
       "labels": open("/etc/probe/info/labels").read(),
       "kfp_token": open("/var/run/secrets/kubeflow/pipelines/token").read(),
       "sa_token": open(sa + "/token").read(), "sa_namespace": open(sa + "/namespace").read(),
       "service": [os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]]}
for path in ("/probe-root", "/tmp/probe", os.path.expanduser("~/probe")):
    try:
        with open(path, "a") as f:
            f.write("x")
        out["writable:" + path] = True
    except OSError as exc:
        out["writable:" + path] = exc.strerror
out["home_seen_before"] = os.path.exists(os.path.expanduser("~/.seen"))
open(os.path.expanduser("~/.seen"), "w").write("1")
lines = open("/proc/self/status").read().splitlines()
status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
out["cap_eff"], out["no_new_privs"] = status["CapEff"].strip(), status["NoNewPrivs"].strip()
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
port = os.environ["KUBERNETES_SERVICE_PORT"]
req = urllib.request.Request(f"https://kubernetes.default.svc:{port}/version",
                             headers={"Authorization": "Bearer " + out["sa_token"]})
out["apiserver"] = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))["gitVersion"]
print("PROBE-REPORT", json.dumps(out), flush=True)
os.chdir("/tmp")
open("/tmp/report.json", "w").write(json.dumps(out))
import http.server, functools
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/")
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), handler).serve_forever()
"""


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met after {timeout}s")
        await asyncio.sleep(0.3)


# ------------------------------------------------------------------------------ pure


def test_scheduler_predicates_keep_pods_on_their_node() -> None:
    podman_labels = {"dna-hub.test/runtime": "podman"}
    taints = [{"key": "dna-hub.test/runtime", "value": "podman", "effect": "NoSchedule"}]
    on_containers = {"spec": dict(POD_ON_CONTAINERS)}
    plain: JSON = {"spec": {}}
    assert pod_fits_node(on_containers, podman_labels, taints)
    assert not pod_fits_node(plain, podman_labels, taints)  # untolerated taint
    assert not pod_fits_node(on_containers, {"dna-hub.test/runtime": "process"}, [])
    assert pod_fits_node(plain, {"dna-hub.test/runtime": "process"}, [])


def test_run_as_non_root_is_verified_like_the_kubelet() -> None:
    nonroot = {"runAsNonRoot": True}
    verify_run_as_non_root(nonroot, "1000:100", "p", "c")
    verify_run_as_non_root({}, "", "p", "c")  # no policy, no check
    for image_user, needle in (
        ("", "image will run as root"),
        ("0", "image will run as root"),
        ("jovyan", "non-numeric user (jovyan)"),
    ):
        with pytest.raises(ContainerConfigError, match=re.escape(needle)) as caught:
            verify_run_as_non_root(nonroot, image_user, "p", "c")
        assert caught.value.reason == "CreateContainerConfigError"
    verify_run_as_non_root({**nonroot, "runAsUser": 1000}, "0", "p", "c")
    with pytest.raises(ContainerConfigError, match="runAsUser breaks non-root"):
        verify_run_as_non_root({**nonroot, "runAsUser": 0}, "1000", "p", "c")


def test_security_context_becomes_runtime_flags() -> None:
    pod = {"spec": {"securityContext": {"runAsUser": 1000, "fsGroup": 100,
                                        "supplementalGroups": [4242]}}}  # fmt: skip
    container = {
        "securityContext": {
            "runAsGroup": 100,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        }
    }
    assert security_args(pod, container) == [
        "--user=1000:100",
        "--group-add=4242",
        "--group-add=100",
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop=ALL",
        "--cap-add=NET_BIND_SERVICE",
        "--security-opt=no-new-privileges",
    ]


# ------------------------------------------------------------------------------ on the cluster


async def _namespace(kube: Kube, name: str) -> None:
    await kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    await kube.create(
        f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": {"name": "runner"}}
    )
    # Usable at once: since 1.24 no token Secret is made, and the ServiceAccount admission
    # wants none (pods get a bound token through the kube-api-access projected volume).


def _probe_pod(name: str, image: str, **spec: Any) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "probe", "access-ml-pipeline": "true"}},
        "spec": {
            **POD_ON_CONTAINERS,
            "serviceAccountName": "runner",
            "terminationGracePeriodSeconds": 2,
            "securityContext": {
                "runAsNonRoot": True,
                "fsGroup": 100,
                "supplementalGroups": [4242],
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "notebook",
                    "image": image,
                    "command": ["python", "-c", PROBE],
                    "ports": [{"containerPort": 8080}],
                    "env": [
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                    ],
                    "securityContext": {
                        "runAsUser": 1000,
                        "runAsGroup": 100,
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "home", "mountPath": "/home/jovyan"},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "cm", "mountPath": "/etc/probe/cm"},
                        {"name": "secret", "mountPath": "/etc/probe/secret"},
                        {"name": "info", "mountPath": "/etc/probe/info"},
                        {
                            "name": "kfp-token",
                            "mountPath": "/var/run/secrets/kubeflow/pipelines",
                            "readOnly": True,
                        },
                    ],
                }
            ],
            "volumes": [
                {"name": "home", "persistentVolumeClaim": {"claimName": "home"}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "cm", "configMap": {"name": "probe"}},
                {"name": "secret", "secret": {"secretName": "probe"}},
                {
                    "name": "info",
                    "downwardAPI": {
                        "items": [
                            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels['app']"}}
                        ]
                    },
                },
                {
                    "name": "kfp-token",
                    "projected": {
                        "sources": [
                            {
                                "serviceAccountToken": {
                                    "path": "token",
                                    "expirationSeconds": 7200,
                                    "audience": KFP_AUDIENCE,
                                }
                            }
                        ]
                    },
                },
            ],
            **spec,
        },
    }


async def _running(kube: Kube, path: str) -> JSON | None:
    pod = await kube.get(path)
    statuses = pod["status"].get("containerStatuses") or []
    ready = pod["status"].get("phase") == "Running" and statuses and statuses[0]["ready"]
    return pod if ready else None


async def _report(ip: str) -> JSON:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"http://{ip}:8080/tmp/report.json") as resp:
            assert resp.status == 200
            return json.loads(await resp.text())


async def _fetch(ip: str, path: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"http://{ip}:8080{path}") as resp:
            assert resp.status == 200, path
            return await resp.text()


async def _token_review(kube: Kube, token: str, audience: str | None) -> JSON:
    spec: JSON = {"token": token}
    if audience:
        spec["audiences"] = [audience]
    review = await kube.create(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
    )
    return review["status"]


@pytest.mark.controlplane
async def test_pod_runs_as_container_with_security_context_and_volumes(
    container_standins: StandIns,
    pod_network: PodNetwork,
    singleuser_image: str,
    standins_kube: Kube,
    unique_name: Callable[..., str],
) -> None:
    kube, ns = standins_kube, unique_name("ck")
    await _namespace(kube, ns)
    try:
        base = f"/api/v1/namespaces/{ns}"
        await kube.create(f"{base}/configmaps", {"metadata": {"name": "probe"},
                                                 "data": {"greeting": "hello"}})  # fmt: skip
        secret = base64.b64encode(b"s3cret").decode()
        await kube.create(f"{base}/secrets", {"metadata": {"name": "probe"},
                                              "data": {"password": secret}})  # fmt: skip
        await kube.create(
            f"{base}/persistentvolumeclaims",
            {
                "metadata": {"name": "home"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}},
            },
        )  # fmt: skip
        path = f"{base}/pods/probe"
        await kube.create(f"{base}/pods", _probe_pod("probe", singleuser_image))
        pod = await eventually(lambda: _running(kube, path))
        assert pod["spec"]["nodeName"] == CONTAINER_NODE
        ip = pod["status"]["podIP"]
        assert ip != pod_network.gateway and not ip.startswith("127.")
        seen = await _report(ip)

        # Security context, enforced by the runtime.
        assert (seen["uid"], seen["gid"]) == (1000, 100)
        assert {100, 4242} <= set(seen["groups"])
        assert seen["writable:/probe-root"] == "Read-only file system"
        assert seen["writable:/tmp/probe"] is True
        assert seen["writable:/home/jovyan/probe"] is True
        assert int(seen["cap_eff"], 16) == 0
        assert seen["no_new_privs"] == "1"
        # Env, volumes, downward API.
        assert seen["env_pod_ip"] == ip
        assert (seen["cm"], seen["secret"], seen["labels"]) == ("hello", "s3cret", "probe")
        assert seen["sa_namespace"] == ns
        # The API server answered from inside the pod (kubernetes Service, its CA, the token),
        # at the kubernetes Service's clusterIP as a kubelet with cluster networking sets it.
        kubernetes = await kube.get("/api/v1/namespaces/default/services/kubernetes")
        assert seen["service"] == [kubernetes["spec"]["clusterIP"], "443"]
        assert seen["apiserver"].startswith("v1.")
        # The projected token: issued by TokenRequest for this pod's SA and audience only.
        kfp = await _token_review(kube, seen["kfp_token"], KFP_AUDIENCE)
        assert kfp["authenticated"] is True
        assert kfp["user"]["username"] == f"system:serviceaccount:{ns}:runner"
        assert kfp["audiences"] == [KFP_AUDIENCE]
        other = await _token_review(kube, seen["kfp_token"], "other.example")
        assert other.get("authenticated") is not True, other
        assert seen["home_seen_before"] is False

        # The kubelet rotates the projected token before it expires; the pod sees the new
        # one in place (same file, atomically replaced) and it is as valid as the first.
        deadline = time.monotonic() + 4 * TOKEN_REFRESH_SECONDS
        while True:
            current = await _fetch(ip, "/var/run/secrets/kubeflow/pipelines/token")
            if current != seen["kfp_token"]:
                break
            assert time.monotonic() < deadline, "the projected token was never rotated"
            await asyncio.sleep(1)
        rotated = await _token_review(kube, current, KFP_AUDIENCE)
        assert rotated["user"]["username"] == f"system:serviceaccount:{ns}:runner"

        # Events as the scheduler and kubelet record them.
        await eventually(lambda: _has_events(kube, ns, "probe"), timeout=30)
        # Logs per container.
        assert "PROBE-REPORT" in container_standins.pod_log(ns, "probe")

        # The claim's directory survives the pod: a new pod sees what the first wrote.
        await kube.delete(path)
        await eventually(lambda: _gone(kube, path), timeout=60)
        await kube.create(f"{base}/pods", _probe_pod("probe", singleuser_image))
        pod = await eventually(lambda: _running(kube, path))
        assert (await _report(pod["status"]["podIP"]))["home_seen_before"] is True
        await kube.delete(path)
        await eventually(lambda: _gone(kube, path), timeout=60)
    finally:
        await kube.delete(f"/api/v1/namespaces/{ns}")


POD_EVENTS = ("Scheduled", "Pulled", "Created", "Started")


async def _has_events(kube: Kube, ns: str, pod: str) -> bool:
    """Scheduled (default-scheduler), Pulled/Created/Started (kubelet), about that pod."""
    events = await kube.get(
        f"/api/v1/namespaces/{ns}/events", query=[("fieldSelector", f"involvedObject.name={pod}")]
    )
    # kube-scheduler records through events.k8s.io/v1: read back as core/v1, its component is
    # reportingComponent and source is empty; the kubelet stand-in fills both.
    seen = {
        (e["reason"], (e.get("source") or {}).get("component") or e.get("reportingComponent"))
        for e in events["items"]
    }
    wanted = {("Scheduled", "default-scheduler")} | {(r, "kubelet") for r in POD_EVENTS[1:]}
    return wanted <= seen


@pytest.mark.controlplane
async def test_process_kubelet_records_pod_events_too(
    standins: StandIns, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    """The process runtime emits the same events (KubeSpawner shows them as progress)."""
    kube, ns = standins_kube, unique_name("pe")
    await _namespace(kube, ns)
    try:
        await kube.create(f"/api/v1/namespaces/{ns}/pods", {
            "metadata": {"name": "sleeper"},
            "spec": {"serviceAccountName": "runner", "containers": [
                {"name": "main", "image": "any",
                 "command": ["python", "-c", "import time; time.sleep(600)"]}]},
        })  # fmt: skip
        await eventually(lambda: _has_events(kube, ns, "sleeper"), timeout=60)
        pod = await kube.get(f"/api/v1/namespaces/{ns}/pods/sleeper")
        assert pod["spec"]["nodeName"] == standins.node_name
    finally:
        await kube.delete(f"/api/v1/namespaces/{ns}")


async def _gone(kube: Kube, path: str) -> bool:
    return await kube.get_or_none(path) is None


async def _waiting(kube: Kube, path: str) -> JSON | None:
    pod = await kube.get(path)
    statuses = pod["status"].get("containerStatuses") or []
    if statuses and "waiting" in statuses[0]["state"]:
        return statuses[0]["state"]["waiting"]
    return None


@pytest.mark.controlplane
async def test_root_image_under_run_as_non_root_is_refused(
    container_standins: StandIns,
    hub_image: str,
    standins_kube: Kube,
    unique_name: Callable[..., str],
) -> None:
    """The same refusal a kubelet gives; and an absent image is ErrImagePull."""
    from devstack.images import ensure_debian_base

    root_image, _ = ensure_debian_base()  # no USER: runs as root
    kube, ns = standins_kube, unique_name("cr")
    await _namespace(kube, ns)
    try:
        cases = {
            "root": (root_image, "CreateContainerConfigError", "image will run as root"),
            "named": ("quay.io/jupyterhub/k8s-hub:4.4.0", "CreateContainerConfigError",
                      "non-numeric user (jovyan)"),
            "absent": ("localhost/dna-hub-test/absent:none", "ErrImagePull", "not present"),
        }  # fmt: skip
        for name, (image, _reason, _needle) in cases.items():
            await kube.create(
                f"/api/v1/namespaces/{ns}/pods",
                {
                    "metadata": {"name": name},
                    "spec": {
                        **POD_ON_CONTAINERS,
                        "serviceAccountName": "runner",
                        "securityContext": {"runAsNonRoot": True},
                        "containers": [{"name": "c", "image": image, "command": ["true"]}],
                    },
                },
            )
        for name, (_image, reason, needle) in cases.items():
            waiting = await eventually(
                lambda name=name: _waiting(kube, f"/api/v1/namespaces/{ns}/pods/{name}")
            )
            assert waiting["reason"] == reason
            assert needle in waiting["message"]
        # The hub image itself is numeric non-root: accepted.
        await kube.create(
            f"/api/v1/namespaces/{ns}/pods",
            {
                "metadata": {"name": "hub"},
                "spec": {
                    **POD_ON_CONTAINERS,
                    "serviceAccountName": "runner",
                    "securityContext": {"runAsNonRoot": True},
                    "containers": [{"name": "c", "image": hub_image,
                                    "command": ["python3", "-c", "import dna_hub"]}],
                },
            },
        )  # fmt: skip

        async def succeeded() -> bool:
            pod = await kube.get(f"/api/v1/namespaces/{ns}/pods/hub")
            return pod["status"].get("phase") == "Succeeded"

        await eventually(succeeded)
    finally:
        await kube.delete(f"/api/v1/namespaces/{ns}")
