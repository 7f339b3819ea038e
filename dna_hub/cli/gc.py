"""``dna-hub gc``: list the profiles of deleted hub users (kept orphaned), delete old ones.

Run it with an identity that may list and delete Profiles (a cluster admin; the hub and the
sync CronJob may not). Deleting a Profile deletes its namespace and everything in it,
volumes included: nothing is deleted without ``--yes``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any, TextIO

from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.cli.context import load_client
from dna_hub.k8s.api import KubeApi
from dna_hub.k8s.retry import describe
from dna_hub.profiles.managed import hub_username, orphaned_at, parse_age, timestamp
from dna_hub.profiles.offboarding import (
    find_orphans,
    find_stranded,
    gc_delete,
    gc_delete_stranded,
)


def add_parser(commands: Any) -> None:
    gc = commands.add_parser(
        "gc",
        help="list profiles orphaned by deleted hub users; delete old ones with --yes",
        description="List the Kubeflow profiles dna_hub kept when the hub deleted their user "
        "(DnaSpawner.profile_retention = keep), orphaned at least --older-than ago. With --yes "
        "delete them — each Profile's namespace and EVERYTHING IN IT, volumes included. "
        "Profiles dna_hub does not manage are never listed or deleted.",
    )
    gc.add_argument(
        "--older-than",
        default="30d",
        metavar="AGE",
        help="only profiles orphaned at least this long ago: 30d (default), 12h, 2w, 0s",
    )
    gc.add_argument(
        "--dry-run",
        action="store_true",
        help="check every deletion with a server-side dry run; delete nothing",
    )
    gc.add_argument("--yes", action="store_true", help="really delete (without it: only list)")
    gc.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube)")
    gc.add_argument("--context", help="kube context to use")


def _age(delta: timedelta) -> str:
    days, seconds = delta.days, delta.seconds
    return f"{days}d" if days else f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


async def _act(args: argparse.Namespace, delete: Callable[..., Awaitable[str]]) -> str:
    """What gc does with one profile: only list it, or delete it (``--dry-run``: on trial)."""
    if not (args.yes or args.dry_run):
        return "would delete (re-run with --yes)"
    try:
        return await delete(dry_run=args.dry_run or not args.yes)
    except (ApiException, OSError, TimeoutError) as e:
        return f"FAILED: {describe(e)}"


async def gc(args: argparse.Namespace, older_than: timedelta) -> list[tuple[str, ...]]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    rows: list[tuple[str, ...]] = []
    api_client = await load_client(args)
    async with api_client:
        api = KubeApi(api_client)
        for profile in await find_orphans(api, older_than, now=now):
            when = orphaned_at(profile)
            assert when is not None  # find_orphans only returns timestamped ones
            action = await _act(args, partial(gc_delete, api, profile, older_than, now=now))
            rows.append(
                (
                    profile["metadata"]["name"],
                    hub_username(profile) or "-",
                    timestamp(when),
                    _age(now - when),
                    action,
                )
            )
        # stranded: a spawn created it, then found the namespace someone else's; never old
        # enough to wait for, nothing of the user's is in it
        for profile, other in await find_stranded(api):
            action = await _act(args, partial(gc_delete_stranded, api, profile))
            rows.append(
                (
                    profile["metadata"]["name"],
                    hub_username(profile) or "-",
                    "-",
                    "-",
                    f"stranded (namespace owned by {other}): {action}",
                )
            )
    return rows


def format_rows(rows: list[tuple[str, ...]]) -> str:
    table = [("PROFILE", "USER", "ORPHANED AT", "AGE", "ACTION"), *rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    return "\n".join(
        "  ".join(f"{v:<{w}}" for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in table
    )


def run_gc(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        older_than = parse_age(args.older_than)
    except ValueError as e:
        err.write(f"dna-hub gc: --older-than: {e}\n")
        return 2
    try:
        rows = asyncio.run(gc(args, older_than))
    except kube_config.ConfigException as e:
        err.write(f"dna-hub gc: no usable kube context: {e}\n")
        return 2
    except (ApiException, OSError, TimeoutError) as e:
        err.write(f"dna-hub gc: cannot list profiles: {describe(e)}\n")
        return 1
    if not rows:
        out.write(f"no orphaned profiles older than {args.older_than}, none stranded\n")
        return 0
    out.write(format_rows(rows) + "\n")
    failed = [r[0] for r in rows if "FAILED" in r[4]]
    if failed:
        err.write(f"dna-hub gc: failed: {', '.join(failed)}\n")
        return 1
    return 0
