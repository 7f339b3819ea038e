"""pytest plugin: the fixtures of :mod:`devstack.pod_network`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.controlplane import ControlPlane
from devstack.pod_network import (
    PodNetwork,
    create_pod_network,
    remove_network_pods,
    remove_pod_network,
    start_container_kubelet,
)
from devstack.standins_process import StandIns


@pytest.fixture(scope="session")
def pod_network() -> Iterator[PodNetwork]:
    network = create_pod_network()
    try:
        yield network
    finally:
        remove_pod_network(network.name)


@pytest.fixture(scope="session")
def container_standins(
    control_plane: ControlPlane,
    standins: StandIns,
    pod_network: PodNetwork,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StandIns]:
    """The podman kubelet (node ``standin-podman``); ``standins`` runs everything else."""
    state_dir = tmp_path_factory.mktemp("container-standins")
    try:
        running = start_container_kubelet(control_plane.admin_kubeconfig, state_dir, pod_network)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield running
    finally:
        running.stop(timeout=120)
        remove_network_pods(pod_network.name)  # whatever a crashed stand-in left behind
