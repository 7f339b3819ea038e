"""Notebook servers as containers of the single-user image: shared by `./dev demo` and tests.

:class:`NotebookContainers` brings up, next to a running control plane and the usual
stand-ins (profile controller, PodDefault webhook):

- the single-user image (``images/singleuser/Dockerfile``), built once and cached by
  :func:`devstack.images.ensure_image`;
- a podman bridge network of its own (:func:`devstack.pod_network.create_pod_network`);
- the container kubelet stand-in on node ``standin-podman`` in that network
  (:func:`devstack.pod_network.start_container_kubelet`);
- the Kubeflow Pipelines API stand-in (:mod:`devstack.kfp_standin`) on the network's
  gateway, authorizing with TokenReview + SubjectAccessReview as Kubeflow Pipelines does.

:func:`container_spawner_config` is the DnaSpawner configuration that sends notebook pods
there (nodeSelector + toleration, the image, ``kfp_endpoint``, a restricted security
context, a home volume). Its ``modify_pod_hook`` is a stand-in for the storage
administrator: there is no provisioner here and the hub may not create PVCs (least
privilege), so it creates the user's home claim as the cluster admin, just before the pod.
The claim is named by ``pvc_name_template`` (``home-{username}``: KubeSpawner's safe slug,
valid for every hub username) and the volume and the hook both use that name
(``{pvc_name}``, ``spawner.pvc_name``).
The hub's API must listen on the gateway (``hub_settings``) so the notebook can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from devstack import images
from devstack.controlplane import ControlPlane
from devstack.kfp_auth import apply_pipelines_roles, kfp_reviewer_auth
from devstack.kfp_standin import KfpStandIn
from devstack.pod_network import (
    POD_ON_CONTAINERS,
    PodNetwork,
    create_pod_network,
    remove_pod_network,
    start_container_kubelet,
)
from devstack.standins_process import StandIns

T = TypeVar("T")

CONTAINER_SPAWNER_CONFIG = """
# --- the notebook as a container (devstack/notebook_containers.py) ---
import json as _json
c.DnaSpawner.image = {image!r}
c.DnaSpawner.node_selector = _json.loads({node_selector!r})
c.DnaSpawner.tolerations = _json.loads({tolerations!r})
c.DnaSpawner.kfp_endpoint = {kfp!r}
c.DnaSpawner.container_security_context = {{
    "runAsNonRoot": True, "allowPrivilegeEscalation": False,
    "capabilities": {{"drop": ["ALL"]}}, "seccompProfile": {{"type": "RuntimeDefault"}},
    "readOnlyRootFilesystem": True,
}}
# The home claim's name: KubeSpawner's safe slug of the user ({{username}}), a valid name
# for every hub username ("carol@example.com" too); the volume and the hook use {{pvc_name}}.
c.DnaSpawner.pvc_name_template = "home-{{username}}"
c.DnaSpawner.volumes = [
    {{"name": "home", "persistentVolumeClaim": {{"claimName": "{{pvc_name}}"}}}},
    {{"name": "tmp", "emptyDir": {{}}}},
]
c.DnaSpawner.volume_mounts = [
    {{"name": "home", "mountPath": "/home/jovyan"}},
    {{"name": "tmp", "mountPath": "/tmp"}},
]
c.JupyterHub.hub_connect_ip = {gateway!r}


async def _home_claim(spawner, pod):
    # Stand-in for the storage admin (no provisioner, the hub may not create PVCs).
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.client.exceptions import ApiException

    api = await config.new_client_from_config(config_file={admin_kubeconfig!r})
    try:
        claim = client.V1PersistentVolumeClaim(
            # the name the pod's volume refers to (never the raw hub username)
            metadata=client.V1ObjectMeta(name=spawner.pvc_name),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                resources=client.V1ResourceRequirements(requests={{"storage": "1Gi"}}),
            ),
        )
        try:
            await client.CoreV1Api(api).create_namespaced_persistent_volume_claim(
                spawner.namespace, claim, _request_timeout=30
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
    finally:
        await api.close()
    return pod


c.DnaSpawner.modify_pod_hook = _home_claim
"""


def container_spawner_config(
    image: str, network: PodNetwork, kfp_url: str, admin_kubeconfig: Path
) -> str:
    """jupyterhub_config.py lines: DnaSpawner's notebooks as containers of ``image``."""
    return CONTAINER_SPAWNER_CONFIG.format(
        image=image,
        node_selector=json.dumps(POD_ON_CONTAINERS["nodeSelector"]),
        tolerations=json.dumps(POD_ON_CONTAINERS["tolerations"]),
        kfp=kfp_url,
        gateway=network.gateway,
        admin_kubeconfig=str(admin_kubeconfig),
    )


async def in_thread(
    record: Callable[[T], object], func: Callable[..., T], *args: Any, waiting: str = ""
) -> T:
    """``record(func(*args))`` with ``func`` in a thread, recorded even if the caller is cancelled.

    A cancelled ``asyncio.to_thread`` leaves its thread running: what it starts (a process, a
    network) would be left behind. Here cancellation waits for the thread, records its
    result, so that the caller's clean-up sees and removes it, then propagates. ``waiting``
    is printed if the thread is still running when the caller is cancelled.
    """
    task = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        value = await asyncio.shield(task)
    except asyncio.CancelledError:
        if waiting and not task.done():
            print(waiting, flush=True)
        with contextlib.suppress(Exception):
            record(await task)
        raise
    record(value)
    return value


@dataclass
class NotebookContainers:
    """The running parts; :meth:`aclose` stops them and removes every container and the network."""

    control_plane: ControlPlane
    image: str
    network: PodNetwork | None = None
    kubelet: StandIns | None = None
    kfp: KfpStandIn | None = None
    _kfp_started: bool = field(default=False, repr=False)

    @classmethod
    async def start(
        cls, control_plane: ControlPlane, work: Path, *, image: str | None = None
    ) -> NotebookContainers:
        """Everything, in order; on any failure (or cancellation) what started is removed.

        Raises :class:`images.ImageBuildError` if the image cannot be built and
        ``RuntimeError`` if the container kubelet does not start.
        """
        if image is None:
            built = await in_thread(
                lambda _: None,
                images.ensure_image,
                "singleuser",
                waiting="stopping once the image build in progress has finished (it is kept)…",
            )
            image = built.tag
        running = cls(control_plane, image)
        try:
            await running._step("network", create_pod_network, "dna-hub.test/demo=1")
            assert running.network is not None
            await running._step(
                "kubelet",
                start_container_kubelet,
                control_plane.admin_kubeconfig,
                work / "container-kubelet",
                running.network,
            )
            await apply_pipelines_roles(control_plane)
            auth = await kfp_reviewer_auth(control_plane)
            running.kfp = KfpStandIn(auth=auth, host=running.network.gateway)
            running.kfp.__enter__()
            running._kfp_started = True
        except BaseException:
            await running.aclose()
            raise
        return running

    async def _step(self, attr: str, func: Callable[..., Any], *args: Any) -> None:
        await in_thread(lambda value: setattr(self, attr, value), func, *args)

    @property
    def hub_settings(self) -> dict[str, str]:
        """JupyterHub settings: the hub's API on the gateway, where the notebook reaches it."""
        assert self.network is not None
        return {"hub_ip": self.network.gateway}

    def spawner_config(self) -> str:
        assert self.network is not None and self.kfp is not None
        return container_spawner_config(
            self.image, self.network, self.kfp.url, self.control_plane.admin_kubeconfig
        )

    async def aclose(self) -> None:
        """Stop the KFP stand-in and the kubelet (it removes its pods), then the network."""
        if self.kfp is not None and self._kfp_started:
            with contextlib.suppress(Exception):
                self.kfp.__exit__(None, None, None)
            self._kfp_started = False
        if self.kubelet is not None:
            await asyncio.to_thread(self.kubelet.stop, 120)
            self.kubelet = None
        if self.network is not None:
            await asyncio.to_thread(remove_pod_network, self.network.name)
            self.network = None
