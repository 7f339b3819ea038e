"""``DnaSettings``: dna_hub's own settings, the one composition root.

Every dna_hub option is a trait here, with its help text, secure default and validator. The
spawner inherits them (``class DnaSpawner(DnaSettings, KubeSpawner)``, so ``c.DnaSpawner.*``
keeps working); the login hook and the CLI build the same object from the hub's config with
:meth:`DnaSettings.from_config` — no spawner, no user, no cluster needed. The builders below
turn settings plus plain values (a username, an owner, the notebook's service account and
port) into what the lower layers take: a :class:`~dna_hub.policy.rendering.ProfileContext`,
rendered profiles, the teams, and one set of Kubernetes clients (:meth:`clients`).

Functions elsewhere take the values they need, never the spawner: as nublado's factory hands
each service its slice of the configuration.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import Config, LoggingConfigurable

from dna_hub.auth.claims import kubeflow_identity_problem
from dna_hub.errors import ConfigurationError, NamingError, TemplateRenderError
from dna_hub.k8s.api import KubeApi
from dna_hub.policy.naming import (
    DEFAULT_NAMESPACE_TEMPLATE,
    NamespacePolicyError,
    namespace_for,
    validate_namespace_template,
)
from dna_hub.policy.notebook_env import NotebookEnvSettings
from dna_hub.policy.pod_defaults import DEFAULT_LIMIT_RANGE
from dna_hub.policy.queueing import DEFAULT_ACCELERATORS, valid_queue_name
from dna_hub.policy.quotas import check_group_quotas, resource_quota_for
from dna_hub.policy.rendering import (
    BLOCKED_EGRESS_CIDRS,
    ProfileContext,
    RenderedProfile,
    TemplateError,
    render_profile,
)
from dna_hub.policy.server_options import server_option_problem
from dna_hub.policy.teams import (
    DEFAULT_INGRESS_GATEWAY_PRINCIPAL,
    DEFAULT_KFP_UI_PRINCIPAL,
    DEFAULT_TEAM_NAMESPACE_TEMPLATE,
    Team,
    TeamConfigError,
    parse_teams,
    team_like_namespace,
)
from dna_hub.profiles.contributors import ContributorSync
from dna_hub.profiles.offboarding import DELETE_REMOVED, RETENTION_POLICIES
from dna_hub.profiles.provisioning import ProfileProvisioner

__all__ = [
    "KUBEFLOW_USERID_KEY",
    "DnaSettings",
    "NotebookServer",
    "ProfileClients",
    "hub_namespace_from_environment",
    "notebook_server_from_config",
    "request_timeout_from_config",
    "spawner_config_section",
    "subdomain_host_from_config",
]

#: auth_state key under which DnaOIDCAuthenticator stores the identity Kubeflow sees.
KUBEFLOW_USERID_KEY = "kubeflow_userid"

#: The notebook's service account by default: the one Kubeflow's profile controller makes.
DEFAULT_SERVICE_ACCOUNT = "default-editor"


def hub_namespace_from_environment() -> str:
    """The hub's namespace: z2jh's POD_NAMESPACE, the pod's service-account mount, or
    'jupyterhub'."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if ns_file.exists():
        return ns_file.read_text().strip()
    return "jupyterhub"


@dataclass(frozen=True)
class NotebookServer:
    """What a profile needs to know of the notebook server: KubeSpawner's own settings
    (``service_account``, ``port``), which the spawner has and the CLI reads from config."""

    service_account: str = DEFAULT_SERVICE_ACCOUNT
    port: int = 8888


def spawner_config_section(config: Config) -> Config:
    """The config a DnaSpawner reads: its sections merged as traitlets orders them (the
    more specific winning), for the KubeSpawner traits the CLI and login hook need."""
    merged = Config()
    for section in ("Spawner", "KubeSpawner", "DnaSettings", "DnaSpawner"):
        if section in config:
            merged.merge(config[section])
    return merged


def notebook_server_from_config(config: Config) -> NotebookServer:
    """KubeSpawner's ``service_account`` and ``port`` as a hub with this config would see them
    (KubeSpawner turns port 0 into 8888)."""
    merged = spawner_config_section(config)
    service_account = merged.get("service_account") or DEFAULT_SERVICE_ACCOUNT
    port = int(merged.get("port") or 8888)
    return NotebookServer(service_account=str(service_account), port=port)


def subdomain_host_from_config(config: Config) -> str:
    """``JupyterHub.subdomain_host`` of this config ('' if unset)."""
    section = config.JupyterHub if "JupyterHub" in config else {}
    return str(section.get("subdomain_host") or "")


def request_timeout_from_config(config: Config) -> float:
    """KubeSpawner's ``k8s_api_request_timeout`` (seconds per request; its default 3)."""
    return float(spawner_config_section(config).get("k8s_api_request_timeout") or 3)


@dataclass(frozen=True)
class ProfileClients:
    """The Kubernetes clients a spawn, a login or a CLI command uses, built once together."""

    api: KubeApi
    provisioner: ProfileProvisioner
    contributors: ContributorSync


class DnaSettings(LoggingConfigurable):
    """dna_hub's settings: the traits, their validators, and builders of what they configure.

    Config sections ``DnaSettings`` and ``DnaSpawner`` both apply (the spawner inherits this
    class); documentation and values files use ``c.DnaSpawner``.
    """

    @classmethod
    def from_config(cls, config: Config, log: logging.Logger | None = None) -> DnaSettings:
        """The settings a hub with this config has, without a spawner (CLI, login hook).

        Raises :class:`ConfigurationError` naming the trait when a value is invalid.
        """
        section = Config()
        for name in ("DnaSettings", "DnaSpawner"):  # as traitlets orders a DnaSpawner's
            if name in config:
                section.merge(config[name])
        try:
            settings = cls(config=Config({"DnaSettings": section}))
        except (TraitError, ValueError) as e:
            # traitlets validators raise either: both mean the configuration is invalid
            raise ConfigurationError("invalid DnaSpawner configuration", str(e)) from e
        if log is not None:
            settings.log = log
        return settings

    # --- where the notebook runs ------------------------------------------------------------

    namespace_template = Unicode(
        DEFAULT_NAMESPACE_TEMPLATE,
        config=True,
        help="""Template of each user's namespace (= Kubeflow Profile name).

        Must contain {username} exactly once and nothing else to substitute. The username is
        made a valid, collision-free DNS label with KubeSpawner's safe slugs (hash suffix where
        needed), and the whole name fits in 63 characters. Users never choose it. Changing it
        moves every user to a new, empty profile.
        """,
    )

    @validate("namespace_template")
    def _validate_namespace_template(self, proposal: dict[str, Any]) -> str:
        validate_namespace_template(proposal["value"])
        return proposal["value"]

    hub_namespace = Unicode(
        config=True,
        help="""Namespace the hub and proxy run in. Profile network and Istio policies let
        only this namespace (and the profile's own) reach notebook servers.
        Default: $POD_NAMESPACE, else the hub pod's own namespace, else 'jupyterhub'.""",
    )

    @default("hub_namespace")
    def _hub_namespace_default(self) -> str:
        return hub_namespace_from_environment()

    # --- the Kubeflow profile ---------------------------------------------------------------

    profile_template_dirs = List(
        Unicode(),
        config=True,
        help="""Extra directories of profile templates (*.yaml.j2), searched before the
        defaults shipped with dna_hub: a file with a default's name replaces it, others add
        objects. See profile-templates/README.md for the template variables.""",
    )

    profile_template_variables = Dict(
        config=True,
        help="""Extra values for profile templates, available as {{ extra.NAME }}.""",
    )

    profile_owner_auth_state_key = Unicode(
        KUBEFLOW_USERID_KEY,
        config=True,
        help="""auth_state key holding the identity Kubeflow sees in the kubeflow-userid header
        (the Profile owner). DnaOIDCAuthenticator stores it under 'kubeflow_userid'.""",
    )

    profile_owner_fallback = Unicode(
        "",
        config=True,
        help="""Profile owner for deployments WITHOUT auth_state
        (Authenticator.enable_auth_state = False), as a template with {username} (e.g.
        '{username}@example.com'); every use is logged as a warning. With auth_state on it
        is ignored: a user without the owner in auth_state (admin-created, or spawned by an
        admin before their first login) must log in, because an owner built from the hub
        name could hand the profile to the wrong identity. Empty (default): such a spawn
        fails with a clear message.""",
    )

    @validate("profile_owner_fallback")
    def _validate_owner_fallback(self, proposal: dict[str, Any]) -> str:
        fields = {f for _, f, _, _ in string.Formatter().parse(proposal["value"]) if f is not None}
        if fields - {"username"}:
            raise ValueError(
                f"profile_owner_fallback {proposal['value']!r} may only use {{username}}, "
                f"not {sorted(fields - {'username'})}"
            )
        return proposal["value"]

    profile_resource_quota = Dict(
        config=True,
        help="""Kubernetes ResourceQuotaSpec for every profile (Profile.spec.resourceQuotaSpec),
        e.g. {"hard": {"cpu": "8", "memory": "32Gi"}}. Empty: no quota.""",
    )

    profile_group_resource_quotas = Dict(
        config=True,
        help="""Per-group ResourceQuotaSpec for personal profiles, {group: spec}, e.g.
        {"gpu-users": {"hard": {"requests.nvidia.com/gpu": "1"}}, "data-science": {"hard":
        {"cpu": "16"}}}. A user gets the FIRST entry (in the order written) whose hub group
        they are in, whole (never merged); users in none of them get profile_resource_quota.
        List the most specific group first. Team profiles have their own quota.""",
    )

    @validate("profile_group_resource_quotas")
    def _validate_group_quotas(self, proposal: dict[str, Any]) -> dict[str, Any]:
        check_group_quotas(proposal["value"])
        return proposal["value"]

    profile_limit_range = Dict(
        DEFAULT_LIMIT_RANGE,
        config=True,
        help="""Kubernetes LimitRangeSpec of the LimitRange 'dna-hub-defaults' in every profile
        namespace: default requests and limits for each container that sets none (pipeline
        steps, anything a user starts there), so a quota on requests never rejects them.
        Default: request 100m CPU and 256Mi memory, limit 2Gi memory, no CPU limit (CPU is
        compressible; a limit would only throttle while the node idles). Empty: no
        LimitRange.""",
    )

    kfp_namespace = Unicode(
        "kubeflow",
        config=True,
        help="Namespace of Kubeflow Pipelines' API server (ml-pipeline).",
    )

    legacy_envoy_filter = Bool(
        False,
        config=True,
        help="""LEGACY. Render an Istio EnvoyFilter that sets the kubeflow-userid header on the
        notebook's requests to ml-pipeline (overwriting any value the notebook sent), for KFP
        deployments that authenticate by header rather than by service-account token.""",
    )

    legacy_ml_pipeline_policy = Bool(
        False,
        config=True,
        help="""LEGACY. Render an Istio AuthorizationPolicy in kfp_namespace that lets this
        user's notebook service account reach ml-pipeline.""",
    )

    notebook_egress_blocked_cidrs = List(
        Unicode(),
        default_value=list(BLOCKED_EGRESS_CIDRS),
        config=True,
        help="""IPv4 ranges notebook pods may not reach (the profile NetworkPolicy's egress
        exceptions): cloud metadata services, whose credentials belong to the node. Default:
        all of link-local 169.254.0.0/16 (169.254.169.254 on most clouds, GKE's
        169.254.169.252, ECS's 169.254.170.2) and Alibaba Cloud's 100.100.100.200/32. Add
        your cloud's or your own; IPv6 egress is not opened at all.""",
    )

    @validate("notebook_egress_blocked_cidrs")
    def _validate_blocked_cidrs(self, proposal: dict[str, Any]) -> list[str]:
        cidrs = []
        for value in proposal["value"]:
            try:
                cidrs.append(str(ipaddress.IPv4Network(value, strict=True)))
            except ValueError as e:
                raise ValueError(
                    f"notebook_egress_blocked_cidrs: {value!r} is not an IPv4 CIDR ({e})"
                ) from e
        return cidrs

    profile_ready_timeout = Float(
        120.0,
        config=True,
        help="""Seconds to wait for the Kubeflow profile controller to create the user's
        namespace and default-editor service account before the spawn fails.""",
    )

    max_concurrent_provisioning = Integer(
        32,
        config=True,
        help="""Most profile provisionings the hub runs at once; more spawns wait their turn
        (their progress page says so). Bounds the work a login storm puts on the hub's event
        loop and on the API server. Read at the first spawn.""",
    )

    max_concurrent_watches = Integer(
        40,
        config=True,
        help="""Most watches (namespace, default-editor) provisioning keeps open at once. Each
        holds a connection of the Kubernetes client pool KubeSpawner shares (100 by
        default); spawns beyond this wait by polling instead, so a login storm cannot starve
        the hub's other requests. Keep it well below the pool size. Read at the first spawn.""",
    )

    freeze_startup_heap = Bool(
        True,
        config=True,
        help="""Freeze the hub's start-up heap (gc.freeze()) at the first spawn, so that
        CPython's full garbage collections no longer walk the ~280,000 objects JupyterHub,
        KubeSpawner and the Kubernetes client keep for the life of the process. Each such
        pass otherwise stalls the event loop that serves every user for 0.1 to 0.35 s, again
        and again during a login storm (BENCHMARKS.md). Costs only the garbage alive at
        that moment, which is then never freed. See dna_hub/hub/startup_heap.py.""",
    )

    reflector_relist_seconds = Integer(
        300,
        config=True,
        help="""How often KubeSpawner's shared pod and event reflectors list every object again
        (their watch timeout and maximum watch age). KubeSpawner's own 10 and 30 s make the
        hub fetch and decode every singleuser pod of the cluster (per-user namespaces: one
        cluster-wide list) several times a minute, on the event loop; with 500 pods each list
        is ~100,000 new objects, and the full garbage collections they set off stalled the hub
        for 0.1 to 0.3 s at a time (BENCHMARKS.md; jupyterhub/kubespawner#753). Between
        lists the watch keeps the reflector current; a dropped watch reconnects at once.""",
    )

    @validate("reflector_relist_seconds")
    def _validate_relist(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 10:
            raise ValueError("reflector_relist_seconds must be at least 10")
        return proposal["value"]

    @validate("max_concurrent_watches", "max_concurrent_provisioning")
    def _validate_at_least_one(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            raise ValueError(f"{proposal['trait'].name} must be at least 1")
        return proposal["value"]

    # --- team profiles (dna_hub/policy/teams.py, dna_hub/profiles/contributors.py) ------

    team_profiles = Dict(
        config=True,
        help="""Team Kubeflow profiles for OIDC groups: {group: "edit" | "view" | {"role":
        "edit" | "view", "resource_quota": ResourceQuotaSpec, "view_groups": [group, ...]}}
        (members of a view group are `view` contributors of the same team profile). At each
        spawn (and login, with the post_auth_hook dna_hub.team_login.sync_teams_at_login), for every
        configured group in the user's verified groups (auth_state, from the id_token) the
        team profile exists and the user is a Kubeflow contributor of it exactly as Kubeflow's
        access management writes one; contributor bindings dna_hub made that the groups no
        longer entitle are removed. `edit` members may run named servers in the team profile
        (the spawn form offers it). Empty (default): no teams.""",
    )

    team_namespace_template = Unicode(
        DEFAULT_TEAM_NAMESPACE_TEMPLATE,
        config=True,
        help="""Template of each team's namespace (= Kubeflow Profile name), with {group}
        exactly once. Same guarantees as namespace_template: a valid DNS label of at most 63
        characters, stable, collision-free (hash suffix where needed), reserved names
        refused. Keep its fixed part distinct from namespace_template's.""",
    )

    team_profile_owner = Unicode(
        "",
        config=True,
        help="""REMOVED: each team Profile is owned by the team's own identity,
        'dna-hub-team:<team namespace>' (dna_hub.policy.teams.team_owner), never by the hub's
        service account or a person; the admission guards admit nothing else. Setting it is
        refused. A Profile made by an older dna_hub (owned by the hub) must be migrated by an
        operator: docs/operations.md, "Team profiles owned by the hub".""",
    )

    @validate("team_profile_owner")
    def _validate_team_profile_owner(self, proposal: dict[str, Any]) -> str:
        if proposal["value"]:
            raise TraitError(
                "team_profile_owner was removed: each team Profile is owned by "
                "'dna-hub-team:<team namespace>', never the hub or a person (docs/operations.md)"
            )
        return ""

    team_contributor_principals = List(
        Unicode(),
        default_value=[DEFAULT_INGRESS_GATEWAY_PRINCIPAL, DEFAULT_KFP_UI_PRINCIPAL],
        config=True,
        help="""Istio principals a contributor's AuthorizationPolicy admits requests from
        (with the contributor's kubeflow-userid header): Kubeflow's ingress gateway and
        ml-pipeline-ui, as Kubeflow's access management writes them.""",
    )

    team_groups_auth_state_key = Unicode(
        "groups",
        config=True,
        help="""auth_state key holding the user's groups from the verified id_token
        (DnaOIDCAuthenticator stores them under 'groups'). Teams come only from there, never
        from anything a user posts.""",
    )

    team_shared_origin_risk_accepted = Bool(
        False,
        config=True,
        help="""Run team profiles without JupyterHub.subdomain_host, ACCEPTING THE RISK: then
        every user's server is served from the hub's own origin, so JavaScript in any
        notebook a user opens (e.g. a team mate's, or one a team mate edited in the shared
        team volume) runs with that user's hub cookies and can act as them: open and use
        their other servers (their personal Kubeflow identity) and call the hub API with
        their rights. With team profiles, team members share files and notebooks by design,
        which makes this easy; per-user origins (subdomain_host) confine each server to its
        own origin. False (default): team profiles without subdomain_host are refused.""",
    )

    # --- Kueue: GPU notebooks that queue instead of failing (docs/deploy.md, "GPU queueing")

    kueue_cluster_queue = Unicode(
        "",
        config=True,
        help="""The Kueue ClusterQueue every profile's LocalQueue points at (the platform defines
        it: flavors, quota, cohort). Empty (default): Kueue integration off — no LocalQueue is
        rendered and no pod is queued. When set, notebook pods that ask for one of
        `kueue_accelerators` carry the LocalQueue's name (kueue.x-k8s.io/queue-name) and wait
        for quota, showing their place, instead of failing.""",
    )
    kueue_group_cluster_queues = Dict(
        {},
        config=True,
        help="""Per-group ClusterQueues (per-group quotas): {group: cluster queue}. A team
        profile uses its group's entry; a personal profile the first entry (in this dict's
        order) whose group the user is in; otherwise `kueue_cluster_queue`.""",
    )
    kueue_local_queue = Unicode(
        "notebooks",
        config=True,
        help="The name of the LocalQueue rendered into each profile namespace.",
    )
    kueue_accelerators = List(
        Unicode(),
        list(DEFAULT_ACCELERATORS),
        config=True,
        help="""Extended resources that make a notebook queue: a pod whose resource limits or
        guarantees ask for any of them (e.g. through a server option's
        extra_resource_limits) is handed to Kueue; others start as before.""",
    )
    kueue_queue_timeout = Float(
        3600.0,
        config=True,
        help="""Seconds a queued notebook may wait for quota, on top of start_timeout (default
        one hour). The spawn page shows the place in the queue meanwhile; the user may cancel
        (stop the pending server). When it runs out the spawn ends with a message and the
        queued pod is deleted.""",
    )
    kueue_poll_interval = Float(
        3.0,
        config=True,
        help="Seconds between two looks at a queued notebook's Workload and its place.",
    )

    @validate("kueue_cluster_queue", "kueue_local_queue")
    def _validate_queue_name(self, proposal: Any) -> str:
        value = str(proposal.value)
        if value and not valid_queue_name(value):
            raise TraitError(
                f"DnaSpawner.{proposal.trait.name} {value!r} is not a DNS label "
                "(lowercase letters, digits and '-', at most 63)"
            )
        if proposal.trait.name == "kueue_local_queue" and not value:
            raise TraitError("DnaSpawner.kueue_local_queue may not be empty")
        return value

    @validate("kueue_group_cluster_queues")
    def _validate_group_queues(self, proposal: Any) -> dict[str, str]:
        value = dict(proposal.value)
        for group, queue in value.items():
            if not isinstance(group, str) or not isinstance(queue, str) or not group:
                raise TraitError(
                    "DnaSpawner.kueue_group_cluster_queues maps group names to ClusterQueue "
                    f"names, not {group!r}: {queue!r}"
                )
            if not valid_queue_name(queue):
                raise TraitError(
                    f"DnaSpawner.kueue_group_cluster_queues[{group!r}] = {queue!r} is not a "
                    "DNS label"
                )
        return value

    @validate("kueue_queue_timeout", "kueue_poll_interval")
    def _validate_kueue_seconds(self, proposal: Any) -> float:
        value = float(proposal.value)
        if not 0.1 <= value <= 7 * 86400:
            raise TraitError(
                f"DnaSpawner.{proposal.trait.name} must be 0.1 s to 7 days, not {proposal.value!r}"
            )
        return value

    @property
    def kueue_enabled(self) -> bool:
        return bool(self.kueue_cluster_queue or self.kueue_group_cluster_queues)

    def cluster_queue_for(self, groups: Iterable[str], *, team: str | None = None) -> str | None:
        """The ClusterQueue of a profile (None: Kueue off). See kueue_group_cluster_queues."""
        if not self.kueue_enabled:
            return None
        if team is not None:
            return self.kueue_group_cluster_queues.get(team) or self.kueue_cluster_queue or None
        member = set(groups)
        for group, queue in self.kueue_group_cluster_queues.items():
            if group in member:
                return str(queue)
        return self.kueue_cluster_queue or None

    team_sweep_grace = Float(
        120.0,
        config=True,
        help="""Seconds a contributor binding dna_hub made must exist before the team access
        sweep (`DnaOIDCAuthenticator.team_sweep_hook`) may delete it for an identity no hub
        user holds: a login's binding can be created a moment before its user record is
        saved. At least 1.""",
    )

    @validate("team_sweep_grace")
    def _validate_team_sweep_grace(self, proposal: Any) -> float:
        value = float(proposal.value)
        if value < 1:
            raise TraitError(
                f"DnaSpawner.team_sweep_grace must be at least 1 second, not {proposal.value!r}"
            )
        return value

    def check_team_isolation(self, subdomain_host: str | None) -> None:
        """ConfigurationError if team profiles are on without per-user origins (and the risk
        was not accepted by team_shared_origin_risk_accepted)."""
        if not self.team_profiles or subdomain_host or self.team_shared_origin_risk_accepted:
            return
        raise ConfigurationError(
            "Team profiles are misconfigured. Please contact your platform administrator.",
            "DnaSpawner.team_profiles needs JupyterHub.subdomain_host (per-user origins): "
            "without it every server shares the hub's origin and a notebook a team mate "
            "wrote can act as whoever opens it. Set JupyterHub.subdomain_host (wildcard DNS "
            "and TLS, docs/deploy.md), or DnaSpawner.team_shared_origin_risk_accepted = True "
            "to accept that risk",
        )

    @validate("team_profiles", "team_namespace_template")
    def _validate_teams(self, proposal: dict[str, Any]) -> Any:
        values = {
            "team_profiles": self.team_profiles,
            "team_namespace_template": self.team_namespace_template,
            proposal["trait"].name: proposal["value"],
        }
        try:
            parse_teams(values["team_profiles"], template=values["team_namespace_template"])
        except TeamConfigError as e:
            raise TraitError(str(e)) from e
        return proposal["value"]

    # --- server options gated by group (dna_hub/policy/server_options.py) ---------------

    server_options = List(
        Dict(),
        config=True,
        help="""The spawn form's server options: KubeSpawner profile_list entries (display_name,
        slug, description, default, kubespawner_override — e.g. extra_resource_limits
        {"nvidia.com/gpu": "1"}, node_selector, tolerations, image — and profile_options with
        their choices). Any entry, option or choice may name the groups allowed to see and use
        it under "dna_hub_groups" (a list; compared exactly with the groups of the verified
        token, team_groups_auth_state_key); without it, it is everyone's. What the form posts
        is checked again at spawn: a hidden entry is refused (403) before anything is
        created. Team choices (team_profiles) follow these entries on named servers. Empty
        (default): no server options. "dna_hub_groups" is honoured in a profile_list set
        directly as well.""",
    )

    @validate("server_options")
    def _validate_server_options(self, proposal: dict[str, Any]) -> Any:
        for entry in proposal["value"]:
            problem = server_option_problem(entry)
            if problem:
                raise TraitError(f"server_options: {problem}")
        return proposal["value"]

    profile_retention = Unicode(
        "keep",
        config=True,
        help="""What happens to a user's Kubeflow profile when the hub deletes the user (an
        admin deletes them, or z2jh's culler removes them). Only 'keep': the Profile is
        marked orphaned (label dna-hub.io/orphaned=true, annotation dna-hub.io/orphaned-at)
        and nothing else changes; `dna-hub gc`, run by an operator, lists and deletes old
        orphans on request, and a user who comes back gets the same profile. ('delete' was
        removed and is refused: the hub may never delete a Profile — deleting one deletes its
        namespace and every volume in it.)""",
    )

    @validate("profile_retention")
    def _validate_retention(self, proposal: dict[str, Any]) -> str:
        if proposal["value"] == "delete":
            raise TraitError(DELETE_REMOVED)
        if proposal["value"] not in RETENTION_POLICIES:
            raise TraitError(
                f"profile_retention must be one of {list(RETENTION_POLICIES)}, "
                f"not {proposal['value']!r}"
            )
        return proposal["value"]

    # --- the notebook's access to Kubeflow Pipelines ----------------------------------------

    kfp_endpoint = Unicode(
        "http://ml-pipeline.kubeflow:8888",
        config=True,
        help="Kubeflow Pipelines API endpoint, set as KF_PIPELINES_ENDPOINT in the notebook.",
    )

    kfp_ui_endpoint = Unicode(
        "http://ml-pipeline-ui.kubeflow:80",
        config=True,
        help="Kubeflow Pipelines UI endpoint, set as KF_PIPELINES_UI_ENDPOINT in the notebook.",
    )

    kfp_ui_public_url = Unicode(
        "",
        config=True,
        help="""Browser-facing URL of the Kubeflow Pipelines UI (e.g.
        https://kubeflow.example.org/pipeline), used for the links Kale shows after an upload
        or a run. Empty: kfp_ui_endpoint, which is only right if browsers can reach it.""",
    )

    pipeline_uid = Integer(
        8737,
        config=True,
        help="""UID every pipeline step Kale generates runs as (non-root; 8737 matches Argo's
        workflow controller).""",
    )

    pipeline_gid = Integer(
        8737,
        config=True,
        help="GID every pipeline step Kale generates runs as (non-root).",
    )

    @validate("pipeline_uid", "pipeline_gid")
    def _validate_non_root(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] <= 0:
            raise ValueError(f"{proposal['trait'].name} must be a non-root id (> 0)")
        return proposal["value"]

    # --- builders: settings + plain values -> what the lower layers take ----------------------

    def teams(self) -> dict[str, Team]:
        """The configured teams by group (empty without team_profiles)."""
        try:
            return parse_teams(self.team_profiles, template=self.team_namespace_template)
        except TeamConfigError as e:
            raise ConfigurationError(
                "The team profiles are misconfigured. Please contact your platform administrator.",
                str(e),
            ) from e

    def personal_namespace(self, username: str) -> str:
        """The user's own namespace by the naming policy, or :class:`NamingError`."""
        try:
            namespace = namespace_for(username, self.namespace_template)
        except NamespacePolicyError as e:
            raise NamingError(
                "Your username cannot be mapped to a Kubeflow profile. "
                "Please contact your platform administrator.",
                str(e),
            ) from e
        self.check_personal_namespace(username, namespace)
        return namespace

    def _refuse_team_like(self, username: str, namespace: str) -> None:
        """NamingError if the personal namespace has the form of a team namespace."""
        try:
            clash = team_like_namespace(namespace, self.team_namespace_template)
        except TeamConfigError as e:
            raise ConfigurationError(
                "The team profiles are misconfigured. Please contact your platform administrator.",
                str(e),
            ) from e
        if clash:
            raise NamingError(
                f"Your username {username!r} gives a Kubeflow profile name reserved for team "
                "profiles, so your own profile cannot be created. Please contact your "
                "platform administrator.",
                f"user {username!r}: personal namespace {namespace!r} (namespace_template "
                f"{self.namespace_template!r}) has the form of team_namespace_template "
                f"{self.team_namespace_template!r}, so it is, or could become, a team's "
                "namespace; such usernames are refused (docs/deploy.md, 'Usernames that look "
                "like teams'); nothing written",
            )

    def check_personal_namespace(self, username: str, namespace: str) -> None:
        """A personal profile must never be, or look like, a team's namespace."""
        for team in self.teams().values() if self.team_profiles else ():
            if team.namespace == namespace:
                raise NamingError(
                    "Your username maps to a team's Kubeflow profile, so your own profile "
                    "cannot be created. Please contact your platform administrator.",
                    f"{username}'s personal namespace {namespace} is team {team.group!r}'s "
                    "namespace; nothing written",
                )
        self._refuse_team_like(username, namespace)

    def owner_of(
        self, username: str, auth_state: Mapping[str, Any] | None, *, auth_state_enabled: bool
    ) -> str:
        """The identity Kubeflow sees for this user: from auth_state, or the fallback."""
        owner = (auth_state or {}).get(self.profile_owner_auth_state_key)
        if isinstance(owner, str) and owner.strip():
            return owner
        if self.profile_owner_fallback:
            if not auth_state_enabled:
                fallback = self.profile_owner_fallback.format(username=username)
                self.log.warning(
                    "Profile owner of %s built from the hub name by profile_owner_fallback: %s",
                    username,
                    fallback,
                )
                return fallback
            self.log.warning(
                "profile_owner_fallback ignored for %s: it applies only with auth_state off",
                username,
            )
        raise ConfigurationError(
            "Your login did not provide the identity Kubeflow needs. Please log out and in again.",
            f"auth_state of {username} has no {self.profile_owner_auth_state_key!r} "
            "and DnaSpawner.profile_owner_fallback is not set",
        )

    def profile_context(
        self,
        *,
        username: str,
        namespace: str,
        owner: str,
        groups: Iterable[str],
        server: NotebookServer,
    ) -> ProfileContext:
        """The template context of a personal profile."""
        group_names = tuple(sorted(groups))
        return ProfileContext(
            username=username,
            namespace=namespace,
            owner=owner,
            hub_namespace=self.hub_namespace,
            groups=group_names,
            service_account=server.service_account,
            notebook_port=server.port,
            kfp_namespace=self.kfp_namespace,
            resource_quota=resource_quota_for(
                group_names, self.profile_group_resource_quotas, self.profile_resource_quota
            ),
            limit_range=self.profile_limit_range or None,
            legacy_envoy_filter=self.legacy_envoy_filter,
            legacy_ml_pipeline_policy=self.legacy_ml_pipeline_policy,
            extra=self.profile_template_variables,
            blocked_egress_cidrs=tuple(self.notebook_egress_blocked_cidrs),
            kueue_local_queue=self.kueue_local_queue,
            kueue_cluster_queue=self.cluster_queue_for(group_names),
        )

    def render_personal(
        self,
        *,
        username: str,
        namespace: str,
        owner: str,
        groups: Iterable[str],
        server: NotebookServer,
    ) -> RenderedProfile:
        """The user's own profile (CPU work: call it off the event loop)."""
        problem = kubeflow_identity_problem(owner)  # auth_state may be edited, or --owner
        if problem is not None:
            raise ConfigurationError(
                "Your login did not provide a usable Kubeflow identity. "
                "Please contact your platform administrator.",
                f"the Profile owner {owner!r} of {username} {problem}",
            )
        context = self.profile_context(
            username=username, namespace=namespace, owner=owner, groups=groups, server=server
        )
        return self._render(context, "Your Kubeflow profile could not be prepared.")

    def render_team(self, team: Team, server: NotebookServer) -> RenderedProfile:
        """A team's profile: the same templates, the team as data, no member in it."""
        base = self.profile_context(
            username=team.group,
            namespace=team.namespace,
            owner=team.owner,
            groups=(),
            server=server,
        )
        context = dataclasses.replace(
            base,
            resource_quota=team.resource_quota or self.profile_resource_quota or None,
            team=team.group,
            kueue_cluster_queue=self.cluster_queue_for((), team=team.group),
        )
        return self._render(context, "Your team's Kubeflow profile could not be prepared.")

    def _render(self, context: ProfileContext, what: str) -> RenderedProfile:
        try:
            return render_profile(context, self.profile_template_dirs)
        except TemplateError as e:
            raise TemplateRenderError(
                f"{what} Please contact your platform administrator.", str(e)
            ) from e

    def notebook_env_settings(self, namespace: str) -> NotebookEnvSettings:
        """The Kubeflow Pipelines settings of a notebook running in ``namespace``."""
        return NotebookEnvSettings(
            kfp_endpoint=self.kfp_endpoint,
            kfp_ui_endpoint=self.kfp_ui_endpoint,
            kfp_ui_link_base=self.kfp_ui_public_url or None,
            pipeline_uid=self.pipeline_uid,
            pipeline_gid=self.pipeline_gid,
            # Kale creates experiments and runs in the notebook's own profile.
            kfp_namespace=namespace,
        )

    def clients(
        self,
        api_client: Any,
        *,
        request_timeout: float,
        server: NotebookServer,
        log: logging.Logger | None = None,
    ) -> ProfileClients:
        """One KubeApi (its own request count), provisioner and contributor sync."""
        log = log or self.log
        api = KubeApi(
            api_client, request_timeout=request_timeout, max_watches=self.max_concurrent_watches
        )
        provisioner = ProfileProvisioner(
            api,
            ready_timeout=self.profile_ready_timeout,
            service_account=server.service_account,
            log=log,
            max_concurrent=self.max_concurrent_provisioning,
        )
        contributors = ContributorSync(
            api,
            provisioner,
            principals=self.team_contributor_principals,
            ready_timeout=self.profile_ready_timeout,
            log=log,
        )
        return ProfileClients(api=api, provisioner=provisioner, contributors=contributors)
