"""``./dev demo``: the whole stack on this machine, to use dna_hub as a data scientist would.

Starts, on 127.0.0.1 and a podman bridge network of its own:

- the local control plane (etcd, kube-apiserver, kube-controller-manager; real CRDs);
- the stand-ins for what cannot run here (Kubeflow's profile controller, the PodDefault
  admission webhook, a kubelet that runs pods as local processes, and a second kubelet that
  runs the notebook pods as podman containers in a network of the demo's own);
- the single-user image (images/singleuser/Dockerfile: JupyterLab, Kale, kfp), built on
  first use and cached in podman's storage (devstack/images.py);
- the Kubeflow Pipelines API stand-in (devstack/kfp_standin.py), which authorizes each
  call with TokenReview + SubjectAccessReview, so Kale's panel finds KFP reachable;
- a real OpenID provider (panva/oidc-provider) with demo users;
- JupyterHub + configurable-http-proxy with DnaOIDCAuthenticator and DnaSpawner, using the
  hub's own least-privilege identity (helm-values/hub-rbac.yaml).

It prints the URL and the demo logins and stops everything on Ctrl-C (the notebook
containers, their podman pods and network included). A data scientist's notebook server is
a container of the single-user image, so JupyterLab shows Kale's panel; what is shared with
tests/e2e/test_e2e_containers.py is in devstack/notebook_containers.py (including its
stand-in for the storage admin, who creates the home claim). The reference data (CRDs,
Kubeflow's ClusterRoles) comes from ../shared, or is downloaded once and verified
(devstack/reference.py); offline without it, the demo says what is missing and stops.

``./dev demo --chart`` deploys the hub as a platform engineer does instead: the z2jh chart
rendered by real Helm with helm-values/values.yaml, applied, its hub (on the hub image's
Python packages) and proxy run from the applied objects (devstack/chart_hub.py). Its
notebook servers are JupyterLab from this checkout's .venv as local processes (no Kale).

``./dev demo --chart-pods``: the same chart, its hub and proxy run as pods of its Deployments
by the container kubelet stand-in (the hub image from images/hub/Dockerfile, notebooks from
the single-user image), reached through the ``proxy-public`` load-balancer stand-in
(devstack/chart_hub.py ``deploy_chart_pods``). Needs podman (root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import images, reference
from devstack.chart_hub import deploy_chart_hub, deploy_chart_pods
from devstack.controlplane import ControlPlane, start_control_plane
from devstack.hub_image_env import hub_image_env
from devstack.notebook_containers import NotebookContainers, in_thread
from devstack.oidc_stack import (
    ADMIN_GROUPS,
    ALLOWED_GROUPS,
    DEMO_ACCOUNTS,
    OIDCProvider,
    _rsa_jwk,
    install_node_modules,
    start_hub,
)
from devstack.standins_process import StandIns, start_standins

#: What the demo's notebook servers are, said plainly in the banner.
NOTEBOOK_RUNS = (
    "podman containers of the single-user image {image} (JupyterLab with Kale's panel), run by "
    "the container kubelet stand-in; Kubeflow Pipelines is the KFP API stand-in at {kfp}"
)
#: ... and with --chart, where the chart's hub spawns onto the process kubelet.
NOTEBOOK_RUNS_CHART = (
    "JupyterLab from this checkout's .venv (jupyterhub-singleuser), run as a local process by "
    "the kubelet stand-in — not the single-user image, so Kale's panel is not in it"
)

#: DnaSpawner on the local control plane. The demo adds the container configuration of
#: devstack/notebook_containers.py (image, node, KFP endpoint); without it (tests that
#: use the process kubelet) the command runs on this machine: the venv's jupyterhub-singleuser.
DNA_SPAWNER_CONFIG = """
# --- DnaSpawner on the local control plane (devstack/demo.py) ---
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


#: The demo's team: group ``fraud`` edits the team profile kubeflow-team-fraud, group
#: ``fraud-viewers`` views it; alice is in the first, bob in the second.
DEMO_TEAM_GROUP = "fraud"
DEMO_TEAM_SETTING: dict[str, Any] = {"role": "edit", "view_groups": ["fraud-viewers"]}
DEMO_TEAM_MEMBERS = {"alice": "fraud", "bob": "fraud-viewers"}
DEMO_TEAMS_CONFIG = f"""
# --- the demo's team (devstack/demo.py) ---
from dna_hub.team_login import sync_teams_at_login

c.JupyterHub.allow_named_servers = True  # team notebooks are named servers
c.Authenticator.post_auth_hook = sync_teams_at_login  # contributors follow groups at login
c.DnaSpawner.team_profiles = {{{DEMO_TEAM_GROUP!r}: {DEMO_TEAM_SETTING!r}}}
# The demo serves every server from one origin (http://127.0.0.1:8000): a deployment sets
# JupyterHub.subdomain_host instead (docs/deploy.md, team isolation); here the risk is
# accepted explicitly, as dna_hub requires.
c.DnaSpawner.team_shared_origin_risk_accepted = True
"""


def demo_accounts() -> dict[str, dict[str, Any]]:
    """DEMO_ACCOUNTS with the team's members in its groups (a copy: DEMO_ACCOUNTS is shared)."""
    accounts = copy.deepcopy(DEMO_ACCOUNTS)
    for login, group in DEMO_TEAM_MEMBERS.items():
        accounts[login]["claims"]["groups"].append(group)
    return accounts


def demo_teams(accounts: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """One line per demo login in a team: its role there and what it may do, by the policy
    the hub applies to the groups of its token (dna_hub/policy/teams.py)."""
    # the hub's own policy, so the banner cannot say other than the hub does (the only
    # dna_hub import of devstack: the platform does not otherwise depend on the package)
    from dna_hub.policy.teams import parse_teams, plan_for

    accounts = demo_accounts() if accounts is None else accounts
    teams = parse_teams({DEMO_TEAM_GROUP: DEMO_TEAM_SETTING})
    lines = []
    for login, account in accounts.items():
        for team in plan_for(account["claims"].get("groups", []), teams, None).teams:
            what = (
                f"runs notebooks in it: named server, e.g. /hub/spawn/{login}/{team.group}"
                if team.role == "edit"
                else "sees it in Kubeflow (a viewer runs no notebook there)"
            )
            lines.append(f"{login:<8} {team.role:<5} team {team.group} ({team.namespace}): {what}")
    return lines


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


@dataclass
class Demo:
    """The running demo's parts (each None until started), stopped in reverse by :meth:`stop`."""

    control_plane: ControlPlane | None = None
    work: Path | None = None
    standins: StandIns | None = None
    containers: NotebookContainers | None = None
    provider: OIDCProvider | None = None
    hub: Any = None  # HubProcess, or the chart's hub
    admin: Any = None
    notebooks: str = ""
    #: --chart-pods: the pod network, the container kubelet, the chart served by its pods
    pod_network: Any = None
    pod_standins: StandIns | None = None
    chart_pods: Any = None

    async def stop(self) -> None:
        from devstack import pod_network as pf

        if self.chart_pods is not None:
            with contextlib.suppress(Exception):
                await self.chart_pods.stop()
        elif self.hub is not None:
            await asyncio.to_thread(self.hub.stop)
        if self.admin is not None:
            with contextlib.suppress(Exception):
                await self.admin.close()
        if self.provider is not None:
            await asyncio.to_thread(self.provider.stop)
        if self.containers is not None:
            # The container kubelet removes its podman pods; then the network goes.
            await self.containers.aclose()
        if self.pod_standins is not None:
            await asyncio.to_thread(lambda: self.pod_standins.stop(timeout=120))
        if self.pod_network is not None:
            await asyncio.to_thread(pf.remove_pod_network, self.pod_network.name)
        if self.standins is not None:
            await asyncio.to_thread(self.standins.stop)
        if self.control_plane is not None:
            with contextlib.suppress(Exception):
                await self.control_plane.aclose()


async def start(demo: Demo, port: int, chart: bool, chart_pods: bool, reference_dir: Path) -> None:
    """Start everything ``./dev demo`` runs, recording each part in ``demo`` as it starts."""
    print(f"starting the control plane (reference data: {reference_dir})…", flush=True)
    demo.control_plane = control_plane = await start_control_plane()
    demo.work = work = Path(tempfile.mkdtemp(prefix="dna-hub-demo-"))
    os.environ["KUBECONFIG"] = str(control_plane.hub_kubeconfig)
    print("starting the stand-ins (profile controller, webhook, kubelet)…", flush=True)
    await in_thread(
        lambda running: setattr(demo, "standins", running),
        start_standins,
        control_plane.admin_kubeconfig,
        work / "standins",
    )
    if not chart and not chart_pods:
        print(
            "starting the notebook containers' side: the single-user image (the first run "
            f"builds it, a few minutes, log in {images.IMAGES_DIR}; then cached), a podman "
            "network, the container kubelet, the KFP API stand-in…",
            flush=True,
        )
        demo.containers = await NotebookContainers.start(control_plane, work)
    print("starting the OpenID provider…", flush=True)
    node_modules = await asyncio.to_thread(install_node_modules)
    demo.provider = provider = OIDCProvider(
        node_modules, work / "provider", keys=[_rsa_jwk("demo-key")], accounts=demo_accounts()
    )
    await in_thread(lambda _: None, provider.start)  # demo.stop() stops what it started
    if chart_pods:
        from devstack import pod_network as pf

        print("starting the pod network and the container kubelet…", flush=True)
        demo.pod_network = network = await asyncio.to_thread(pf.create_pod_network)
        await in_thread(
            lambda running: setattr(demo, "pod_standins", running),
            pf.start_container_kubelet,
            control_plane.admin_kubeconfig,
            work / "container-standins",
            network,
        )
        print("deploying the z2jh chart as pods (helm render, apply, Deployments)…", flush=True)
        demo.admin = admin = control_plane.admin_client()
        demo.hub = demo.chart_pods = await deploy_chart_pods(
            admin, provider, node_modules, network.gateway, pf.POD_ON_CONTAINERS
        )
        print(demo.hub.rendered.summary())
        print(demo.hub.applied.report())
        demo.notebooks = "the single-user image as a container (podman), like the hub and proxy"
    elif chart:
        print("deploying the z2jh chart (helm render, apply, hub and proxy)…", flush=True)
        demo.admin = admin = control_plane.admin_client()
        hub_env = await asyncio.to_thread(hub_image_env)
        demo.hub = await deploy_chart_hub(
            control_plane, admin, provider, node_modules, hub_env, work / "chart"
        )
        print(demo.hub.rendered.summary())
        print(demo.hub.applied.report())
        demo.notebooks = NOTEBOOK_RUNS_CHART
    else:
        assert demo.containers is not None
        print("starting JupyterHub…", flush=True)
        demo.hub = await start_hub(
            provider,
            node_modules,
            work / "hub",
            hub=demo.containers.hub_settings,
            extra_config=DNA_SPAWNER_CONFIG + demo.containers.spawner_config() + DEMO_TEAMS_CONFIG,
            port=port,
        )
        demo.notebooks = NOTEBOOK_RUNS.format(
            image=demo.containers.image, kfp=demo.containers.kfp.url if demo.containers.kfp else ""
        )


def banner(demo: Demo) -> str:
    assert demo.hub is not None and demo.control_plane is not None
    logins = "\n".join(f"    {line}" for line in demo_logins(demo_accounts()))
    # the team is configured on the demo's own hub only (the chart's hub has its values)
    teams = (
        "  team profile (groups of the token → Kubeflow contributors, at login):\n"
        + "".join(f"    {line}\n" for line in demo_teams())
        if demo.containers is not None
        else ""
    )
    return (
        "\n"
        f"  dna_hub demo is up:   {demo.hub.url}/\n"
        "  log in as (any password):\n"
        f"{logins}\n"
        f"{teams}"
        f"  notebooks run:        {demo.notebooks}\n"
        + (
            f"  podman network:       {demo.containers.network.name} (removed on Ctrl-C)\n"
            if demo.containers is not None and demo.containers.network is not None
            else ""
        )
        + f"  kubectl as admin:     export KUBECONFIG={demo.control_plane.admin_kubeconfig}\n"
        f"  logs:                 {demo.work}\n"
        "  stop:                 Ctrl-C\n"
    )


async def run(port: int, chart: bool = False, chart_pods: bool = False) -> int:
    try:
        # Before anything starts: a fresh clone has no ../shared (download, or one message).
        reference_dir = await asyncio.to_thread(reference.ensure)
    except reference.ReferenceDataError as e:
        print(f"./dev demo cannot start.\n{e}", file=sys.stderr)
        return 1
    if not chart and (missing := images.engine_missing()):
        print(
            "./dev demo cannot start: the notebooks run as containers, and the container "
            f"engine is not installed ({', '.join(missing)}). Run ./dev setup.",
            file=sys.stderr,
        )
        return 1
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    assert main_task is not None
    state = {"starting": True, "signalled": False}

    def on_signal() -> None:
        # The first signal stops the demo (cancelling a start in progress); later ones
        # are ignored so that the clean-up itself is not interrupted.
        if state["signalled"]:
            print("still stopping (removing containers)…", flush=True)
            return
        state["signalled"] = True
        stop.set()
        if state["starting"]:
            main_task.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    demo = Demo()
    try:
        try:
            await start(demo, port, chart, chart_pods, reference_dir)
            state["starting"] = False
            print(banner(demo), flush=True)
            await stop.wait()
        finally:
            state["starting"] = False
            print("\nstopping…", flush=True)
            await _uninterrupted(demo.stop())
            print("stopped.", flush=True)
    except asyncio.CancelledError:
        if not state["signalled"]:
            raise
    except images.ImageBuildError as e:
        print(
            f"./dev demo cannot start: the single-user image did not build.\n{e}\n"
            f"(build logs: {images.IMAGES_DIR})",
            file=sys.stderr,
        )
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


async def _uninterrupted(clean_up: Coroutine[Any, Any, None]) -> None:
    """Run ``clean_up`` to its end even if this task is cancelled meanwhile (then re-raise)."""
    task = asyncio.ensure_future(clean_up)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


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
