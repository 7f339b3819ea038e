"""The cluster-DNS and service-environment stand-ins behave as a cluster does for a pod.

Names are resolved by the C library (``getent hosts``) in a private mount namespace with the
resolv.conf a kubelet writes, against devstack/cluster_dns.py.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from pathlib import Path

import dns.asyncresolver
import dns.resolver
import pytest

from devstack.cluster_dns import ClusterDNS, resolv_conf, service_of
from devstack.host_pods import service_environment


def test_service_names() -> None:
    assert service_of("hub.jupyterhub.svc.cluster.local.") == ("hub", "jupyterhub")
    assert service_of("HUB.jupyterhub.svc.cluster.local") == ("hub", "jupyterhub")
    assert service_of("hub.jupyterhub.svc") is None
    assert service_of("hub") is None
    assert service_of("a.b.c.svc.cluster.local") is None


def test_resolv_conf_is_the_kubelets() -> None:
    assert resolv_conf("kubeflow-alice", "10.96.0.10").splitlines() == [
        "search kubeflow-alice.svc.cluster.local svc.cluster.local cluster.local",
        "nameserver 10.96.0.10",
        "options ndots:5",
    ]


def test_service_environment_is_the_kubelets() -> None:
    services = [
        {
            "metadata": {"name": "proxy-api"},
            "spec": {"clusterIP": "10.0.0.9", "ports": [{"port": 8001, "protocol": "TCP"}]},
        },
        {
            "metadata": {"name": "hub"},
            "spec": {"clusterIP": "10.0.0.8", "ports": [{"name": "hub", "port": 8081}]},
        },
        {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": []}},
    ]
    env = service_environment(services, {"hub": "127.77.0.1"})
    assert env["PROXY_API_SERVICE_HOST"] == "10.0.0.9"
    assert env["PROXY_API_SERVICE_PORT"] == "8001"
    assert env["PROXY_API_PORT"] == "tcp://10.0.0.9:8001"
    assert env["PROXY_API_PORT_8001_TCP_ADDR"] == "10.0.0.9"
    assert env["HUB_SERVICE_HOST"] == "127.77.0.1"
    assert env["HUB_SERVICE_PORT_HUB"] == "8081"
    assert not any(k.startswith("HEADLESS_") for k in env)


@pytest.fixture
async def cluster_dns() -> ClusterDNS:
    server = ClusterDNS(f"127.77.{secrets.randbelow(250) + 2}.53")
    server.add({("hub", "jupyterhub"): "127.77.0.1"})
    try:
        await server.start()
    except PermissionError:
        pytest.fail("the cluster DNS stand-in needs port 53 (root)", pytrace=False)
    yield server
    server.close()


async def test_the_server_answers_service_names_and_nxdomain_otherwise(
    cluster_dns: ClusterDNS,
) -> None:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [cluster_dns.address]
    answer = await resolver.resolve("hub.jupyterhub.svc.cluster.local", "A", lifetime=5)
    assert [r.address for r in answer] == ["127.77.0.1"]
    for name in (
        "proxy.jupyterhub.svc.cluster.local",
        "hub.other.svc.cluster.local",
        "example.com",
    ):
        with pytest.raises(dns.resolver.NXDOMAIN):
            await resolver.resolve(name, "A", lifetime=5)


def getent(tmp_path: Path, namespace: str, nameserver: str, name: str) -> str | None:
    conf = tmp_path / f"resolv-{namespace}.conf"
    conf.write_text(resolv_conf(namespace, nameserver))
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    script = (
        'mount --make-rprivate / && mount --bind "$1" /etc/resolv.conf && '
        'mount --bind "$2" /etc/hosts && exec getent ahostsv4 "$3"'
    )
    result = subprocess.run(
        ["unshare", "-m", "--", "sh", "-c", script, "sh", str(conf), str(hosts), name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout.split()[0] if result.returncode == 0 else None


@pytest.mark.parametrize(
    ("namespace", "name", "expected"),
    [
        ("jupyterhub", "hub", "127.77.0.1"),
        ("jupyterhub", "hub.jupyterhub", "127.77.0.1"),
        ("kubeflow-alice", "hub", None),  # z2jh's hub_connect_url, from a notebook
        ("kubeflow-alice", "hub.jupyterhub", "127.77.0.1"),
        ("kubeflow-alice", "hub.jupyterhub.svc", "127.77.0.1"),  # what DnaSpawner gives
        ("kubeflow-alice", "hub.jupyterhub.svc.cluster.local", "127.77.0.1"),
    ],
)
async def test_a_pods_resolver_finds_services_as_on_a_cluster(
    cluster_dns: ClusterDNS, tmp_path: Path, namespace: str, name: str, expected: str | None
) -> None:
    found = await asyncio.to_thread(getent, tmp_path, namespace, cluster_dns.address, name)
    assert found == expected, cluster_dns.queries
