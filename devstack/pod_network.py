"""pytest plugin: a podman bridge network and a kubelet stand-in that runs pods in it.

* ``pod_network`` (session): :class:`PodNetwork` — a podman bridge network made for this
  session (unique name, labelled), its subnet and gateway. The gateway is the host as
  seen from a pod: bind what pods must reach there (KFP stand-in, the hub's API). Removed
  with every container left in it when the session ends.
* ``container_standins`` (session): a second stand-in process with only the kubelet, in
  ``--runtime podman`` on node ``standin-podman``, tainted
  ``dna-hub.test/runtime=podman:NoSchedule`` so that only pods that ask for it land there:
  ``POD_ON_CONTAINERS`` is the nodeSelector + toleration to add to a pod spec (the
  session's ``standins`` kubelet keeps running everything else as host processes).
  Its pods get cluster networking (the cluster DNS stand-in, service variables, the
  ``kubernetes`` Service's clusterIP; devstack/standins/kubelet.py ``ClusterNetworking``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devstack import images, paths

if TYPE_CHECKING:
    from devstack.standins_process import StandIns

CONTAINER_NODE = "standin-podman"
#: How often the container kubelet rotates projected ServiceAccount tokens (at most).
TOKEN_REFRESH_SECONDS = 15.0
RUNTIME_LABEL = "dna-hub.test/runtime"

#: Pod spec fields that send a pod to the container kubelet.
POD_ON_CONTAINERS = {
    "nodeSelector": {RUNTIME_LABEL: "podman"},
    "tolerations": [
        {"key": RUNTIME_LABEL, "operator": "Equal", "value": "podman", "effect": "NoSchedule"}
    ],
}


@dataclass(frozen=True)
class PodNetwork:
    name: str
    subnet: str
    gateway: str


def _podman_json(*args: str) -> object:
    return json.loads(images.podman(*args).stdout)


def create_pod_network(label: str = "dna-hub.test/session=1") -> PodNetwork:
    """A new podman bridge network (unique name, labelled ``label``), its bridge up."""
    missing = images.engine_missing()
    if missing:
        paths.unavailable(f"the container engine is not installed ({', '.join(missing)})")
    name = f"dna-hub-{os.getpid()}-{secrets.token_hex(3)}"
    images.podman("network", "create", "--label", label, name)
    try:
        # The bridge (and the gateway address on the host) appears with the first
        # container: bring it up now so that host services can bind the gateway.
        debian, _ = images.ensure_debian_base()
        images.podman("run", "--rm", "--network", name, debian, "true", timeout=120)
        info = _podman_json("network", "inspect", name)
        assert isinstance(info, list)
        subnet = info[0]["subnets"][0]
        return PodNetwork(name, subnet["subnet"], subnet["gateway"])
    except BaseException:
        remove_pod_network(name)
        raise


def remove_pod_network(name: str) -> None:
    """Remove the network ``name`` with every container (and podman pod) left in it."""
    with contextlib.suppress(Exception):
        remove_network_pods(name)
    with contextlib.suppress(Exception):
        images.podman("network", "rm", "--force", name, timeout=120, check=False)


def remove_network_pods(network: str) -> None:
    """Remove the podman pods the container kubelet made in ``network`` (a crash's leftovers)."""
    ids = images.podman(
        "pod", "ps", "--quiet", "--filter", f"label=dna-hub.test/network={network}",
        check=False,
    ).stdout.split()  # fmt: skip
    if ids:
        images.podman("pod", "rm", "--force", "--time", "0", *ids, timeout=120, check=False)


def start_container_kubelet(
    admin_kubeconfig: Path, state_dir: Path, network: PodNetwork
) -> StandIns:
    """The podman kubelet (node ``standin-podman``, tainted) in ``network``, with cluster
    networking; raises RuntimeError."""
    from devstack.standins_process import start_standins

    return start_standins(
        admin_kubeconfig,
        state_dir,
        "--no-profile-controller",
        "--no-webhook",
        "--runtime", "podman",
        "--node-name", CONTAINER_NODE,
        "--network", network.name,
        "--gateway", network.gateway,
        "--taint", f"{RUNTIME_LABEL}=podman:NoSchedule",
        # Rotation must be seen in a test: at most every TOKEN_REFRESH_SECONDS.
        "--token-refresh-seconds", str(TOKEN_REFRESH_SECONDS),
        # pods resolve Service names and reach the API server as on a cluster
        "--cluster-networking",
        timeout=600,  # the first run builds the pod sandbox image
    )  # fmt: skip
