"""Run the stand-ins (profile controller, PodDefault webhook, scheduler+kubelet) in one process.

::

    python -m devstack.standins --kubeconfig ADMIN_KUBECONFIG \\
        [--state-dir DIR] [--profile-delay 0.5] [--profile-step-delay 0] \\
        [--no-profile-controller] [--no-webhook] [--no-kubelet] [--node-name standin-node]
        [--kubelet-runtime process|podman|none|serve] [--pod-cidr CIDR]

Runs until SIGTERM/SIGINT, then shuts down cleanly (webhook configuration removed, pod
processes killed). Once every watch has listed once and the webhook configuration is
registered it prints one line ``STANDINS-READY {json}`` on stdout, with ``webhook_url``,
``webhook_ca_file``, ``node_name``, ``pod_log_dir`` and ``pid``. Logs go to stderr.

Why a separate process: the hub under test and the stand-ins must not share an event
loop — a stall in one would otherwise look like a slow cluster to the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from devstack.standins import READY_MARKER, Kube
from devstack.standins.containers import Podman
from devstack.standins.kubelet import DEFAULT_NODE_NAME, Kubelet, KubeletConfig
from devstack.standins.poddefault_webhook import PodDefaultWebhook
from devstack.standins.profile_controller import (
    NAMESPACE_LABELS_FILE,
    ProfileController,
    ProfileControllerConfig,
    load_namespace_labels,
)
from devstack.standins.simulated_pods import (
    DEFAULT_POD_CIDR,
    SERVE_POD_CIDR,
    default_pod_cidr,
)

log = logging.getLogger("standins")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.standins",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", type=Path, required=True, help="admin kubeconfig")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="certificates, pod logs and pod work dirs (default: a temp dir)",
    )
    parser.add_argument(
        "--profile-delay",
        type=float,
        default=0.0,
        help="seconds the profile controller waits before acting on a Profile",
    )
    parser.add_argument(
        "--profile-step-delay",
        type=float,
        default=0.0,
        help="seconds between creating a namespace and its ServiceAccounts etc.",
    )
    parser.add_argument("--profile-workers", type=int, default=4)
    parser.add_argument("--userid-header", default="kubeflow-userid")
    parser.add_argument("--userid-prefix", default="")
    parser.add_argument(
        "--namespace-labels-path",
        type=Path,
        default=NAMESPACE_LABELS_FILE,
        help="profile controller: namespace labels file (upstream's format; default: the "
        "devstack's, upstream's kubeflow-pss overlay with enforce: restricted)",
    )
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME)
    parser.add_argument(
        "--runtime",
        "--kubelet-runtime",
        dest="runtime",
        choices=["process", "podman", "none", "serve"],
        default="process",
        help="kubelet: pods as host processes, as podman containers, or running nothing "
        "(none: Running at once with an IP from --pod-cidr, for benchmarks; serve: the "
        "same with a loopback IP on which the stand-in answers HTTP like a Jupyter server "
        "behind JupyterHub, for full-stack benchmarks)",
    )
    parser.add_argument(
        "--pod-cidr",
        default=None,
        help="kubelet (none, serve): the CIDR pod IPs are taken from (default: "
        f"{DEFAULT_POD_CIDR} for none, {SERVE_POD_CIDR} for serve, which needs one inside "
        "127.0.0.0/8)",
    )
    parser.add_argument("--network", help="kubelet (podman): the bridge network of the pods")
    parser.add_argument("--gateway", help="kubelet (podman): that network's gateway address")
    parser.add_argument("--service-port", type=int, default=443)
    parser.add_argument(
        "--token-refresh-seconds",
        type=float,
        default=None,
        help="kubelet (podman): rotate projected tokens at least this often",
    )
    parser.add_argument(
        "--taint",
        action="append",
        default=[],
        help="kubelet: node taint KEY=VALUE:EFFECT (repeatable)",
    )
    parser.add_argument(
        "--cluster-networking",
        action="store_true",
        help="kubelet (podman): cluster DNS, service variables, the kubernetes Service",
    )
    parser.add_argument(
        "--bind-pods",
        action="store_true",
        help="kubelet: bind unscheduled pods to this node itself (only for a cluster "
        "without kube-scheduler; the devstack control plane runs one)",
    )
    parser.add_argument("--max-pods", type=int, default=250, help="kubelet: node capacity")
    parser.add_argument("--no-profile-controller", action="store_true")
    parser.add_argument("--no-webhook", action="store_true")
    parser.add_argument("--no-kubelet", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def kubelet_config(args: argparse.Namespace, state_dir: Path) -> KubeletConfig:
    """The kubelet's configuration from the command line (the pod CIDR per runtime when
    ``--pod-cidr`` is not given)."""
    taints = []
    for taint in args.taint:
        key_value, _, effect = taint.partition(":")
        key, _, value = key_value.partition("=")
        taints.append({"key": key, "value": value, "effect": effect or "NoSchedule"})
    return KubeletConfig(
        node_name=args.node_name,
        log_dir=state_dir / "pod-logs",
        work_dir=state_dir / "pod-work",
        runtime=args.runtime,
        network=args.network,
        gateway=args.gateway,
        service_port=args.service_port,
        token_refresh_seconds=args.token_refresh_seconds,
        taints=taints,
        cluster_networking=args.cluster_networking,
        pod_cidr=args.pod_cidr or default_pod_cidr(args.runtime),
        bind_pods=args.bind_pods,
        max_pods=args.max_pods,
    )


async def _run(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="dna-hub-standins-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    kube = await Kube.from_kubeconfig(args.kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    webhook: PodDefaultWebhook | None = None
    readies: list[asyncio.Event] = []
    tasks: list[asyncio.Task[None]] = []
    info: dict[str, object] = {"pid": os.getpid(), "state_dir": str(state_dir)}
    try:
        if not args.no_profile_controller:
            controller = ProfileController(
                kube,
                ProfileControllerConfig(
                    delay_seconds=args.profile_delay,
                    step_delay_seconds=args.profile_step_delay,
                    workers=args.profile_workers,
                    userid_header=args.userid_header,
                    userid_prefix=args.userid_prefix,
                    namespace_labels=load_namespace_labels(args.namespace_labels_path),
                ),
            )
            readies.append(asyncio.Event())
            tasks.append(
                asyncio.create_task(controller.run(readies[-1]), name="profile-controller")
            )
        if not args.no_kubelet:
            podman = None
            if args.runtime == "podman":
                from devstack.images import engine_env

                podman = Podman(env=engine_env())
            kubelet = Kubelet(kube, kubelet_config(args, state_dir), podman)
            readies.append(asyncio.Event())
            tasks.append(asyncio.create_task(kubelet.run(readies[-1]), name="kubelet"))
            info.update(node_name=args.node_name, pod_log_dir=str(state_dir / "pod-logs"))
            info.update(kubelet.describe())
        if not args.no_webhook:
            webhook = PodDefaultWebhook(kube, state_dir / "webhook-certs")
            await asyncio.wait_for(webhook.start(), timeout=args.ready_timeout)
            info.update(webhook_url=webhook.url, webhook_ca_file=str(webhook.ca_file))

        ready = asyncio.gather(*(e.wait() for e in readies))
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait(
            {ready, stopped, *tasks},
            timeout=args.ready_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if ready not in done:
            ready.cancel()
            failed = [t for t in tasks if t.done()]
            for task in failed:
                if task.exception():
                    log.error("%s failed: %r", task.get_name(), task.exception())
            if not stopped.done():
                log.error("stand-ins not ready after %ss", args.ready_timeout)
            return 0 if stopped.done() and not failed else 1
        print(f"{READY_MARKER} {json.dumps(info)}", flush=True)
        log.info("stand-ins ready: %s", info)
        await asyncio.wait({stopped, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception():
                log.error("%s died: %r", task.get_name(), task.exception())
                return 1
        return 0
    finally:
        log.info("stand-ins shutting down")
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=15)
        if webhook is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(webhook.stop(), timeout=10)
        await kube.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
