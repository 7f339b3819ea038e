"""``./dev demo``: the whole stack on this machine, to use dna_hub as a data scientist would.

Starts, all on 127.0.0.1:

- the local control plane (etcd, kube-apiserver, kube-controller-manager; real CRDs);
- the stand-ins for what cannot run here (Kubeflow's profile controller, the PodDefault
  admission webhook, a kubelet that runs notebook servers as local processes);
- a real OpenID provider (panva/oidc-provider) with demo users;
- JupyterHub + configurable-http-proxy with DnaOIDCAuthenticator and DnaSpawner, using the
  hub's own least-privilege identity (helm-values/hub-rbac.yaml).

It prints the URL and the demo logins and stops everything on Ctrl-C.

``./dev demo --chart`` deploys the hub as a platform engineer does instead: the z2jh chart
rendered by real Helm with helm-values/values.yaml, applied, its hub (on the hub image's
Python packages) and proxy run from the applied objects (tests/support/chart_hub.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import tempfile
from pathlib import Path

from tests.support.chart_hub import deploy_chart_hub
from tests.support.controlplane import start_control_plane
from tests.support.hub_image_env import hub_image_env
from tests.support.oidc_fixtures import (
    DEMO_ACCOUNTS,
    OIDCProvider,
    _rsa_jwk,
    install_node_modules,
    start_hub,
)
from tests.support.standins_fixtures import start_standins

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


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(port: int, chart: bool = False) -> None:
    work = Path(tempfile.mkdtemp(prefix="dna-hub-demo-"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    print("starting the control plane…", flush=True)
    control_plane = await start_control_plane()
    standins = provider = hub = admin = None
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
        if chart:
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
        users = ", ".join(
            f"{name} ({account['claims']['email']})" for name, account in DEMO_ACCOUNTS.items()
        )
        print(
            "\n"
            f"  dna_hub demo is up:   {hub.url}/\n"
            f"  log in as:            alice (any password) — or {users}\n"
            "                        mallory is outside the allowed groups, eve's email is"
            " unverified: both are refused\n"
            f"  kubectl as admin:     export KUBECONFIG={control_plane.admin_kubeconfig}\n"
            f"  logs:                 {work}\n"
            "  stop:                 Ctrl-C\n",
            flush=True,
        )
        await stop.wait()
    finally:
        print("\nstopping…", flush=True)
        if hub is not None:
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="./dev demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="hub port (default 8000)")
    parser.add_argument(
        "--chart",
        action="store_true",
        help="deploy with the z2jh chart (real Helm, hub image versions) instead",
    )
    args = parser.parse_args()
    asyncio.run(run(_port(args.port), chart=args.chart))


if __name__ == "__main__":
    main()
