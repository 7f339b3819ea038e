"""Tests of the stand-ins (profile controller, PodDefault webhook, kubelet) and the fault proxy.

The pure logic (PodDefault selection/merge/conflicts, ``$(VAR)`` expansion, listen-address
rewriting) is tested without a cluster; the rest against the real test API server
(``@pytest.mark.controlplane``), where the stand-ins run as a separate process.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack.controlplane import ControlPlane
from devstack.standins import JSON, Kube, KubeError
from devstack.standins.kubelet import IpPool, expand, rewrite_listen_args, rewrite_service_url
from devstack.standins.poddefault_webhook import (
    CONFIGURATION_NAME,
    admission_response,
    mutate_pod,
    selector_matches,
)
from devstack.standins.profile_controller import (
    DELAY_ANNOTATION,
    PAUSED_ANNOTATION,
    authorization_policy_spec,
    set_namespace_labels,
)
from devstack.standins_process import StandIns
from tests.support.faultproxy import FaultProxy
from tests.support.pod_security import restricted

# --------------------------------------------------------------------------- helpers


def apply_json_patch(doc: JSON, ops: list[JSON]) -> JSON:
    """Enough of RFC 6902 for the webhook's patches (``add`` on object members)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add"
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target = doc
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = op["value"]
    return doc


def poddefault(name: str, spec: JSON, namespace: str = "ns", rv: str = "7") -> JSON:
    spec = {"selector": {"matchLabels": {"pd": name}}, **spec}
    return {
        "apiVersion": "kubeflow.org/v1alpha1",
        "kind": "PodDefault",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "spec": spec,
    }


def pod(labels: dict[str, str], containers: list[JSON] | None = None, **spec: Any) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "labels": labels},
        "spec": {"containers": containers or [{"name": "main", "image": "x"}], **spec},
    }


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 30, interval: float = 0.2
) -> Any:
    """Poll ``check`` until it returns something truthy (and return it) or fail."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except (KubeError, AssertionError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s; last: {last!r}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- pure: webhook


def test_selector_match_labels_and_expressions() -> None:
    sel = {
        "matchLabels": {"a": "1"},
        "matchExpressions": [
            {"key": "b", "operator": "In", "values": ["x", "y"]},
            {"key": "c", "operator": "DoesNotExist"},
        ],
    }
    assert selector_matches(sel, {"a": "1", "b": "x"})
    assert not selector_matches(sel, {"a": "1", "b": "z"})
    assert not selector_matches(sel, {"a": "1", "b": "x", "c": ""})
    assert selector_matches({}, {"anything": "goes"})
    assert selector_matches(
        {"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["v"]}]}, {}
    )


def test_mutate_merges_and_annotates() -> None:
    pd = poddefault(
        "creds",
        {
            "env": [{"name": "FOO", "value": "bar"}],
            "envFrom": [{"secretRef": {"name": "s"}}],
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volumeMounts": [{"name": "v", "mountPath": "/v"}],
            "annotations": {"x": "1"},
            "labels": {"y": "2"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "serviceAccountName": "default-editor",
            "command": ["sh"],
        },
    )
    other = poddefault("other", {"env": [{"name": "OTHER", "value": "1"}]})
    the_pod = pod(
        {"pd": "creds"},
        [
            {"name": "main", "image": "x", "env": [{"name": "KEEP", "value": "k"}], "args": ["a"]},
            {"name": "istio-proxy", "image": "proxy"},
        ],
    )
    decision = mutate_pod(the_pod, [pd, other])
    assert decision.allowed and decision.applied == ("creds",)
    patched = apply_json_patch(the_pod, decision.patch or [])
    main, proxy = patched["spec"]["containers"]
    assert main["env"] == [{"name": "KEEP", "value": "k"}, {"name": "FOO", "value": "bar"}]
    assert main["volumeMounts"] == [{"name": "v", "mountPath": "/v"}]
    assert main["envFrom"] == [{"secretRef": {"name": "s"}}]
    assert main["command"] == ["sh"] and main["args"] == ["a"]
    assert "command" not in proxy and proxy["env"] == [{"name": "FOO", "value": "bar"}]
    assert patched["spec"]["volumes"] == [{"name": "v", "emptyDir": {}}]
    assert patched["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert patched["spec"]["serviceAccountName"] == "default-editor"
    assert patched["metadata"]["labels"] == {"pd": "creds", "y": "2"}
    assert patched["metadata"]["annotations"] == {
        "x": "1",
        "poddefault.admission.kubeflow.org/poddefault-creds": "7",
    }
    review = admission_response("uid-1", decision)
    assert review["response"]["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(review["response"]["patch"])) == decision.patch


def test_identical_definitions_are_not_conflicts() -> None:
    env = [{"name": "FOO", "value": "bar"}]
    a = poddefault("a", {"env": env, "selector": {}})
    b = poddefault("b", {"env": env, "selector": {}})
    the_pod = pod({}, [{"name": "main", "image": "x", "env": [{"name": "FOO", "value": "bar"}]}])
    decision = mutate_pod(the_pod, [a, b])
    assert decision.allowed
    patched = apply_json_patch(the_pod, decision.patch or [])
    assert patched["spec"]["containers"][0]["env"] == env


@pytest.mark.parametrize(
    ("pod_container", "pd_spec", "needle"),
    [
        (
            {"env": [{"name": "FOO", "value": "mine"}]},
            {"env": [{"name": "FOO", "value": "x"}]},
            "FOO",
        ),
        (
            {"volumeMounts": [{"name": "data", "mountPath": "/a"}]},
            {"volumeMounts": [{"name": "data", "mountPath": "/b"}]},
            "data",
        ),
        (
            {"volumeMounts": [{"name": "one", "mountPath": "/same"}]},
            {"volumeMounts": [{"name": "two", "mountPath": "/same"}]},
            "/same",
        ),
    ],
)
def test_conflict_with_pod_rejects(pod_container: JSON, pd_spec: JSON, needle: str) -> None:
    the_pod = pod({"pd": "c"}, [{"name": "main", "image": "x", **pod_container}])
    decision = mutate_pod(the_pod, [poddefault("c", pd_spec)])
    assert not decision.allowed
    assert "conflict occurred while applying poddefaults: c on pod: p" in decision.message
    assert needle in decision.message
    review = admission_response("u", decision)["response"]
    assert review["allowed"] is False and "patch" not in review
    assert needle in review["status"]["message"]


def test_conflict_between_poddefaults_rejects() -> None:
    a = poddefault("a", {"selector": {}, "volumes": [{"name": "v", "emptyDir": {}}]})
    b = poddefault("b", {"selector": {}, "volumes": [{"name": "v", "secret": {"secretName": "s"}}]})
    decision = mutate_pod(pod({}), [a, b])
    assert not decision.allowed and "merging volumes for b has a conflict on v" in decision.message


def test_excluded_and_unmatched_pods_pass_untouched() -> None:
    pd = poddefault("a", {"env": [{"name": "A", "value": "1"}]})
    excluded = pod({"pd": "a"})
    excluded["metadata"]["annotations"] = {"poddefault.admission.kubeflow.org/exclude": "true"}
    assert mutate_pod(excluded, [pd]).patch is None
    assert mutate_pod(pod({"pd": "zzz"}), [pd]).patch is None
    other_ns = poddefault("a", {"env": [{"name": "A", "value": "1"}]}, namespace="elsewhere")
    assert mutate_pod(pod({"pd": "a"}), [other_ns]).patch is None


# ------------------------------------------------------------- pure: kubelet, controller


def test_expand_like_kubernetes() -> None:
    env = {"IP": "127.0.0.5", "PORT": "80"}
    assert expand("--bind=$(IP):$(PORT)", env) == "--bind=127.0.0.5:80"
    assert expand("$(MISSING) $$(IP) $$", env) == "$(MISSING) $(IP) $"


def test_listen_addresses_are_rewritten_to_pod_ip() -> None:
    argv = ["srv", "--ip=0.0.0.0", "--bind", "0.0.0.0", "--ServerApp.ip=1.2.3.4", "0.0.0.0", "x"]
    assert rewrite_listen_args(argv, "127.0.0.9") == [
        "srv",
        "--ip=127.0.0.9",
        "--bind",
        "127.0.0.9",
        "--ServerApp.ip=127.0.0.9",
        "127.0.0.9",
        "x",
    ]
    assert (
        rewrite_service_url("http://0.0.0.0:8888/user/a/", "127.0.0.9")
        == "http://127.0.0.9:8888/user/a/"
    )


def test_ip_pool_reuses_only_released_addresses() -> None:
    pool = IpPool(2, 3)
    a = pool.allocate()
    b = pool.allocate()
    assert {a, b} == {"127.0.0.2", "127.0.0.3"}
    with pytest.raises(RuntimeError):
        pool.allocate()
    pool.release(a)
    assert pool.allocate("127.0.0.9") == a


def test_namespace_labels_never_overwrite_and_empty_removes() -> None:
    out = set_namespace_labels({"a": "mine", "gone": "x"}, {"a": "theirs", "b": "1", "gone": ""})
    assert out == {"a": "mine", "b": "1"}


def test_authorization_policy_matches_owner_header() -> None:
    profile = {"metadata": {"name": "alice"}, "spec": {"owner": {"name": "alice@example.com"}}}
    from devstack.standins.profile_controller import ProfileControllerConfig

    spec = authorization_policy_spec(profile, ProfileControllerConfig())
    assert spec["action"] == "ALLOW"
    first = spec["rules"][0]["when"][0]
    assert first == {"key": "request.headers[kubeflow-userid]", "values": ["alice@example.com"]}
    assert spec["rules"][1]["when"][0] == {"key": "source.namespace", "values": ["alice"]}


# --------------------------------------------------------------------------- against the cluster


def profile_body(name: str, owner: str, **extra: Any) -> JSON:
    body: JSON = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": name},
        "spec": {"owner": {"kind": "User", "name": owner}},
    }
    for key, value in extra.items():
        if key == "annotations":
            body["metadata"]["annotations"] = value
        else:
            body["spec"][key] = value
    return body


async def make_profile(kube: Kube, name: str, owner: str, **extra: Any) -> JSON:
    return await kube.create("/apis/kubeflow.org/v1/profiles", profile_body(name, owner, **extra))


async def wait_profile_ready(kube: Kube, name: str, timeout: float = 30) -> None:
    await eventually(
        lambda: kube.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default-editor"),
        timeout,
    )


async def delete_profile(kube: Kube, name: str) -> None:
    try:
        await kube.delete(f"/apis/kubeflow.org/v1/profiles/{name}")
    except KubeError as exc:
        if exc.status != 404:
            raise


@pytest.mark.controlplane
async def test_profile_creates_namespace_rbac_and_policy(
    standins: StandIns, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    kube, name, owner = standins_kube, unique_name("prof"), "alice@example.com"
    profile = await make_profile(kube, name, owner, resourceQuotaSpec={"hard": {"cpu": "2"}})
    try:
        await wait_profile_ready(kube, name)
        ns = await kube.get(f"/api/v1/namespaces/{name}")
        assert ns["metadata"]["annotations"]["owner"] == owner
        labels = ns["metadata"]["labels"]
        assert labels["istio-injection"] == "enabled"
        assert labels["app.kubernetes.io/part-of"] == "kubeflow-profile"
        assert labels["pipelines.kubeflow.org/enabled"] == "true"
        (ref,) = ns["metadata"]["ownerReferences"]
        assert ref["kind"] == "Profile" and ref["uid"] == profile["metadata"]["uid"]
        assert ref["controller"] is True and ref["blockOwnerDeletion"] is True

        await eventually(
            lambda: kube.get_or_none(f"/api/v1/namespaces/{name}/resourcequotas/kf-resource-quota")
        )
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/rolebindings"
        admin = await eventually(lambda: kube.get_or_none(f"{rbac}/namespaceAdmin"))
        assert admin["roleRef"]["name"] == "kubeflow-admin"
        assert admin["subjects"][0]["name"] == owner and admin["subjects"][0]["kind"] == "User"
        assert admin["metadata"]["annotations"] == {"user": owner, "role": "admin"}
        for sa, role in (("default-editor", "kubeflow-edit"), ("default-viewer", "kubeflow-view")):
            await kube.get(f"/api/v1/namespaces/{name}/serviceaccounts/{sa}")
            binding = await kube.get(f"{rbac}/{sa}")
            assert binding["roleRef"]["name"] == role
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": sa, "namespace": name}
            ]
        policy = await kube.get(
            f"/apis/security.istio.io/v1beta1/namespaces/{name}/authorizationpolicies/"
            "ns-owner-access-istio"
        )
        assert policy["spec"]["rules"][0]["when"][0]["values"] == [owner]
        fresh = await eventually(
            lambda: _with_finalizer(kube, f"/apis/kubeflow.org/v1/profiles/{name}")
        )
        assert "profile-finalizer" in fresh["metadata"]["finalizers"]

        # An owned child deleted behind the controller's back comes back (Owns()).
        await kube.delete(f"/api/v1/namespaces/{name}/serviceaccounts/default-editor")
        await wait_profile_ready(kube, name)

        # Deletion: the controller drops its finalizer. (The namespace then goes through
        # kube-controller-manager's garbage collector, which may take its 30 s discovery
        # resync to notice the Profile kind on a fresh control plane: not asserted here.)
        await delete_profile(kube, name)
        await eventually(lambda: _gone(kube, f"/apis/kubeflow.org/v1/profiles/{name}"))
    finally:
        await delete_profile(kube, name)


async def _with_finalizer(kube: Kube, path: str) -> JSON | None:
    obj = await kube.get(path)
    return obj if obj["metadata"].get("finalizers") else None


@pytest.mark.controlplane
async def test_foreign_namespace_is_refused_not_adopted(
    standins: StandIns, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    kube, name = standins_kube, unique_name("foreign")
    await kube.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"x": "y"}}},
    )
    await make_profile(kube, name, "mallory@example.com")
    try:

        async def failed() -> JSON | None:
            p = await kube.get(f"/apis/kubeflow.org/v1/profiles/{name}")
            conditions = (p.get("status") or {}).get("conditions") or []
            return next((c for c in conditions if c.get("type") == "Failed"), None)

        condition = await eventually(failed)
        assert "not owned by profile creator mallory@example.com" in condition["message"]
        await asyncio.sleep(1)  # give a wrong controller time to do damage
        ns = await kube.get(f"/api/v1/namespaces/{name}")
        assert not ns["metadata"].get("ownerReferences")
        # untouched: only the label the API server itself puts on every namespace (1.21+)
        assert ns["metadata"]["labels"] == {"x": "y", "kubernetes.io/metadata.name": name}
        assert "owner" not in (ns["metadata"].get("annotations") or {})
        sa = await kube.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default-editor")
        assert sa is None
    finally:
        await delete_profile(kube, name)
        await kube.delete(f"/api/v1/namespaces/{name}")


@pytest.mark.controlplane
async def test_delay_annotation_holds_the_controller(
    standins: StandIns, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    kube, name = standins_kube, unique_name("slow")
    start = time.monotonic()
    await make_profile(kube, name, "bob@example.com", annotations={DELAY_ANNOTATION: "2"})
    try:
        await wait_profile_ready(kube, name)
        assert time.monotonic() - start >= 2
        # The server's own clocks (whole seconds, so the floor of t+2 is the floor of t plus
        # 2): the namespace was made at least 2 s after the Profile, however slow this test.
        profile = await kube.get(f"/apis/kubeflow.org/v1/profiles/{name}")
        namespace = await kube.get(f"/api/v1/namespaces/{name}")
        made = [
            dt.datetime.fromisoformat(o["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
            for o in (profile, namespace)
        ]
        assert (made[1] - made[0]).total_seconds() >= 2
    finally:
        await delete_profile(kube, name)


@pytest.mark.controlplane
async def test_paused_annotation_simulates_a_controller_outage(
    standins: StandIns, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    kube, name = standins_kube, unique_name("paused")
    await make_profile(kube, name, "erin@example.com", annotations={PAUSED_ANNOTATION: "true"})
    try:
        await asyncio.sleep(1.5)
        assert await kube.get_or_none(f"/api/v1/namespaces/{name}") is None
        await kube.patch(
            f"/apis/kubeflow.org/v1/profiles/{name}",
            {"metadata": {"annotations": {PAUSED_ANNOTATION: None}}},
        )
        await wait_profile_ready(kube, name)
    finally:
        await delete_profile(kube, name)


def _pod_manifest(name: str, argv: list[str], **spec: Any) -> JSON:
    container: JSON = {"name": "main", "image": "python:3.11", "command": argv}
    container.update(spec.pop("container", {}))
    # profile namespaces enforce Pod Security "restricted"
    return restricted(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": spec.pop("labels", {})},
            "spec": {
                "containers": [container],
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 5,
                **spec,
            },
        }
    )


SLEEP = ["python", "-c", "import time; time.sleep(600)"]


@pytest.mark.controlplane
async def test_webhook_injects_poddefault_and_rejects_conflicts(
    standins: StandIns, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    kube, name = standins_kube, unique_name("wh")
    configuration = await kube.get(
        f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIGURATION_NAME}"
    )
    assert configuration["webhooks"][0]["failurePolicy"] == "Fail"
    await make_profile(kube, name, "carol@example.com")
    try:
        await wait_profile_ready(kube, name)
        pd = await kube.create(
            f"/apis/kubeflow.org/v1alpha1/namespaces/{name}/poddefaults",
            {
                "apiVersion": "kubeflow.org/v1alpha1",
                "kind": "PodDefault",
                "metadata": {"name": "add-foo"},
                "spec": {
                    "desc": "adds FOO",
                    "selector": {"matchLabels": {"add-foo": "true"}},
                    "env": [{"name": "FOO", "value": "bar"}],
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                },
            },
        )
        pods = f"/api/v1/namespaces/{name}/pods"
        sa = {"serviceAccountName": "default-editor"}
        created = await kube.create(
            pods, _pod_manifest("injected", SLEEP, labels={"add-foo": "true"}, **sa)
        )
        container = created["spec"]["containers"][0]
        assert {"name": "FOO", "value": "bar"} in container["env"]
        assert {"name": "scratch", "mountPath": "/scratch"} in container["volumeMounts"]
        assert any(v["name"] == "scratch" for v in created["spec"]["volumes"])
        annotation = "poddefault.admission.kubeflow.org/poddefault-add-foo"
        assert created["metadata"]["annotations"][annotation] == pd["metadata"]["resourceVersion"]

        plain = await kube.create(pods, _pod_manifest("plain", SLEEP, **sa))
        assert "env" not in plain["spec"]["containers"][0]

        conflicting = _pod_manifest(
            "conflicting",
            SLEEP,
            labels={"add-foo": "true"},
            container={"env": [{"name": "FOO", "value": "other"}]},
            **sa,
        )
        with pytest.raises(KubeError) as caught:
            await kube.create(pods, conflicting)
        assert "conflict occurred while applying poddefaults: add-foo" in str(caught.value)
        assert "FOO" in str(caught.value)
        assert await kube.get_or_none(f"{pods}/conflicting") is None
    finally:
        await delete_profile(kube, name)


@pytest.mark.controlplane
async def test_kubelet_runs_pod_and_deletion_stops_it(
    standins: StandIns, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    kube, ns = standins_kube, unique_name("kl")
    await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    try:
        await kube.create(
            f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "runner"}}
        )
        manifest = _pod_manifest(
            "web",
            ["python", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
            serviceAccountName="runner",
            container={
                "ports": [{"containerPort": 8080, "name": "http"}],
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                ],
            },
        )
        path = f"/api/v1/namespaces/{ns}/pods/web"
        await kube.create(f"/api/v1/namespaces/{ns}/pods", manifest)

        async def running() -> JSON | None:
            p = await kube.get(path)
            statuses = p["status"].get("containerStatuses") or []
            ok = p["status"].get("phase") == "Running" and statuses and statuses[0]["ready"]
            return p if ok else None

        pod_obj = await eventually(running)
        assert pod_obj["spec"]["nodeName"] == standins.node_name
        ip = pod_obj["status"]["podIP"]
        assert ip.startswith("127.0.0.") and ip != "127.0.0.1"
        ready = {c["type"]: c["status"] for c in pod_obj["status"]["conditions"]}
        assert ready["Ready"] == "True"
        url = f"http://{ip}:8080/"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(url) as resp:
                assert resp.status == 200
        assert standins.pod_log_path(ns, "web") is not None

        await kube.delete(path)
        await eventually(lambda: _gone(kube, path), timeout=20)
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
                await http.get(url)

        # A process that exits is reported with its exit code.
        failing = _pod_manifest(
            "fails", ["python", "-c", "raise SystemExit(3)"], serviceAccountName="runner"
        )
        await kube.create(f"/api/v1/namespaces/{ns}/pods", failing)

        async def failed() -> JSON | None:
            p = await kube.get(f"/api/v1/namespaces/{ns}/pods/fails")
            return p if p["status"].get("phase") == "Failed" else None

        done = await eventually(failed)
        assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    finally:
        await kube.delete(f"/api/v1/namespaces/{ns}")


async def _gone(kube: Kube, path: str) -> bool:
    return await kube.get_or_none(path) is None


@pytest.mark.controlplane
async def test_fault_proxy_injects_500_once_then_passes(
    control_plane: ControlPlane, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    with FaultProxy.for_kubeconfig(control_plane.admin_kubeconfig, control_plane.ca_file) as proxy:
        kubeconfig = proxy.write_kubeconfig(control_plane.admin_kubeconfig, tmp_path / "kc")
        kube = await Kube.from_kubeconfig(kubeconfig)
        try:
            rule = proxy.add_rule("GET", r"^/api/v1/namespaces$", status=500, times=1)
            with pytest.raises(KubeError) as caught:
                await kube.get("/api/v1/namespaces")
            assert caught.value.status == 500 and caught.value.reason == "InternalError"
            assert caught.value.body["kind"] == "Status"
            listing = await kube.get("/api/v1/namespaces")
            assert listing["kind"] == "NamespaceList"
            assert rule.hits == 1
            assert proxy.count("GET", r"^/api/v1/namespaces$") == 2
            assert proxy.count("GET", r"^/api/v1/namespaces$", injected=True) == 1

            # Watches stream through the proxy.
            name = unique_name("watched")
            rv = listing["metadata"]["resourceVersion"]

            async def first_added() -> JSON:
                async for event in kube.watch("/api/v1/namespaces", rv, timeout_seconds=20):
                    if event["object"]["metadata"]["name"] == name:
                        return event
                raise AssertionError("watch ended without the event")

            watcher = asyncio.create_task(first_added())
            await asyncio.sleep(0.5)
            await kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
            event = await asyncio.wait_for(watcher, timeout=20)
            assert event["type"] == "ADDED"
            await kube.delete(f"/api/v1/namespaces/{name}")
        finally:
            await kube.close()


@pytest.mark.controlplane
async def test_fault_proxy_forwards_bearer_token(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    with FaultProxy.for_kubeconfig(control_plane.hub_kubeconfig, control_plane.ca_file) as proxy:
        assert proxy.upstream_client_cert is None
        kubeconfig = proxy.write_kubeconfig(control_plane.hub_kubeconfig, tmp_path / "kc")
        kube = await Kube.from_kubeconfig(kubeconfig)
        try:
            review = await kube.create(
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": {"verb": "create", "resource": "pods"}},
                },
            )
            assert isinstance(review["status"]["allowed"], bool)
            proxy.add_rule("POST", "selfsubjectaccessreviews", status=429)
            with pytest.raises(KubeError) as caught:
                await kube.create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {})
            assert caught.value.status == 429 and caught.value.reason == "TooManyRequests"

            # A held request: "timeout" answers 504 after holding, "delay" then forwards.
            proxy.add_rule("GET", r"^/version$", action="timeout", hold_seconds=0.5)
            proxy.add_rule("GET", r"^/version$", action="delay", hold_seconds=0.5)
            start = time.monotonic()
            with pytest.raises(KubeError) as caught:
                await kube.get("/version")
            assert caught.value.status == 504 and caught.value.reason == "Timeout"
            assert (await kube.get("/version"))["major"] == "1"
            assert time.monotonic() - start >= 1.0
            assert proxy.count("GET", r"^/version$", injected=True) == 2
        finally:
            await kube.close()
