"""``dna-hub sync``: roll the current templates out to every profile dna_hub manages.

The settings are the hub's own: the same ``jupyterhub_config.py`` the hub loads (in the
z2jh chart, /usr/local/etc/jupyterhub/jupyterhub_config.py with the hub's ConfigMap and
Secret mounted), read with traitlets into :class:`~dna_hub.hub.settings.DnaSettings`, whose
builders render each profile — the spawn's code, not a copy of it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from kubernetes_asyncio import config as kube_config
from traitlets.config import Config

from dna_hub.cli.context import load_client, load_hub_config, notebook_server, settings_from
from dna_hub.errors import ConfigurationError, DnaHubError
from dna_hub.hub.settings import request_timeout_from_config
from dna_hub.k8s.api import KubeApi
from dna_hub.policy.naming import namespace_for
from dna_hub.policy.rendering import RenderedProfile
from dna_hub.profiles.sync import ProfileSync, SyncResult


def add_parser(commands: Any) -> None:
    sync = commands.add_parser(
        "sync",
        help="apply the current templates to every profile dna_hub manages; prune the rest",
        description="Render every profile dna_hub manages again from the hub's configuration "
        "and apply it (the spawn's ownership checks, retries and digest); delete objects "
        "labelled with a profile that the templates no longer render. Profiles dna_hub does "
        "not manage are never touched. Exits 1 naming each profile that failed; run it again "
        "to converge them.",
    )
    sync.add_argument(
        "--config", help="the hub's jupyterhub_config.py (DnaSpawner settings are read from it)"
    )
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="print each profile's diff from a server-side dry run; change nothing",
    )
    sync.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="USER",
        help="only this hub user's profile (repeatable; default: every managed profile)",
    )
    sync.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="profiles synced at once (default 4)",
    )
    sync.add_argument(
        "--prune-kind",
        action="append",
        default=[],
        metavar="APIVERSION/KIND",
        help="also prune objects of this kind, e.g. v1/ConfigMap, for kinds only your own "
        "templates rendered (the shipped templates' kinds are always pruned)",
    )
    sync.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube)")
    sync.add_argument("--context", help="kube context to use")


def renderer(config: Config) -> Callable[[str, str, Sequence[str]], RenderedProfile]:
    """A user's profile by (username, owner, groups), with the hub's settings."""
    settings, server = settings_from(config), notebook_server(config)

    def render(username: str, owner: str, groups: Sequence[str]) -> RenderedProfile:
        return settings.render_personal(
            username=username,
            namespace=settings.personal_namespace(username),
            owner=owner,
            groups=groups,
            server=server,
        )

    return render


def team_renderer(config: Config) -> Callable[[str], RenderedProfile | None]:
    """A team's profile by group, from the hub's DnaSpawner.team_profiles (the spawn's code)."""
    settings, server = settings_from(config), notebook_server(config)
    teams = settings.teams()

    def render_team(group: str) -> RenderedProfile | None:
        team = teams.get(group)
        return settings.render_team(team, server) if team else None

    return render_team


async def _prune_kinds(api: KubeApi, specs: Sequence[str]) -> list[Any]:
    kinds = []
    for spec in specs:
        api_version, _, kind = spec.rpartition("/")
        if not api_version or not kind:
            raise ConfigurationError(
                f"--prune-kind {spec!r}: use APIVERSION/KIND, e.g. v1/ConfigMap"
            )
        found = await api.kind_for(api_version, kind)
        if not found.namespaced:
            raise ConfigurationError(f"--prune-kind {spec!r}: only namespaced kinds are pruned")
        kinds.append(found)
    return kinds


class Progress:
    """A progress bar on a terminal, one line per profile otherwise (logs of a CronJob)."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.out, self.done, self.failed = total, out, 0, 0
        self.tty = out.isatty()

    def __call__(self, result: SyncResult) -> None:
        self.done += 1
        self.failed += result.failed
        if self.tty:
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (width - filled)
            self.out.write(f"\r[{bar}] {self.done}/{self.total}, {self.failed} failed")
            if self.done == self.total:
                self.out.write("\n")
        else:
            self.out.write(
                f"[{self.done}/{self.total}] {result.profile}: {result.status}"
                + (f" ({result.detail})" if result.failed else "")
                + "\n"
            )
        self.out.flush()


def format_summary(results: Sequence[SyncResult]) -> str:
    rows = [("PROFILE", "USER", "RESULT", "CHANGES", "DETAIL")]
    for r in results:
        counts = {a: sum(c.action == a for c in r.changes) for a in ("create", "update", "delete")}
        changes = ", ".join(f"{n} {a}" for a, n in counts.items() if n) or "-"
        rows.append((r.profile, r.username or "-", r.status, changes, r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(f"{v:<{w}}" for v, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    failed = sum(r.failed for r in results)
    lines.append(f"\n{len(results) - failed} ok, {failed} failed")
    return "\n".join(line.rstrip() for line in lines)


def format_changes(results: Sequence[SyncResult]) -> str:
    out = []
    for r in results:
        for c in r.changes:
            out.append(f"{r.profile}: {c.action} {c.what}")
            if c.diff:
                out.append(c.diff)
    return "\n".join(out)


async def sync(
    args: argparse.Namespace, config: Config, *, out: TextIO, err: TextIO
) -> list[SyncResult]:
    settings, server = settings_from(config), notebook_server(config)
    api_client = await load_client(args)
    async with api_client:
        api = KubeApi(api_client, request_timeout=request_timeout_from_config(config))
        syncer = ProfileSync(
            api,
            renderer(config),
            render_team=team_renderer(config),
            prune_namespaces=[settings.kfp_namespace],
            extra_prune_kinds=await _prune_kinds(api, args.prune_kind),
            concurrency=args.concurrency,
            ready_timeout=settings.profile_ready_timeout,
            service_account=server.service_account,
        )
        profiles, missing = await syncer.managed_profiles(
            args.user, lambda user: namespace_for(user, settings.namespace_template)
        )
        err.write(
            f"dna-hub sync: {len(profiles)} managed profile(s)"
            + (" (dry run: nothing is written)" if args.dry_run else "")
            + "\n"
        )
        results = await syncer.run(
            profiles, dry_run=args.dry_run, progress=Progress(len(profiles), err)
        )
    return missing + results


def run_sync(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if args.concurrency < 1:
        err.write("dna-hub sync: --concurrency must be at least 1\n")
        return 2
    try:
        results = asyncio.run(sync(args, load_hub_config(args.config), out=out, err=err))
    except DnaHubError as e:
        err.write(f"dna-hub sync: {e}\n")
        return 2
    except kube_config.ConfigException as e:
        err.write(f"dna-hub sync: no usable kube context: {e}\n")
        return 2
    if args.dry_run:
        changes = format_changes(results)
        out.write((changes + "\n\n") if changes else "no changes\n\n")
    out.write(format_summary(results) + "\n")
    failed = [r.profile for r in results if r.failed]
    if failed:
        err.write(f"dna-hub sync: failed: {', '.join(failed)} (run it again to converge them)\n")
        return 1
    return 0
