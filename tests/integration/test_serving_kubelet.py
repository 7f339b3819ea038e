"""The kubelet stand-in's ``serve`` runtime: pods that run nothing, on loopback IPs where the
stand-in answers HTTP like a Jupyter server behind JupyterHub.

Pure tests of its runtime selection, CIDR check, IP pool, HTTP answers and worker (with a
fake API), and control-plane tests against a stand-ins process of its own
(``--kubelet-runtime serve``, no profile controller, no webhook) on a tainted node
``standin-serve``: only pods that select that node and tolerate its taint are bound there,
so it never races the session's other stand-in kubelets.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack.controlplane import ControlPlane
from devstack.standins import JSON, Kube
from devstack.standins.__main__ import kubelet_config, parse_args
from devstack.standins.kubelet import Kubelet, KubeletConfig
from devstack.standins.simulated_pods import (
    DEFAULT_POD_CIDR,
    SERVE_POD_CIDR,
    PodCidrPool,
    PodHttpServers,
    ServingPodWorker,
    SimulatedPodWorker,
    service_prefix,
)
from devstack.standins_process import StandIns, running_standins
from tests.integration.test_simulated_kubelet import (
    _gone,
    _namespace,
    _running,
    started_stock_kubespawner,
)
from tests.integration.test_standins import eventually
from tests.support.pod_security import (
    restricted,
)

NODE = "standin-serve"
TAINT_KEY = "dna-hub.test/runtime"
POD_NETWORK = ipaddress.IPv4Network(SERVE_POD_CIDR)
#: Loopback addresses the pure tests listen on (outside the runtime's default CIDR).
TEST_NETWORK = "127.129.0.0/16"
VERSION = {"version": "2.14.2"}
TITLE = "<title>JupyterLab (stand-in)</title>"


def standin_args(node: str = NODE) -> list[str]:
    return [
        "--no-profile-controller",
        "--no-webhook",
        "--kubelet-runtime",
        "serve",
        "--node-name",
        node,
        "--taint",
        f"{TAINT_KEY}=serve:NoSchedule",
    ]


def placement(node: str = NODE) -> JSON:
    """Spec fields that put a pod on the ``serve`` node (and on no other stand-in node)."""
    return {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [
            {"key": TAINT_KEY, "operator": "Equal", "value": "serve", "effect": "NoSchedule"}
        ],
    }


def pod_manifest(name: str, prefix: str | None, port: int | None = None) -> JSON:
    container: JSON = {"name": "notebook", "image": "example.org/notebook:1"}
    if prefix is not None:
        container["env"] = [{"name": "JUPYTERHUB_SERVICE_PREFIX", "value": prefix}]
    if port is not None:
        container["ports"] = [{"containerPort": port, "name": "notebook-port"}]
    return restricted(
        {
            "metadata": {"name": name, "labels": {"app": "served"}},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [container],
                **placement(),
            },
        }
    )


async def get(
    session: aiohttp.ClientSession, url: str
) -> tuple[int, dict[str, str], str, str | None]:
    """status, headers, body and content type of a GET (redirects not followed)."""
    async with session.get(url, allow_redirects=False) as response:
        body = await response.text()
        return response.status, dict(response.headers), body, response.content_type


async def refuses(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(ip, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


class KeepAlive:
    """A connection that made one request and read its answer, left open (keep-alive).

    It keeps its writer: a StreamWriter that is garbage-collected closes the connection
    from this side, which would look like the server closing it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def request(cls, ip: str, port: int, path: str) -> KeepAlive:
        reader, writer = await asyncio.open_connection(ip, port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"connection: close" not in head.lower(), head
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length")
        )
        await reader.readexactly(length)
        return cls(reader, writer)

    async def closed_by_peer(self, timeout: float = 5) -> bool:
        """Whether the server ends the connection (EOF or reset) within ``timeout``."""
        try:
            return await asyncio.wait_for(self.reader.read(), timeout) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        finally:
            self.writer.close()


# ------------------------------------------------------------------------------- pure


def test_runtime_serve_selects_the_serving_worker_a_loopback_pool_and_the_servers() -> None:
    kube: Any = object()  # never called by the constructor
    kubelet = Kubelet(kube, KubeletConfig(runtime="serve", pod_cidr=SERVE_POD_CIDR))
    assert kubelet._worker_class is ServingPodWorker
    assert issubclass(ServingPodWorker, SimulatedPodWorker)
    assert isinstance(kubelet.ips, PodCidrPool)
    assert kubelet.ips.cidr == SERVE_POD_CIDR and kubelet.ips.probe_ports
    assert isinstance(kubelet.http, PodHttpServers)
    assert kubelet.node_labels()["dna-hub.test/runtime"] == "serve"
    assert kubelet.describe()["pod_cidr"] == SERVE_POD_CIDR
    # The other runtimes are as they were: no servers, no port probing on "none".
    none = Kubelet(kube, KubeletConfig(runtime="none"))
    assert none._worker_class is SimulatedPodWorker and none.http is None
    assert none.ips.cidr == DEFAULT_POD_CIDR and not none.ips.probe_ports
    assert Kubelet(kube, KubeletConfig()).http is None


@pytest.mark.parametrize("cidr", [DEFAULT_POD_CIDR, "10.0.0.0/8", "126.0.0.0/7", "128.0.0.0/16"])
def test_runtime_serve_refuses_a_cidr_outside_loopback(cidr: str) -> None:
    kube: Any = object()
    with pytest.raises(ValueError, match=rf"pod CIDR {cidr} is outside 127\.0\.0\.0/8"):
        Kubelet(kube, KubeletConfig(runtime="serve", pod_cidr=cidr))
    Kubelet(kube, KubeletConfig(runtime="none", pod_cidr=cidr))  # "none" takes any


def test_cli_picks_the_pod_cidr_per_runtime(tmp_path: Path) -> None:
    def config(*argv: str) -> KubeletConfig:
        return kubelet_config(parse_args(["--kubeconfig", "k", *argv]), tmp_path)

    serve = parse_args(["--kubeconfig", "k", "--kubelet-runtime", "serve"])
    assert (serve.runtime, serve.pod_cidr) == ("serve", None)
    assert config("--kubelet-runtime", "serve").pod_cidr == "127.128.0.0/16"
    assert config("--kubelet-runtime", "none").pod_cidr == "10.244.0.0/16"
    assert config("--runtime", "serve", "--pod-cidr", "127.5.0.0/24").pod_cidr == "127.5.0.0/24"
    assert config("--runtime", "none", "--pod-cidr", "10.1.0.0/16").pod_cidr == "10.1.0.0/16"
    assert config().runtime == "process"


def test_service_prefix_is_the_first_containers_env_with_slashes() -> None:
    def env(value: str) -> JSON:
        return {
            "env": [
                {"name": "OTHER", "value": "/x/"},
                {"name": "JUPYTERHUB_SERVICE_PREFIX", "value": value},
            ]
        }

    assert service_prefix(env("/user/alice/")) == "/user/alice/"
    assert service_prefix(env("user/bob")) == "/user/bob/"
    assert service_prefix(env("/")) == "/"
    assert service_prefix({"env": [{"name": "OTHER", "value": "/x/"}]}) == "/"
    assert service_prefix({}) == "/"


def test_port_probing_pool_skips_addresses_whose_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.129.7.2", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pool = PodCidrPool("127.129.7.0/29", probe_ports=True)  # .2 .. .6
        assert pool.allocate(port=port) == "127.129.7.3"
        assert pool.allocate(preferred="127.129.7.2", port=port) == "127.129.7.4"
        # Without a port (or without probing) .2 is handed out.
        assert PodCidrPool("127.129.7.0/29").allocate(port=port) == "127.129.7.2"
    with socket.socket() as wildcard:  # a port taken on every address
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        port = wildcard.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"where port {port} is free"):
            PodCidrPool("127.129.7.0/24", probe_ports=True).allocate(port=port)


@pytest.fixture
async def servers() -> AsyncIterator[PodHttpServers]:
    http = PodHttpServers()
    try:
        yield http
    finally:
        await http.close_all()


async def test_pod_http_servers_answer_like_jupyter_each_socket_for_its_pod(
    servers: PodHttpServers,
) -> None:
    pool = PodCidrPool(TEST_NETWORK, probe_ports=True, random_start=True)
    a, b = pool.allocate(port=8888), pool.allocate(port=8888)
    await servers.listen(a, 8888, "ns-a", "pod-a", "/user/a/")
    await servers.listen(b, 8888, "ns-b", "pod-b", "/")
    with pytest.raises(OSError, match=rf"{a}:8888 is already served for ns-a/pod-a"):
        await servers.listen(a, 8888, "ns-x", "pod-x", "/")
    async with aiohttp.ClientSession() as session:
        status, headers, body, ctype = await get(session, f"http://{a}:8888/user/a/api")
        assert (status, ctype, headers["X-Standin-Pod"]) == (200, "application/json", "ns-a/pod-a")
        assert json.loads(body) == VERSION
        status, headers, _, _ = await get(session, f"http://{a}:8888/user/a/")
        assert (status, headers["Location"], headers["X-Standin-Pod"]) == (
            302,
            "/user/a/lab",
            "ns-a/pod-a",
        )
        for path in ("/user/a/lab", "/user/a/lab/", "/user/a/lab/tree/work/x.ipynb"):
            status, headers, body, ctype = await get(session, f"http://{a}:8888{path}")
            assert (status, ctype, headers["X-Standin-Pod"]) == (200, "text/html", "ns-a/pod-a")
            assert TITLE in body
        for path in ("/user/a/labx", "/user/a/api/kernels", "/user/a", "/api", "/user/b/api"):
            status, headers, body, ctype = await get(session, f"http://{a}:8888{path}")
            assert (status, ctype, headers["X-Standin-Pod"]) == (
                404,
                "application/json",
                "ns-a/pod-a",
            ), path
            assert json.loads(body) == {"message": "Not Found"}
        async with session.post(f"http://{a}:8888/user/a/api") as response:
            assert response.status == 404
        # The other socket answers for the other pod, under its own prefix.
        status, headers, body, _ = await get(session, f"http://{b}:8888/api")
        assert (status, headers["X-Standin-Pod"]) == (200, "ns-b/pod-b")
        status, headers, _, _ = await get(session, f"http://{b}:8888/")
        assert (status, headers["Location"]) == (302, "/lab")
        status, _, _, _ = await get(session, f"http://{b}:8888/user/a/api")
        assert status == 404

    # Closing one pod's socket ends its open connections, not the other pod's.
    open_a = await KeepAlive.request(a, 8888, "/user/a/api")
    open_b, still_b = [await KeepAlive.request(b, 8888, "/api") for _ in range(2)]
    await servers.close(a, 8888)
    assert await refuses(a, 8888)
    assert await open_a.closed_by_peer()
    assert len(servers) == 1
    assert not await refuses(b, 8888)
    assert not await still_b.closed_by_peer(timeout=0.3)
    await servers.close_all()
    assert await refuses(b, 8888)
    assert await open_b.closed_by_peer()


class FakeKube:
    """The two calls a serving worker makes. Each records whether the pod's port accepted
    connections at that moment (the pod's port is 8888 here)."""

    def __init__(self, pod: JSON) -> None:
        self.pod = pod
        self.patches: list[JSON] = []
        self.accepting_at_patch: list[bool] = []
        self.deletes: list[tuple[str, bool]] = []

    async def patch(self, path: str, body: JSON, *args: Any) -> JSON:
        status = body["status"]
        self.patches.append(status)
        if status.get("podIP"):
            self.accepting_at_patch.append(not await refuses(status["podIP"], 8888))
        return self.pod

    async def delete(self, path: str, body: JSON) -> JSON:
        status = self.patches[-1]
        self.deletes.append((path, not await refuses(status["podIP"], 8888)))
        return {}

    async def first_patch(self) -> JSON:
        for _ in range(100):
            if self.patches:
                return self.patches[0]
            await asyncio.sleep(0.05)
        pytest.fail("the worker wrote no status")


def _worker(cidr: str, pod: JSON) -> tuple[Kubelet, FakeKube, ServingPodWorker]:
    kube = FakeKube(pod)
    kubelet = Kubelet(kube, KubeletConfig(runtime="serve", pod_cidr=cidr))  # type: ignore[arg-type]
    worker = ServingPodWorker(kubelet, pod)
    kubelet.workers[worker.uid] = worker
    worker.task = asyncio.create_task(worker.run())
    return kubelet, kube, worker


def _fake_pod(port: int | None = None) -> JSON:
    pod = pod_manifest("fake", "/user/fake/", port)
    pod["metadata"].update(namespace="ns", uid="uid-1")
    return pod


async def test_serving_worker_listens_before_running_and_closes_before_the_deletion() -> None:
    pod = _fake_pod()  # no containerPort: 8888
    kubelet, kube, worker = _worker(TEST_NETWORK, pod)
    try:
        status = await kube.first_patch()
        ip = status["podIP"]
        assert status["phase"] == "Running"
        assert kube.accepting_at_patch == [True]  # listening before Running was reported
        assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(TEST_NETWORK)
        assert status["containerStatuses"][0]["containerID"] == "standin-serve://uid-1/notebook"
        async with aiohttp.ClientSession() as session:
            status_code, headers, _, _ = await get(session, f"http://{ip}:8888/user/fake/api")
        assert (status_code, headers["X-Standin-Pod"]) == (200, "ns/fake")
        open_connection = await KeepAlive.request(ip, 8888, "/user/fake/api")
        assert kubelet.ips.in_use() == {ip}

        worker.update({**pod, "metadata": {**pod["metadata"], "deletionTimestamp": "now"}})
        assert worker.task is not None
        await asyncio.wait_for(worker.task, timeout=10)
        # The final delete found the port already refusing; then the IP was released.
        assert kube.deletes == [("/api/v1/namespaces/ns/pods/fake", False)]
        assert await open_connection.closed_by_peer()
        assert kubelet.ips.in_use() == set()
        assert kubelet.http is not None and len(kubelet.http) == 0
        assert not kubelet.workers
    finally:
        await kubelet.shutdown()


async def test_kubelet_shutdown_closes_every_served_socket() -> None:
    kubelet, kube, _ = _worker(TEST_NETWORK, _fake_pod())
    try:
        ip = (await kube.first_patch())["podIP"]
        open_connection = await KeepAlive.request(ip, 8888, "/user/fake/api")
    finally:
        await kubelet.shutdown()
    assert await refuses(ip, 8888)
    assert await open_connection.closed_by_peer()
    assert kube.deletes == []  # the node going away deletes no pod
    assert kubelet.ips.in_use() == set() and not kubelet.workers


async def test_serving_worker_reports_a_socket_in_use_as_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="standins.kubelet")
    with socket.socket() as taken:
        taken.bind(("127.129.8.2", 0))
        taken.listen()
        port = taken.getsockname()[1]
        kubelet, kube, worker = _worker("127.129.8.0/30", _fake_pod(port))
        # Without port probing the pool has only .2 to give (the worker starts at its
        # first await, below).
        kubelet.ips = PodCidrPool("127.129.8.0/30")
        try:
            status = await kube.first_patch()
            assert status["phase"] == "Pending" and "podIP" not in status
            waiting = status["containerStatuses"][0]["state"]["waiting"]
            assert waiting["reason"] == "ContainerCreating"
            assert waiting["message"] == f"cannot listen on 127.129.8.2:{port}: " + os.strerror(
                errno.EADDRINUSE
            )
            assert waiting["message"] in caplog.text
            assert kubelet.ips.in_use() == set()  # released at once
            assert worker.task is not None and not worker.task.done()  # until deleted
            worker.gone = True
            worker.changed.set()
            await asyncio.wait_for(worker.task, timeout=10)
            assert kube.deletes == []  # already gone
            assert len(kube.patches) == 1  # never reported Running
        finally:
            await kubelet.shutdown()


# ---------------------------------------------------------------------- control plane


@pytest.fixture(scope="module")
def serving_standins(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StandIns]:
    with running_standins(
        control_plane.admin_kubeconfig, tmp_path_factory.mktemp("standins-serve"), *standin_args()
    ) as running:
        yield running


def assert_served_running(pod: JSON) -> str:
    """The status the ``serve`` runtime writes: Running, Ready, a loopback IP; the IP."""
    status = pod["status"]
    assert pod["spec"]["nodeName"] == NODE
    assert status["phase"] == "Running"
    ip = status["podIP"]
    assert ipaddress.IPv4Address(ip) in POD_NETWORK
    assert status["podIPs"] == [{"ip": ip}]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == conditions["ContainersReady"] == "True"
    for s in status["containerStatuses"]:
        assert s["ready"] is True and "running" in s["state"], s
        assert s["containerID"].startswith(f"standin-serve://{pod['metadata']['uid']}/")
    return str(ip)


@pytest.mark.controlplane
@pytest.mark.timeout(240)
async def test_served_pods_answer_http_each_for_itself_until_deleted(
    serving_standins: StandIns, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    kube, ns = standins_kube, unique_name("serve")
    await _namespace(kube, ns)
    base = f"/api/v1/namespaces/{ns}/pods"
    try:
        await kube.create(base, pod_manifest("alice", "/user/alice/"))
        await kube.create(base, pod_manifest("bob", "/user/bob/", port=9999))
        alice, bob = [
            await eventually(functools.partial(_running, kube, f"{base}/{name}"), timeout=60)
            for name in ("alice", "bob")
        ]
        ip_a, ip_b = assert_served_running(alice), assert_served_running(bob)
        assert ip_a != ip_b
        async with aiohttp.ClientSession() as session:
            status, headers, body, ctype = await get(session, f"http://{ip_a}:8888/user/alice/api")
            assert (status, ctype) == (200, "application/json")
            assert json.loads(body) == VERSION
            assert headers["X-Standin-Pod"] == f"{ns}/alice"
            status, headers, _, _ = await get(session, f"http://{ip_a}:8888/user/alice/")
            assert (status, headers["Location"]) == (302, "/user/alice/lab")
            status, _, body, _ = await get(session, f"http://{ip_a}:8888/user/alice/lab")
            assert status == 200 and TITLE in body
            status, headers, body, _ = await get(session, f"http://{ip_a}:8888/user/alice/nope")
            assert (status, headers["X-Standin-Pod"]) == (404, f"{ns}/alice")
            assert json.loads(body) == {"message": "Not Found"}
            # bob on his own address and declared port, under his own prefix only.
            status, headers, _, _ = await get(session, f"http://{ip_b}:9999/user/bob/api")
            assert (status, headers["X-Standin-Pod"]) == (200, f"{ns}/bob")
            status, headers, _, _ = await get(session, f"http://{ip_b}:9999/user/alice/api")
            assert (status, headers["X-Standin-Pod"]) == (404, f"{ns}/bob")
            assert await refuses(ip_b, 8888)

        open_a = await KeepAlive.request(ip_a, 8888, "/user/alice/api")
        await kube.delete(f"{base}/alice", {"gracePeriodSeconds": 3600})
        await eventually(lambda: _gone(kube, f"{base}/alice"), timeout=60)
        # Closed before the node completed the deletion, so refused as soon as it is gone.
        assert await refuses(ip_a, 8888)
        assert await open_a.closed_by_peer()
        async with aiohttp.ClientSession() as session:
            status, headers, _, _ = await get(session, f"http://{ip_b}:9999/user/bob/api")
            assert (status, headers["X-Standin-Pod"]) == (200, f"{ns}/bob")
        assert serving_standins.pod_log(ns, "alice") == ""  # nothing ran
    finally:
        await kube.delete(f"/api/v1/namespaces/{ns}")


@pytest.mark.controlplane
@pytest.mark.timeout(180)
async def test_stock_kubespawner_starts_and_stops_on_the_serve_runtime(
    serving_standins: StandIns,
    standins_kube: Kube,
    unique_name: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = unique_name("kubeflow-ks")
    async with started_stock_kubespawner(standins_kube, ns, placement(), monkeypatch) as (
        spawner,
        url,
        pod,
    ):
        ip = assert_served_running(pod)
        assert url == f"http://{ip}:8888"
        assert await spawner.poll() is None
        async with aiohttp.ClientSession() as session:
            status, headers, body, _ = await get(session, f"{url}/user/erin/api")
        assert status == 200 and json.loads(body) == VERSION
        assert headers["X-Standin-Pod"] == f"{ns}/{spawner.pod_name}"
    assert await refuses(ip, 8888)  # the pod is gone: so is its socket
