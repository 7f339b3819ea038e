"""The chart deployed and serving: what tests and ``./dev demo`` log in to.

:func:`deploy_chart_hub` is ``helm install`` + ``kubectl apply -f helm-values/hub-rbac.yaml``
+ the cluster running the chart's hub and proxy:

1. render (real Helm) with ``helm-values/values.yaml`` and a site overlay for this machine,
   validate, apply (devstack/chart.py); create the OIDC client Secret as docs/deploy.md
   says;
2. run the ``proxy`` and ``hub`` Deployments' containers, in one of two ways:

   * :func:`deploy_chart_pods` (``./dev demo --chart-pods``, tests/e2e/test_chart_pods.py): as
     the Deployments' own pods — kube-controller-manager makes the ReplicaSets and pods, the
     container kubelet stand-in runs them from the hub image (images/hub/Dockerfile), the
     proxy stand-in image and the single-user image, with cluster networking (DNS, service
     variables, the ``kubernetes`` Service; devstack/standins/kubelet.py); a browser
     reaches ``proxy-public`` through the load-balancer stand-in (devstack/service_lb.py);
   * :func:`deploy_chart_hub` (``./dev demo --chart``, tests/e2e/test_chart_hub.py): as host
     processes in private mount namespaces (devstack/host_pods.py, a stand-in), the hub
     in the hub image's Python environment (devstack/hub_image_env.py), Service names
     resolved by the cluster DNS stand-in (devstack/cluster_dns.py) in the test's event
     loop; notebooks are host processes of the process kubelet. Kept: it needs no container
     engine and starts in seconds, and test_chart_deploy's config checks use its pod setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devstack import tcp_pipe
from devstack.chart import (
    ChartApplied,
    RenderedChart,
    apply_chart,
    local_overlay,
    render_chart,
    validate_objects,
)
from devstack.cluster_dns import ClusterDNS
from devstack.controlplane import ControlPlane, apply_object
from devstack.host_pods import HostPod, pod_addresses, prepare_host_pod
from devstack.hub_image_env import HubImageEnv
from devstack.oidc_stack import (
    ADMIN_GROUPS,
    ALLOWED_GROUPS,
    HUB_SCOPES,
    OIDCClient,
    OIDCProvider,
    chp_command,
)
from devstack.service_lb import ServiceLoadBalancer
from devstack.tcp_pipe import start_tcp_forwarder

PROXY_PORT = 8000  # the chart's proxy container port ("http")


class ChartHubNotReady(RuntimeError):
    pass


class _DeployedHub:
    """What both ways of running the chart's hub share: its timings and callback URL."""

    url: str
    timings: dict[str, float]
    started: float

    def mark(self, step: str) -> None:
        self.timings[step] = time.monotonic() - self.started

    @property
    def callback_url(self) -> str:
        return f"{self.url}/hub/oauth_callback"


@dataclass
class ChartHub(_DeployedHub):
    url: str  # the proxy, as a browser reaches it
    provider: OIDCProvider
    client: OIDCClient
    rendered: RenderedChart
    applied: ChartApplied
    pods: dict[str, HostPod] = field(default_factory=dict)
    dns: ClusterDNS | None = None
    _start_pod: Any = None  # (name) -> HostPod, set by _run_pods
    #: seconds from the start of rendering to each step
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{pod.log()[-6000:]}" for name, pod in self.pods.items())

    async def login(self, http: httpx.AsyncClient, username: str) -> httpx.Response:
        start = f"{self.url}/hub/oauth_login?next=%2Fhub%2Fhome"
        return await self.provider.browse(http, start, username=username)

    async def replace_pod(self, name: str, ready_timeout: float = 120) -> None:
        """Delete the pod and let "the Deployment" start its replacement (same PVC)."""
        self.pods[name].stop()
        self.pods[name].log_file.rename(self.pods[name].log_file.with_suffix(".previous.log"))
        await self._start_pod(name)
        await _wait_ready(self, ready_timeout)

    def stop(self) -> None:
        for name in ("hub", "proxy"):
            if name in self.pods:
                self.pods[name].stop()
        if self.dns is not None:
            self.dns.close()


def site_overlay(provider: OIDCProvider, client: OIDCClient, url: str) -> dict[str, Any]:
    """The second ``-f`` of this machine: the provider, the demo accounts' groups."""
    overlay = local_overlay(
        issuer=provider.issuer, callback_url=f"{url}/hub/oauth_callback", client_id=client.client_id
    )
    auth = overlay["hub"]["config"]["DnaOIDCAuthenticator"]
    auth.update(allowed_groups=ALLOWED_GROUPS, admin_groups=ADMIN_GROUPS, scope=HUB_SCOPES)
    return overlay


async def deploy_chart_hub(
    control_plane: ControlPlane,
    admin_api: ApiClient,
    provider: OIDCProvider,
    node_modules: Path,
    hub_env: HubImageEnv,
    work: Path,
    *,
    extra_overlays: Sequence[dict[str, Any]] = (),
    ready_timeout: float = 120,
) -> ChartHub:
    started = time.monotonic()
    addresses = pod_addresses(["hub", "proxy"])
    url = f"http://{addresses['proxy']}:{PROXY_PORT}"
    client = await provider.register_client([f"{url}/hub/oauth_callback"], [f"{url}/hub/login"])
    rendered, applied = await deploy_chart(
        admin_api, client, site_overlay(provider, client, url), *extra_overlays
    )
    hub = ChartHub(url, provider, client, rendered, applied, started=started)
    hub.mark("rendered, validated, applied")
    try:
        await _run_pods(hub, control_plane, admin_api, node_modules, hub_env, work, addresses)
        await _wait_ready(hub, ready_timeout)
    except BaseException:
        hub.stop()
        raise
    hub.mark("hub ready")
    return hub


async def _run_pods(
    hub: ChartHub,
    control_plane: ControlPlane,
    admin_api: ApiClient,
    node_modules: Path,
    hub_env: HubImageEnv,
    work: Path,
    addresses: dict[str, str],
) -> None:
    """STAND-IN: the hub and proxy Deployments' containers as host processes."""
    backing = {"hub": addresses["hub"], "proxy-api": addresses["proxy"]}
    backing["proxy-public"] = addresses["proxy"]
    namespace = hub.rendered.get("Deployment", "hub")["metadata"]["namespace"]
    dns_address = addresses["hub"].rsplit(".", 1)[0] + ".53"
    hub.dns = ClusterDNS(dns_address, api=admin_api)
    hub.dns.add({(name, namespace): address for name, address in backing.items()})
    await hub.dns.start()
    executables = {
        "jupyterhub": [str(hub_env.python.parent / "jupyterhub")],
        "configurable-http-proxy": chp_command(node_modules),
    }
    # the hub image's PATH finds its python3 first (the chart's idle culler runs `python3 -m`)
    hub_image = hub_env.environ({"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    hub_base = {k: hub_image[k] for k in ("PATH", "PYTHONPATH")}

    async def start(name: str) -> HostPod:
        pod = await prepare_host_pod(
            admin_api,
            hub.rendered.get("Deployment", name),
            address=addresses[name],
            backing=backing,
            executables=executables,
            api_server=control_plane.server,
            ca_file=control_plane.ca_file,
            base_env=hub_base if name == "hub" else {},
            # the same directory again: the hub's PVC (its database) survives a restart
            root=work / f"pod-{name}",
            nameserver=dns_address,
        )
        hub.pods[name] = pod.start()
        return pod

    hub._start_pod = start
    for name in ("proxy", "hub"):
        await start(name)


async def _wait_ready(hub: ChartHub, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            for name, pod in hub.pods.items():
                if pod.process is not None and pod.process.poll() is not None:
                    raise ChartHubNotReady(f"the {name} exited:\n{hub.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get(f"{hub.url}/hub/health")
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise ChartHubNotReady(f"the chart's hub did not answer through its proxy:\n{hub.logs()}")


# --- the chart's Deployments as pods of the container kubelet ------------------------------

#: The hub pod's loopback sidecar (test-only, see :func:`pods_overlay`): forwards
#: 127.0.0.1:PORT in the pod to GATEWAY:PORT, where this machine's OIDC provider is reached.
#: The script is devstack/tcp_pipe.py (the host's forwarders' own code) and a main.
LOOPBACK_SIDECAR = (
    Path(tcp_pipe.__file__).read_text()
    + """
import sys

port, host = int(sys.argv[1]), sys.argv[2]


async def main():
    server = await start_tcp_forwarder(("127.0.0.1", port), (host, port))
    await server.serve_forever()


asyncio.run(main())
"""
)


async def deploy_chart(
    admin_api: ApiClient, client: OIDCClient, *overlays: dict[str, Any]
) -> tuple[RenderedChart, ChartApplied]:
    """Render the chart with ``overlays``, validate and apply it, and create the OIDC client
    Secret its hub refers to (``dna-hub-oidc``, in the hub's namespace)."""
    rendered = render_chart(*overlays)
    validate_objects(rendered)
    applied = await apply_chart(admin_api, rendered)
    namespace = rendered.get("Secret", "hub")["metadata"]["namespace"]
    await apply_object(
        admin_api,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "dna-hub-oidc", "namespace": namespace},
            "stringData": {"client-secret": client.client_secret},
        },
    )
    return rendered, applied


def _image(tag: str) -> dict[str, str]:
    name, version = tag.rsplit(":", 1)
    return {"name": name, "tag": version}


def pods_overlay(
    *,
    hub_image: str,
    proxy_image: str,
    notebook_image: str,
    node: dict[str, Any],
    issuer_port: int,
    gateway: str,
) -> dict[str, Any]:
    """The rest of this machine's second ``-f`` when the container kubelet runs the chart.

    Images the kubelet stand-in has (built from images/hub/Dockerfile, the single-user
    Dockerfile, and the proxy stand-in image), and its node's selector + toleration for the
    hub, the proxy and the notebooks. Test-only: the issuer is http on loopback (the test
    provider), which the hub accepts only there (allow_insecure_loopback); so the hub pod
    gets a sidecar forwarding its 127.0.0.1:<issuer port> to the provider through the
    gateway — a real site uses its https issuer and needs none.
    """
    selector, tolerations = node["nodeSelector"], node["tolerations"]
    sidecar = {
        "name": "issuer-loopback",
        "image": hub_image,
        "command": ["python3", "-c", LOOPBACK_SIDECAR, str(issuer_port), gateway],
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "hub": {
            "image": _image(hub_image),
            "nodeSelector": selector,
            "tolerations": tolerations,
            "extraContainers": [sidecar],
        },
        "proxy": {
            "chp": {
                "image": _image(proxy_image),
                "nodeSelector": selector,
                "tolerations": tolerations,
            }
        },
        "singleuser": {
            "image": _image(notebook_image),
            "nodeSelector": selector,
            "extraTolerations": tolerations,
        },
    }


@dataclass
class ChartPods(_DeployedHub):
    """The chart served by its own Deployments' pods (the container kubelet runs them)."""

    url: str  # the proxy-public load balancer stand-in, as a browser reaches it
    provider: OIDCProvider
    client: OIDCClient
    rendered: RenderedChart
    applied: ChartApplied
    api: ApiClient
    namespace: str
    balancer: ServiceLoadBalancer
    forwarder: asyncio.Server
    #: (namespace, pod) -> the kubelet's log of its first container (StandIns.pod_log)
    pod_log: Callable[[str, str], str | None] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    async def pods(self, component: str) -> list[Any]:
        """The pods of the Deployment's current revision (not an earlier install's, which the
        old ReplicaSet may still hold while it is scaled down), not being deleted."""
        listed = await k8s.CoreV1Api(self.api).list_namespaced_pod(
            self.namespace, label_selector=f"component={component}", _request_timeout=30
        )
        current = await self._current_template_hash(component)
        return [
            p
            for p in listed.items
            if p.metadata.deletion_timestamp is None
            and (current is None or (p.metadata.labels or {}).get("pod-template-hash") == current)
        ]

    async def _current_template_hash(self, component: str) -> str | None:
        """pod-template-hash of the ReplicaSet of the Deployment's current revision."""
        apps = k8s.AppsV1Api(self.api)
        try:
            deployment = await apps.read_namespaced_deployment(
                component, self.namespace, _request_timeout=30
            )
        except ApiException:
            return None
        revision = (deployment.metadata.annotations or {}).get("deployment.kubernetes.io/revision")
        replica_sets = await apps.list_namespaced_replica_set(
            self.namespace, label_selector=f"component={component}", _request_timeout=30
        )
        for rs in replica_sets.items:
            owners = {o.uid for o in rs.metadata.owner_references or []}
            rs_revision = (rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision")
            if deployment.metadata.uid in owners and revision and rs_revision == revision:
                return (rs.metadata.labels or {}).get("pod-template-hash")
        return None

    async def ready_pod(self, component: str, timeout: float, exclude: str = "") -> Any:
        """The Deployment's pod (not ``exclude``) once it is Running and Ready."""
        deadline = time.monotonic() + timeout
        seen: list[Any] = []
        while time.monotonic() < deadline:
            seen = [p for p in await self.pods(component) if p.metadata.name != exclude]
            for pod in seen:
                conditions = {c.type: c.status for c in pod.status.conditions or []}
                if pod.status.phase == "Running" and conditions.get("Ready") == "True":
                    return pod
                if pod.status.phase in ("Failed", "Succeeded"):
                    states = [
                        (c.name, c.state.terminated or c.state.waiting)
                        for c in pod.status.container_statuses or []
                    ]
                    raise ChartHubNotReady(
                        f"{component} pod {pod.metadata.name} ended ({pod.status.phase}) on "
                        f"node {pod.spec.node_name}: {pod.status.message or ''} {states}\n"
                        + self.log_of(pod.metadata.name)
                    )
            await asyncio.sleep(0.5)
        logs = "\n".join(self.log_of(p.metadata.name) for p in seen)
        raise ChartHubNotReady(f"no ready {component} pod after {timeout}s:\n{logs}")

    def log_of(self, pod: str) -> str:
        log = self.pod_log(self.namespace, pod) if self.pod_log else None
        return f"--- {pod} ---\n{(log or '(no log)')[-6000:]}"

    async def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/hub/health")).status_code == 200:
                        return
                await asyncio.sleep(0.5)
        raise ChartHubNotReady(f"the chart's hub did not answer at {self.url}/hub/health")

    async def stop(self, timeout: float = 180) -> None:
        """``helm uninstall``'s part for the pods: delete the Deployments (foreground: their
        ReplicaSets and pods first) and wait until they are gone, so that the next install
        is not applied to a Deployment that is being deleted."""
        self.balancer.close()
        self.forwarder.close()
        await delete_deployments(self.api, self.namespace, timeout)


async def delete_deployments(api: ApiClient, namespace: str, timeout: float = 180) -> None:
    """Delete the chart's hub and proxy Deployments (foreground: their ReplicaSets and pods
    first) and wait until they are gone — ``helm uninstall``'s part for the pods."""
    apps = k8s.AppsV1Api(api)
    for name in ("hub", "proxy"):
        with contextlib.suppress(ApiException):
            await apps.delete_namespaced_deployment(
                name, namespace, propagation_policy="Foreground", _request_timeout=30
            )
    deadline = time.monotonic() + timeout
    for name in ("hub", "proxy"):
        while time.monotonic() < deadline:
            try:
                await apps.read_namespaced_deployment(name, namespace, _request_timeout=30)
            except ApiException as e:
                if e.status == 404:
                    break
                raise
            await asyncio.sleep(0.5)
        else:
            raise ChartHubNotReady(f"Deployment {namespace}/{name} still exists")


async def deploy_chart_pods(
    admin_api: ApiClient,
    provider: OIDCProvider,
    node_modules: Path,
    gateway: str,
    node: dict[str, Any],
    *,
    extra_overlays: Sequence[dict[str, Any]] = (),
    pod_log: Callable[[str, str], str | None] | None = None,
    ready_timeout: float = 300,
) -> ChartPods:
    """``helm install`` with this machine's overlay; the Deployments' pods serve it."""
    from devstack import images

    hub_image = (await asyncio.to_thread(images.ensure_image, "hub")).tag
    notebook_image = (await asyncio.to_thread(images.ensure_image, "singleuser")).tag
    proxy_image = await asyncio.to_thread(images.ensure_proxy_image, node_modules)
    namespace = "jupyterhub"
    # An earlier install in this namespace (the engine-free path's, whose Deployments the
    # process kubelet cannot run) is uninstalled first, as `helm uninstall` would.
    await delete_deployments(admin_api, namespace)
    balancer = await ServiceLoadBalancer(admin_api, namespace, "proxy-public", "http").start()
    issuer = urlsplit(provider.issuer)
    issuer_port = issuer.port or 80
    forwarder = await start_tcp_forwarder((gateway, issuer_port), (issuer.hostname, issuer_port))
    try:
        url = balancer.url
        client = await provider.register_client([f"{url}/hub/oauth_callback"], [f"{url}/hub/login"])
        started = time.monotonic()  # timings from the render on (images are cached builds)
        overlay = pods_overlay(
            hub_image=hub_image,
            proxy_image=proxy_image,
            notebook_image=notebook_image,
            node=node,
            issuer_port=issuer_port,
            gateway=gateway,
        )
        rendered, applied = await deploy_chart(
            admin_api, client, site_overlay(provider, client, url), overlay, *extra_overlays
        )
    except BaseException:
        balancer.close()
        forwarder.close()
        raise
    chart = ChartPods(
        url, provider, client, rendered, applied, admin_api, namespace, balancer, forwarder,
        pod_log=pod_log, started=started,
    )  # fmt: skip
    chart.mark("rendered, validated, applied")
    try:
        await chart.ready_pod("proxy", ready_timeout)
        await chart.ready_pod("hub", ready_timeout)
        await chart.wait_healthy(ready_timeout)
    except BaseException:
        await chart.stop()
        raise
    chart.mark("hub and proxy pods ready")
    return chart
