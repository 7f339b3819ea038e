"""``./dev demo``: the whole stack on this machine, to use dna_hub as a data scientist would.

Starts, all on 127.0.0.1:

- the local control plane (etcd, kube-apiserver, kube-controller-manager; real CRDs);
- the stand-ins for what cannot run here (Kubeflow's profile controller, the PodDefault
  admission webhook, a kubelet that runs notebook servers as local processes);
- a real OpenID provider (panva/oidc-provider) with demo users;
- JupyterHub + configurable-http-proxy with DnaOIDCAuthenticator and DnaSpawner, using the
  hub's own least-privilege identity (helm-values/hub-rbac.yaml).

It prints the URL and the demo logins and stops everything on Ctrl-C. The notebook servers
are JupyterLab from this checkout's .venv, run as local processes by the kubelet stand-in:
not the single-user image, so Kale's panel is not in the demo. The reference data (CRDs,
Kubeflow's ClusterRoles) comes from ../shared, or is downloaded once and verified
(tests/support/reference.py); offline without it, the demo says what is missing and stops.

``./dev demo --chart`` deploys the hub as a platform engineer does instead: the z2jh chart
rendered by real Helm with helm-values/values.yaml, applied, its hub (on the hub image's
Python packages) and proxy run from the applied objects (tests/support/chart_hub.py).

``./dev demo --chart-pods``: the same chart, its hub and proxy run as pods of its Deployments
by the container kubelet stand-in (the hub image from images/hub/Dockerfile, notebooks from
the single-user image), reached through the ``proxy-public`` load-balancer stand-in
(tests/support/chart_hub.py ``deploy_chart_pods``). Needs podman (root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.support import reference
from tests.support.chart_hub import deploy_chart_hub, deploy_chart_pods
from tests.support.controlplane import start_control_plane
from tests.support.hub_image_env import hub_image_env
from tests.support.oidc_fixtures import (
    ADMIN_GROUPS,
    ALLOWED_GROUPS,
    DEMO_ACCOUNTS,
    OIDCProvider,
    _rsa_jwk,
    install_node_modules,
    start_hub,
)
from tests.support.standins_fixtures import start_standins

#: What the demo's notebook servers are, said plainly in the banner.
NOTEBOOK_RUNS = (
    "JupyterLab from this checkout's .venv (jupyterhub-singleuser), run as a local process by "
    "the kubelet stand-in — not the single-user image, so Kale's panel is not in it"
)

#: DnaSpawner on the local control plane: the notebook command runs on this machine
#: through the kubelet stand-in, so it is the venv's jupyterhub-singleuser.
DNA_SPAWNER_CONFIG = """
# --- DnaSpawner on the local control plane (tests/support/demo.py) ---
c.JupyterHub.spawner_class = "dna"
c.DnaSpawner.hub_namespace = "jupyterhub"
c.DnaSpawner.cmd = ["jupyterhub-singleuser"]
c.DnaSpawner.default_url = "/lab"
c.DnaSpawner.image = "dna-hub/singleuser:local"
c.DnaSpawner.start_timeout = 180
c.DnaSpawner.http_timeout = 120
c.DnaSpawner.profile_ready_timeout = 90
# the admin service token may read /hub/metrics (provisioning metrics)
c.JupyterHub.load_roles[0]["scopes"].append("read:metrics")
"""


def demo_logins(
    accounts: dict[str, dict[str, Any]] = DEMO_ACCOUNTS,
    allowed_groups: list[str] = ALLOWED_GROUPS,
    admin_groups: list[str] = ADMIN_GROUPS,
) -> list[str]:
    """One line per demo login: its email and what the hub does with it, and why."""
    lines = []
    for login, account in accounts.items():
        claims = account["claims"]
        groups = set(claims.get("groups", []))
        if not claims.get("email_verified"):
            verdict = "refused: the provider has not verified the email address"
        elif not groups & set(allowed_groups):
            verdict = f"refused: in none of the allowed groups ({', '.join(allowed_groups)})"
        elif groups & set(admin_groups):
            verdict = f"hub admin (group {', '.join(sorted(groups & set(admin_groups)))})"
        else:
            verdict = "data scientist"
        lines.append(f"{login:<8} {claims.get('email', ''):<24} {verdict}")
    lines.append(f"{'any other login':<33} refused: in none of the allowed groups")
    return lines


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(port: int, chart: bool = False, chart_pods: bool = False) -> int:
    try:
        # Before anything starts: a fresh clone has no ../shared (download, or one message).
        reference_dir = await asyncio.to_thread(reference.ensure)
    except reference.ReferenceDataError as e:
        print(f"./dev demo cannot start.\n{e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    print(f"starting the control plane (reference data: {reference_dir})…", flush=True)
    control_plane = await start_control_plane()
    work = Path(tempfile.mkdtemp(prefix="dna-hub-demo-"))
    standins = provider = hub = admin = None
    pods: Any = None  # (network, container stand-ins, chart) of --chart-pods
    try:
        os.environ["KUBECONFIG"] = str(control_plane.hub_kubeconfig)
        print("starting the stand-ins (profile controller, webhook, kubelet)…", flush=True)
        standins = await asyncio.to_thread(
            start_standins, control_plane.admin_kubeconfig, work / "standins"
        )
        print("starting the OpenID provider…", flush=True)
        node_modules = await asyncio.to_thread(install_node_modules)
        provider = OIDCProvider(node_modules, work / "provider", keys=[_rsa_jwk("demo-key")])
        await asyncio.to_thread(provider.start)
        notebooks = NOTEBOOK_RUNS
        if chart_pods:
            from tests.support import podman_fixtures as pf

            print("starting the pod network and the container kubelet…", flush=True)
            network = await asyncio.to_thread(pf.create_pod_network)
            pods = [network, None, None]
            pods[1] = await asyncio.to_thread(
                pf.start_container_standins,
                control_plane.admin_kubeconfig,
                work / "container-standins",
                network,
            )
            print("deploying the z2jh chart as pods (helm render, apply, Deployments)…", flush=True)
            admin = control_plane.admin_client()
            hub = pods[2] = await deploy_chart_pods(
                admin, provider, node_modules, network.gateway, pf.POD_ON_CONTAINERS
            )
            print(hub.rendered.summary())
            print(hub.applied.report())
            notebooks = "the single-user image as a container (podman), like the hub and proxy"
        elif chart:
            print("deploying the z2jh chart (helm render, apply, hub and proxy)…", flush=True)
            admin = control_plane.admin_client()
            hub_env = await asyncio.to_thread(hub_image_env)
            hub = await deploy_chart_hub(
                control_plane, admin, provider, node_modules, hub_env, work / "chart"
            )
            print(hub.rendered.summary())
            print(hub.applied.report())
        else:
            print("starting JupyterHub…", flush=True)
            hub = await start_hub(
                provider, node_modules, work / "hub", extra_config=DNA_SPAWNER_CONFIG, port=port
            )
        logins = "\n".join(f"    {line}" for line in demo_logins())
        print(
            "\n"
            f"  dna_hub demo is up:   {hub.url}/\n"
            "  log in as (any password):\n"
            f"{logins}\n"
            f"  notebooks run:        {notebooks}\n"
            f"  kubectl as admin:     export KUBECONFIG={control_plane.admin_kubeconfig}\n"
            f"  logs:                 {work}\n"
            "  stop:                 Ctrl-C\n",
            flush=True,
        )
        await stop.wait()
    finally:
        print("\nstopping…", flush=True)
        if pods is not None:
            from tests.support import podman_fixtures as pf

            network, container_standins, chart_pods_hub = pods
            if chart_pods_hub is not None:
                with contextlib.suppress(Exception):
                    await chart_pods_hub.stop()
            if container_standins is not None:
                container_standins.stop(timeout=120)
            await asyncio.to_thread(pf.remove_network_pods, network)
            await asyncio.to_thread(pf.remove_pod_network, network.name)
        elif hub is not None:
            hub.stop()
        if admin is not None:
            await admin.close()
        if provider is not None:
            provider.stop()
        if standins is not None:
            standins.stop()
        with contextlib.suppress(Exception):
            await control_plane.aclose()
        print("stopped.", flush=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="./dev demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="hub port (default 8000)")
    parser.add_argument(
        "--chart",
        action="store_true",
        help="deploy with the z2jh chart (real Helm, hub image versions) instead",
    )
    parser.add_argument(
        "--chart-pods",
        action="store_true",
        help="the chart with its hub and proxy as pods of the container kubelet (podman)",
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(run(_port(args.port), chart=args.chart, chart_pods=args.chart_pods)))


if __name__ == "__main__":
    main()
