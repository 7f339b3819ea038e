"""``dna-hub manifests``: the hub's RBAC, the sync job and the admission guards, for this config.

Everything a platform engineer applies next to the z2jh chart that names the hub's or the sync
job's identity is rendered here from ONE place — the hub's ``jupyterhub_config.py`` (features,
KFP namespace, namespace templates) and the two service accounts — so the guards can never
name another identity than the RBAC binds (a guard that names the wrong identity guards
nothing). ``helm-values/`` holds the rendering with every feature on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from dna_hub.cli.context import load_hub_config, settings_from
from dna_hub.errors import ConfigurationError
from dna_hub.hub.settings import DnaSettings
from dna_hub.policy.platform import FILES, PlatformValues, ServiceAccountRef, render_platform


def add_parser(commands: Any) -> None:
    manifests = commands.add_parser(
        "manifests",
        help="render the hub's RBAC, the sync CronJob and the admission guards for a config",
        description="Render, from the hub's jupyterhub_config.py, the cluster objects to apply "
        "next to the z2jh chart: hub-rbac.yaml (the hub's ClusterRole, only the rules the "
        "configured features need), dna-hub-sync.yaml (the sync CronJob and its RBAC), "
        "hub-namespace-guard.yaml and hub-object-guard.yaml (the admission policies that "
        "confine both identities; Kubernetes >= 1.30). Prints one YAML stream, or writes the "
        "four files with --output-dir.",
    )
    manifests.add_argument("--config", help="the hub's jupyterhub_config.py")
    manifests.add_argument(
        "--hub-service-account",
        metavar="NAMESPACE:NAME",
        help="the hub's ServiceAccount (default: <hub_namespace>:hub, as z2jh names it; "
        "with hub.serviceAccount.name set, that name)",
    )
    manifests.add_argument(
        "--sync-service-account",
        metavar="NAMESPACE:NAME",
        help="the sync CronJob's ServiceAccount (default: dna-hub-sync in the hub's namespace, "
        "where it mounts the hub's ConfigMap and Secret)",
    )
    manifests.add_argument(
        "--output-dir", type=Path, help="write the four files here instead of printing"
    )


def profile_prefix(settings: DnaSettings) -> str:
    """The fixed start every profile namespace shares (``kubeflow-``), which the guards use
    to recognise a Profile name: both namespace templates must begin with it."""
    fixed = [
        template.split("{", 1)[0]
        for template in (settings.namespace_template, settings.team_namespace_template)
    ]
    common = os.path.commonprefix(fixed)  # noqa: RUF071 (strings, not paths)
    prefix = common[: common.rfind("-") + 1]
    if not prefix:
        raise ConfigurationError(
            "The namespace templates cannot be guarded.",
            f"namespace_template {settings.namespace_template!r} and team_namespace_template "
            f"{settings.team_namespace_template!r} share no fixed prefix ending in '-' (such as "
            "'kubeflow-'): the admission guards recognise profile names by it",
        )
    return prefix


def platform_values(
    settings: DnaSettings, hub: str | None, sync: str | None, config_name: str
) -> PlatformValues:
    try:
        hub_account = ServiceAccountRef.parse(hub or f"{settings.hub_namespace}:hub")
        return PlatformValues(
            hub=hub_account,
            sync=ServiceAccountRef.parse(sync or f"{hub_account.namespace}:dna-hub-sync"),
            kfp_namespace=settings.kfp_namespace,
            profile_prefix=profile_prefix(settings),
            teams=bool(settings.team_profiles),
            legacy_envoy_filter=settings.legacy_envoy_filter,
            legacy_ml_pipeline_policy=settings.legacy_ml_pipeline_policy,
            kueue=settings.kueue_enabled,
            generated_for=config_name,
        )
    except ValueError as e:
        raise ConfigurationError("The manifests cannot be rendered.", str(e)) from e


def run_manifests(
    args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    try:
        settings = settings_from(load_hub_config(args.config))
        values = platform_values(
            settings,
            args.hub_service_account,
            args.sync_service_account,
            f"--config {Path(args.config).name}" if args.config else "the default configuration",
        )
    except ConfigurationError as e:
        err.write(f"dna-hub manifests: {e.detail}\n")
        return 2
    rendered = render_platform(values)
    if args.output_dir is None:
        out.write("\n---\n".join(rendered[name] for name in FILES))
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (args.output_dir / name).write_text(rendered[name])
        out.write(f"wrote {args.output_dir / name}\n")
    return 0
