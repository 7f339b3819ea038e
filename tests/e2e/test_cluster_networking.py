"""The container kubelet's cluster networking stand-in, seen from inside pods.

Pods of two namespaces (run by the container kubelet from the hub image) resolve Service names
through the cluster DNS stand-in with the search path a kubelet writes — a short name only in
the Service's own namespace, ``<svc>.<ns>.svc`` from anywhere, NXDOMAIN for the rest — get the
service variables of their own namespace's Services only, and reach the API server at the
``kubernetes`` Service's clusterIP with their ServiceAccount token, verifying its certificate
(devstack/standins/kubelet.py ``ClusterNetworking``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from devstack import images
from devstack.pod_network import POD_ON_CONTAINERS
from devstack.standins_process import StandIns

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

PROBE = """
import json, os, socket, ssl, urllib.request
def resolve(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET)})
    except socket.gaierror as e:
        return "error: " + str(e.args[0])
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
url = "https://%s:%s/api" % (os.environ["KUBERNETES_SERVICE_HOST"],
                             os.environ["KUBERNETES_SERVICE_PORT"])
request = urllib.request.Request(
    url, headers={"Authorization": "Bearer " + open(sa + "/token").read()})
context = ssl.create_default_context(cafile=sa + "/ca.crt")
try:
    api = urllib.request.urlopen(request, context=context, timeout=20).status
except Exception as e:
    api = repr(e)
r = {"resolv": open("/etc/resolv.conf").read(),
     "names": {n: resolve(n) for n in NAMES},
     "env": {k: v for k, v in os.environ.items() if "SERVICE" in k or k.endswith("_TCP")},
     "api": api}
print("PROBE " + json.dumps(r), flush=True)
"""


async def _namespace(core: client.CoreV1Api, name: str) -> None:
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    for _ in range(300):  # kube-controller-manager makes the namespace's "default" SA
        try:
            await core.read_namespaced_service_account("default", name)
            return
        except client.exceptions.ApiException as e:
            if e.status != 404:
                raise
        await asyncio.sleep(0.2)
    raise AssertionError(f"no default ServiceAccount token in {name}")


async def _probe(
    core: client.CoreV1Api, standins: StandIns, namespace: str, image: str, names: list[str]
) -> dict:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {
            **POD_ON_CONTAINERS,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "command": ["python3", "-c", f"NAMES = {names!r}\n" + PROBE],
                    "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": False},
                }
            ],
        },
    }
    await core.create_namespaced_pod(namespace, body)
    for _ in range(600):
        pod = await core.read_namespaced_pod("probe", namespace)
        if pod.status.phase in ("Succeeded", "Failed"):
            break
        await asyncio.sleep(0.5)
    log = standins.pod_log(namespace, "probe") or ""
    for line in log.splitlines():
        if "PROBE " in line:
            return json.loads(line.split("PROBE ", 1)[1])
    raise AssertionError(f"the probe in {namespace} reported nothing:\n{log[-3000:]}")


async def test_pods_resolve_services_as_on_a_cluster(
    admin_api: ApiClient, container_standins: StandIns, unique_name: Callable[..., str]
) -> None:
    core = client.CoreV1Api(admin_api)
    image = (await asyncio.to_thread(images.ensure_image, "hub")).tag
    home, other = unique_name("home"), unique_name("other")
    for ns in (home, other):
        await _namespace(core, ns)
    # a Service without selector, its Endpoints written as the endpoints controller would
    await core.create_namespaced_service(
        home,
        {
            "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8000}]},
        },
    )
    await core.create_namespaced_endpoints(
        home,
        {
            "metadata": {"name": "web"},
            "subsets": [
                {"addresses": [{"ip": "10.1.2.3"}], "ports": [{"name": "http", "port": 8000}]}
            ],
        },
    )
    service = await core.read_namespaced_service("web", home)
    names = ["web", f"web.{home}", f"web.{home}.svc", "nothing-here", "kubernetes.default"]
    inside = await _probe(core, container_standins, home, image, names)
    outside = await _probe(core, container_standins, other, image, names)

    assert inside["resolv"].splitlines()[0] == (
        f"search {home}.svc.cluster.local svc.cluster.local cluster.local"
    ), inside["resolv"]
    assert "options ndots:5" in inside["resolv"]
    assert inside["names"]["web"] == ["10.1.2.3"]
    assert outside["names"]["web"].startswith("error"), outside  # short name, other namespace
    for seen in (inside, outside):
        assert seen["names"][f"web.{home}.svc"] == ["10.1.2.3"]
        assert seen["names"][f"web.{home}"] == ["10.1.2.3"]
        assert seen["names"]["nothing-here"].startswith("error"), seen
        assert seen["names"]["kubernetes.default"] == ["10.96.0.1"]
        # in-cluster configuration: the clusterIP, the token, the CA — TLS verified
        assert seen["env"]["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
        assert seen["api"] == 200, seen["api"]
    # the service variables: the pod's own namespace's Services, with the clusterIP
    assert inside["env"]["WEB_SERVICE_HOST"] == service.spec.cluster_ip
    assert inside["env"]["WEB_SERVICE_PORT"] == "80"
    assert inside["env"]["WEB_SERVICE_PORT_HTTP"] == "80"
    assert inside["env"]["WEB_PORT_80_TCP"] == f"tcp://{service.spec.cluster_ip}:80"
    assert "WEB_SERVICE_HOST" not in outside["env"]
    for ns in (home, other):
        await core.delete_namespace(ns)
