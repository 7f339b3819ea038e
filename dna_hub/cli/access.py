"""``dna-hub access``: who can reach a profile namespace and through what, or every profile
namespace an identity reaches and with which role — from live objects, cross-checked with
the API server's own authorizer (SubjectAccessReview).

Needs only the read-only ClusterRole ``helm-values/dna-hub-access-reader.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.cli.context import load_client
from dna_hub.errors import DnaHubError
from dna_hub.k8s.api import KubeApi
from dna_hub.k8s.retry import describe
from dna_hub.profiles.access import AccessReport, access_report

__all__ = ["add_parser", "format_table", "run_access"]


def add_parser(commands: Any) -> None:
    access = commands.add_parser(
        "access",
        help="who reaches a profile namespace and through what (or where an identity reaches)",
        description="For a Kubeflow profile namespace, every identity that can reach it and "
        "through what: the owner (Profile spec.owner), contributor RoleBindings (made by "
        "dna_hub from a team, or by hand in the dashboard), other RoleBindings (service "
        "accounts with Kubeflow roles) and Istio AuthorizationPolicies; for an identity, "
        "every profile namespace it reaches and with which role. Each identity's RBAC role "
        "is cross-checked with a SubjectAccessReview (a mismatch is marked '!' and makes the "
        "exit code 1). Read-only: needs helm-values/dna-hub-access-reader.yaml.",
    )
    which = access.add_mutually_exclusive_group(required=True)
    which.add_argument("--namespace", metavar="NS", help="a profile namespace")
    which.add_argument(
        "--user",
        metavar="IDENTITY",
        help="an identity exactly as Kubeflow sees it (kubeflow-userid, e.g. an email; a "
        "service account as system:serviceaccount:NS:NAME)",
    )
    access.add_argument("--json", action="store_true", help="print JSON instead of a table")
    access.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube)")
    access.add_argument("--context", help="kube context to use")
    access.add_argument(
        "--timeout", type=float, default=10.0, help="seconds allowed for each request (default 10)"
    )


def format_table(report: AccessReport) -> str:
    header = ("NAMESPACE", "IDENTITY", "KIND", "ROLE", "VIA", "SOURCE", "RBAC (SAR)")
    lines: list[tuple[str, ...]] = [header]
    for entry in report.entries:
        check = (
            "-"
            if entry.reviewed is None
            else entry.reviewed + ("" if entry.consistent else f" ! expected {entry.expected}")
        )
        for index, path in enumerate(entry.paths):
            lines.append(
                (
                    entry.namespace,
                    entry.identity,
                    entry.kind,
                    path.role,
                    path.via,
                    path.source,
                    check if index == 0 else "",
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


async def _report(args: argparse.Namespace) -> AccessReport:
    async with await load_client(args) as api_client:
        api = KubeApi(api_client, request_timeout=args.timeout)
        return await access_report(api, namespace=args.namespace, identity=args.user)


def run_access(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        report = asyncio.run(_report(args))
    except kube_config.ConfigException as e:
        err.write(f"dna-hub access: no usable kube context: {e}\n")
        return 2
    except ApiException as e:
        err.write(
            f"dna-hub access: the API server refused a read: {describe(e)} (the identity "
            "needs helm-values/dna-hub-access-reader.yaml)\n"
        )
        return 2
    except DnaHubError as e:
        err.write(f"dna-hub access: {e}\n")
        return 2
    if args.json:
        out.write(json.dumps(report.as_json(), indent=2) + "\n")
    elif report.entries:
        out.write(format_table(report) + "\n")
    else:
        what = f"namespace {args.namespace}" if args.namespace else f"identity {args.user}"
        out.write(f"no access found for {what} (not a profile namespace, or no path in)\n")
    inconsistent = [e for e in report.entries if not e.consistent]
    for entry in inconsistent:
        err.write(
            f"dna-hub access: {entry.identity} in {entry.namespace}: the objects give "
            f"{entry.expected}, the API server's authorizer allows {entry.reviewed} (a path "
            "outside the profile namespace, e.g. a ClusterRoleBinding, or an aggregation gap)\n"
        )
    return 1 if inconsistent else 0
