"""The ``dna-hub`` command: ``render`` previews a login's objects; ``doctor`` checks a cluster;
``sync`` and ``gc`` are day-2; ``manifests`` renders the RBAC and guards for a config;
``access`` shows who reaches which profile namespace."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dna-hub",
        description="dna_hub: Zero to JupyterHub as the notebook front door of Kubeflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = commands.add_parser(
        "render",
        help="print the objects a login of USER would apply (no cluster needed)",
        description="Print, as a YAML stream and without contacting a cluster, exactly the "
        "objects a login of USER would apply: the Profile (with the digest annotation "
        "dna_hub records) and the namespaced objects; with --pod also the notebook Pod as "
        "KubeSpawner would create it.",
    )
    render.add_argument("--user", required=True, help="hub username")
    render.add_argument(
        "--owner",
        help="Kubeflow identity (kubeflow-userid) of the user, e.g. their email; default: "
        "DnaSpawner.profile_owner_fallback from the config",
    )
    render.add_argument(
        "--group",
        action="append",
        default=[],
        help="a group of the user's verified token (repeatable); with "
        "DnaSpawner.team_profiles, also prints each team's Profile and objects and the "
        "user's contributor RoleBinding and AuthorizationPolicy there",
    )
    render.add_argument("--config", help="a jupyterhub_config.py to read DnaSpawner settings from")
    render.add_argument("--pod", action="store_true", help="also print the notebook Pod")
    render.add_argument(
        "--form",
        action="store_true",
        help="print instead the spawn form's server options a login with these --group s "
        "sees (DnaSpawner.server_options gated by dna_hub_groups, then team choices)",
    )
    render.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a choice of the spawn form (repeatable; e.g. profile=gpu, image=cuda), "
        "applied to the --pod as the hub would, and refused as the hub would refuse it "
        "for these --group s",
    )

    doctor = commands.add_parser(
        "doctor",
        help="check the current kube context for what dna_hub needs",
        description="Check the current kube context: CRDs served, the hub's RBAC, the KFP "
        "endpoints, the admission guards. Prints a pass/fail table with a fix for each "
        "failure (skip: an in-cluster name checked from outside the cluster; warn: passed, "
        "with a caveat); exits non-zero on any failure.",
    )
    doctor.add_argument("--config", help="a jupyterhub_config.py to read DnaSpawner settings from")
    doctor.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube)")
    doctor.add_argument("--context", help="kube context to use")
    doctor.add_argument(
        "--timeout", type=float, default=10.0, help="seconds allowed for each check (default 10)"
    )
    doctor.add_argument(
        "--hub-service-account",
        metavar="NAMESPACE:NAME",
        help="the hub's ServiceAccount, as for dna-hub manifests (default <hub_namespace>:hub)",
    )
    doctor.add_argument(
        "--as",
        dest="as_identity",
        action="append",
        default=[],
        metavar="IDENTITY",
        help="probe the admission guards as this guarded identity, by impersonation (an "
        "operator's context; repeatable: the hub's and the sync job's service accounts). "
        "Without it doctor probes as itself when it is one of them (in the hub pod)",
    )
    from dna_hub.cli import sync as sync_cli

    sync_cli.add_parser(commands)
    from dna_hub.cli import gc as gc_cli

    gc_cli.add_parser(commands)
    from dna_hub.cli import manifests as manifests_cli

    manifests_cli.add_parser(commands)
    from dna_hub.cli import access as access_cli

    access_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = _run(argv)
        sys.stdout.flush()  # a broken pipe shows here, not in the interpreter's last flush
        return status
    except BrokenPipeError:
        # The reader went away (`dna-hub render ... | head -1`): stop quietly, as Unix tools
        # do, with the status of a SIGPIPE death. Point stdout at /dev/null so the
        # interpreter's final flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "render":
        from dna_hub.cli.render import run_render

        return run_render(args)
    if args.command == "doctor":
        from dna_hub.cli.doctor import run_doctor

        return run_doctor(args)
    if args.command == "sync":
        from dna_hub.cli.sync import run_sync

        return run_sync(args)
    if args.command == "access":
        from dna_hub.cli.access import run_access

        return run_access(args)
    if args.command == "gc":
        from dna_hub.cli.gc import run_gc

        return run_gc(args)
    if args.command == "manifests":
        from dna_hub.cli.manifests import run_manifests

        return run_manifests(args)
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces the choice


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
