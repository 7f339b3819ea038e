"""``DnaSpawner``: KubeSpawner that starts each user's notebook in their own Kubeflow profile.

This class is glue and configuration. The work is done by pure modules (naming, rendering,
notebook environment) and one I/O module (provisioning); see the package README.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner
from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode, default, validate

from dna_hub.auth.claims import kubeflow_identity_problem
from dna_hub.errors import ConfigurationError, ProvisioningError
from dna_hub.hub import name_check, spawn_errors, startup_heap, team_choice
from dna_hub.hub.reflectors import LEAN_REFLECTORS
from dna_hub.k8s.api import KNOWN_KINDS, KubeApi
from dna_hub.k8s.retry import asks_to_retry, describe
from dna_hub.policy.hub_url import HUB_URL_VARIABLES, qualify_service_url
from dna_hub.policy.naming import (
    DEFAULT_NAMESPACE_TEMPLATE,
    NamespacePolicyError,
    namespace_for,
    validate_namespace_template,
)
from dna_hub.policy.notebook_env import NotebookEnvSettings, notebook_environment
from dna_hub.policy.pod_defaults import (
    CPU_REQUEST,
    DEFAULT_LIMIT_RANGE,
    MEMORY_LIMIT,
    MEMORY_REQUEST,
    SINGLEUSER_IMAGE,
)
from dna_hub.policy.quotas import check_group_quotas, resource_quota_for
from dna_hub.policy.rendering import (
    BLOCKED_EGRESS_CIDRS,
    ProfileContext,
    RenderedProfile,
    TemplateError,
    render_profile,
)
from dna_hub.policy.teams import (
    DEFAULT_INGRESS_GATEWAY_PRINCIPAL,
    DEFAULT_KFP_UI_PRINCIPAL,
    DEFAULT_TEAM_NAMESPACE_TEMPLATE,
    Team,
)
from dna_hub.profiles.api_token import (
    api_token_secret_name,
    create_api_token_secret,
    env_without_api_token,
)
from dna_hub.profiles.metrics import PROVISIONING_FAILURES
from dna_hub.profiles.offboarding import RETENTION_POLICIES, Offboarded, offboard
from dna_hub.profiles.provisioning import ProfileProvisioner, ProvisionResult

POD_KIND = KNOWN_KINDS[("v1", "Pod")]

#: auth_state key under which DnaOIDCAuthenticator stores the identity Kubeflow sees.
KUBEFLOW_USERID_KEY = "kubeflow_userid"

_RESTRICTED_CONTAINER_SECURITY_CONTEXT = {
    # Pod Security Standard "restricted": https://kubernetes.io/docs/concepts/security/pod-security-standards/
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


#: Labels every notebook pod carries, whatever extra_labels says (z2jh sets extra_labels from
#: singleuser.extraLabels, replacing any default): the access-ml-pipeline PodDefault selects
#: pods by it and mounts the KFP token into them.
REQUIRED_POD_LABELS = {"access-ml-pipeline": "true"}


def _hub_namespace_default() -> str:
    # z2jh sets POD_NAMESPACE on the hub; in any pod the service-account mount names it.
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if ns_file.exists():
        return ns_file.read_text().strip()
    return "jupyterhub"


class DnaSpawner(KubeSpawner):
    """Spawn each user's notebook in their own Kubeflow profile namespace.

    On start: render the user's profile resources from the templates, apply them (Profile
    first; the Kubeflow profile controller makes the namespace), wait until the namespace and
    its ``default-editor`` service account exist, then start the pod there as KubeSpawner does.
    """

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

    @validate("namespace")
    def _validate_namespace(self, proposal: dict[str, Any]) -> str:
        # Whoever sets the namespace — KubeSpawner's __init__ (which logs "Using user
        # namespace: ..." at once), saved state, a profile_list override — gets the policy's,
        # so neither the pod nor the log can name another one. An unmappable username keeps
        # the proposal here; _apply_namespace_policy reports it and a spawn refuses it.
        if self.user is None:
            return proposal["value"]
        try:
            return self._policy_namespace()
        except NamespacePolicyError:
            return proposal["value"]

    def _policy_namespace(self) -> str:
        """The team's namespace for a team server, else the user's own, by policy."""
        team = self.__dict__.get("team")  # not yet set while KubeSpawner's __init__ runs
        if team is not None:
            return team.namespace
        return namespace_for(self.user.name, self.namespace_template)

    hub_namespace = Unicode(
        config=True,
        help="""Namespace the hub and proxy run in. Profile network and Istio policies let
        only this namespace (and the profile's own) reach notebook servers.
        Default: $POD_NAMESPACE, else the hub pod's own namespace, else 'jupyterhub'.""",
    )

    @default("hub_namespace")
    def _hub_namespace_default(self) -> str:
        return _hub_namespace_default()

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
        "edit" | "view", "resource_quota": ResourceQuotaSpec}}. At each spawn (and login, with
        the post_auth_hook dna_hub.team_login.sync_teams_at_login), for every
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
        config=True,
        help="""Owner of every team Profile: a stable identity that is no person (changing a
        Profile's owner is broken in Kubeflow). Default: the hub's own service account,
        'system:serviceaccount:<hub_namespace>:hub' — Kubeflow's profile controller then
        makes the hub kubeflow-admin of team namespaces only, which is what lets it grant
        kubeflow-edit/kubeflow-view there (Kubernetes RBAC escalation prevention) without
        any cluster-wide 'bind' permission.""",
    )

    @default("team_profile_owner")
    def _team_profile_owner_default(self) -> str:
        return f"system:serviceaccount:{self.hub_namespace}:hub"

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

    @validate("team_profiles", "team_namespace_template")
    def _validate_teams(self, proposal: dict[str, Any]) -> Any:
        team_choice.check_config(self, **{proposal["trait"].name: proposal["value"]})
        return proposal["value"]

    profile_retention = Enum(
        RETENTION_POLICIES,
        default_value="keep",
        config=True,
        help="""What happens to a user's Kubeflow profile when the hub deletes the user (an
        admin deletes them, or z2jh's culler removes them).

        'keep' (default): the Profile is only marked orphaned (label dna-hub.io/orphaned=true,
        annotation dna-hub.io/orphaned-at) and nothing else changes; `dna-hub gc` lists and
        deletes old orphans on request, and a user who comes back gets the same profile.

        'delete': the Profile is DELETED, and with it the user's namespace and EVERYTHING IN
        IT — notebooks' volumes and their data, pipelines, runs, secrets. This cannot be
        undone. (helm-values/hub-rbac.yaml lets the hub delete Profiles; on Kubernetes >= 1.30
        helm-values/hub-object-guard.yaml admits only pending ones: see docs/operations.md.)
        A Profile dna_hub does not manage is never touched.""",
    )

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

    # --- secure defaults for KubeSpawner's own traits ---------------------------------------

    @default("enable_user_namespaces")
    def _enable_user_namespaces_default(self) -> bool:
        # One pod reflector across namespaces; the namespace itself comes from the policy.
        return True

    @default("service_account")
    def _service_account_default(self) -> str:
        return "default-editor"

    @default("uid")
    def _uid_default(self) -> int:
        return 1000

    @default("gid")
    def _gid_default(self) -> int:
        return 100

    @default("fs_gid")
    def _fs_gid_default(self) -> int:
        return 100

    @default("container_security_context")
    def _container_security_context_default(self) -> dict[str, Any]:
        return dict(_RESTRICTED_CONTAINER_SECURITY_CONTEXT)

    @default("pod_security_context")
    def _pod_security_context_default(self) -> dict[str, Any]:
        return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}

    @default("profile_list")
    def _profile_list_default(self) -> Any:
        # Computed per user and server at each form and spawn (dna_hub/hub/team_choice.py).
        return team_choice.profile_list if self.team_profiles else []

    async def _render_options_form_dynamically(self, current_spawner: Any) -> str:
        # KubeSpawner renders an empty form for an empty list; no choice means no form.
        choices = await team_choice.profile_list_of(self, current_spawner)
        return self._render_options_form(choices) if choices else ""

    @default("image")
    def _image_default(self) -> str:
        # The single-user image this repo builds, by version: never a moving `latest` tag.
        return SINGLEUSER_IMAGE

    @default("mem_guarantee")
    def _mem_guarantee_default(self) -> int:
        return self._byte_spec(MEMORY_REQUEST)

    @default("mem_limit")
    def _mem_limit_default(self) -> int:
        return self._byte_spec(MEMORY_LIMIT)

    @default("cpu_guarantee")
    def _cpu_guarantee_default(self) -> float:
        # No cpu_limit by design: CPU is compressible, and a CFS quota would only throttle
        # notebooks while the node's CPU is idle (dna_hub/policy/pod_defaults.py).
        return CPU_REQUEST

    def _byte_spec(self, value: str) -> int:
        return self.traits()["mem_limit"].validate(self, value)

    @default("extra_labels")
    def _extra_labels_default(self) -> dict[str, str]:
        # Shown for clarity; _build_pod_labels adds REQUIRED_POD_LABELS in any case.
        return dict(REQUIRED_POD_LABELS)

    @default("delete_pvc")
    def _delete_pvc_default(self) -> bool:
        return False

    # --- lifecycle ----------------------------------------------------------------------------

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._force_provision = False
        #: What the last provisioning did (requests, time, whether it was up to date).
        self.last_provision: ProvisionResult | None = None
        self._progress_messages: list[str] = []
        self._progress_changed = asyncio.Event()
        self._provisioned = asyncio.Event()
        #: The team profile this server runs in (None: the user's personal profile).
        self.team: Team | None = None
        self._apply_namespace_policy(strict=False)
        # Templates that give names Kubernetes refuses: refused here, once per configuration.
        name_check.check_spawner_names(self)

    def _apply_namespace_policy(self, *, strict: bool) -> None:
        """Put the notebook in the namespace the policy gives, whatever state or options say."""
        try:
            namespace = self._policy_namespace()
        except NamespacePolicyError as e:
            if strict:
                raise ConfigurationError(
                    "Your username cannot be mapped to a Kubeflow profile. "
                    "Please contact your platform administrator.",
                    str(e),
                    reason="naming",
                ) from e
            self.log.error("No namespace for %s: %s", self.user.name, e)
            return
        self.namespace = namespace
        dns_name = self.dns_name_template.format(namespace=namespace, name=self.pod_name)
        if self.dns_name != dns_name:  # e.g. one saved by an older configuration
            self.dns_name = dns_name

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.team:
            state["dna_team_group"] = self.team.group
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if state.get("dna_team_group"):
            # The namespace of a running team server comes from the policy, by its group.
            self.team = team_choice.saved_team(self, state["dna_team_group"])
        saved = state.get("namespace")
        self._apply_namespace_policy(strict=False)
        if saved and saved != self.namespace:
            self.log.warning(
                "Ignoring namespace %s saved for %s by older configuration; the policy gives %s"
                " (a pod left running there must be stopped by an admin)",
                saved,
                self.user.name,
                self.namespace,
            )

    def clear_state(self) -> None:
        super().clear_state()
        self.team = None
        self._apply_namespace_policy(strict=False)

    async def load_user_options(self) -> None:
        await super().load_user_options()
        # A profile_list override must not move a notebook out of its owner's namespace.
        self._apply_namespace_policy(strict=True)
        name_check.check_spawner_names(self)  # nor bring templates that give invalid names

    async def _ensure_namespace(self) -> None:
        """The profile controller creates the namespace, never KubeSpawner (see _start)."""

    def start(self) -> asyncio.Future:
        # Reset before KubeSpawner schedules _start, so progress() never sees a stale run.
        self._progress_messages.clear()
        self._provisioned.clear()
        return super().start()

    async def _start(self) -> Any:
        if self.freeze_startup_heap:
            startup_heap.freeze_startup_heap()
        self._api_token_secret = api_token_secret_name(self.pod_name)
        try:
            try:
                # Whatever the form posted, re-checked against the verified groups now.
                self.team = await team_choice.chosen_team(self)
                result = self.last_provision = await self.provision_profile()
            finally:
                self._provisioned.set()
                self._progress_changed.set()
            self.log.info(
                "Profile %s for %s %s (%d requests, %.2fs)",
                result.namespace,
                self.user.name,
                "up to date" if result.up_to_date else "provisioned",
                result.requests,
                result.seconds,
            )
            # A 4xx refusal of an object the spawn creates ends it in people's words.
            started = await spawn_errors.refusals_explained(
                super()._start(), namespace=self.namespace
            )
        except BaseException:
            # The next spawn re-applies everything instead of trusting the digest.
            self._force_provision = True
            raise
        self._force_provision = False
        return started

    async def _start_reflector(
        self, kind: str, reflector_class: Any, replace: bool = False, **kwargs: Any
    ) -> Any:
        # KubeSpawner relays these to the shared reflector it creates (once per hub).
        kwargs.setdefault("timeout_seconds", self.reflector_relist_seconds)
        kwargs.setdefault("restart_seconds", self.reflector_relist_seconds)
        reflector_class = LEAN_REFLECTORS.get(reflector_class, reflector_class)
        return await super()._start_reflector(kind, reflector_class, replace, **kwargs)

    async def _create_pod(self, pod: Any, request_timeout: float) -> bool:
        """Create the pod; False asks KubeSpawner's bounded backoff to try again.

        KubeSpawner retries only a 409. The API server also answers "try again" (429, or the
        500 ServerTimeout that Kubernetes < 1.24 gives while ``default-editor``'s token secret
        is being made — see :func:`dna_hub.k8s.retry.asks_to_retry`); a first spawn lands
        there right after the profile controller made the account. Other failures are
        logged without the pod spec (it holds the server's API token) and raised.
        """
        try:
            await asyncio.wait_for(
                self.api.create_namespaced_pod(self.namespace, pod), request_timeout
            )
        except TimeoutError:
            return False
        except ApiException as e:
            if asks_to_retry(e):
                self.log.info(
                    "Creating pod %s: the API server asked to retry (%s)",
                    pod.metadata.name,
                    describe(e),
                )
                return False
            if e.status == 409:
                # KubeSpawner's own handling: delete the stale pod, then retry.
                return await super()._make_create_pod_request(pod, request_timeout)
            self.log.error("Creating pod %s failed: %s", pod.metadata.name, describe(e))
            spawn_errors.raise_refusal(
                e, kind="Pod", name=pod.metadata.name, namespace=self.namespace
            )
            raise
        return True

    # --- provisioning -------------------------------------------------------------------------

    async def provision_profile(self) -> ProvisionResult:
        """Render and apply this user's Kubeflow profile; wait until it is ready."""
        try:
            self._apply_namespace_policy(strict=True)
            team_choice.check_personal_namespace(self)
            owner = await self.profile_owner()
            # Rendering is CPU work: off the hub's event loop, which serves everyone.
            if self.team:
                rendered = await asyncio.to_thread(team_choice.render_team, self, self.team)
            else:
                rendered = await asyncio.to_thread(self.render_profile, owner)
        except ProvisioningError as e:
            PROVISIONING_FAILURES.labels(e.reason).inc()
            self.log.error("Cannot provision a profile for %s: %s", self.user.name, e)
            raise
        provisioner = ProfileProvisioner(
            KubeApi(
                self.api.api_client,
                request_timeout=self.k8s_api_request_timeout,
                max_watches=self.max_concurrent_watches,
            ),
            ready_timeout=self.profile_ready_timeout,
            service_account=self.service_account or "default-editor",
            log=self.log,
            max_concurrent=self.max_concurrent_provisioning,
        )
        try:
            teams = team_choice.sync_at_spawn(self, owner)
            if self.team:  # a team server needs its team (and its contributor) first
                await teams
                return await provisioner.ensure(
                    rendered, force=self._force_provision, progress=self._report_progress
                )
            # a personal server does not wait for the teams (their failures are logged)
            _, result = await asyncio.gather(
                teams,
                provisioner.ensure(
                    rendered, force=self._force_provision, progress=self._report_progress
                ),
            )
            return result
        except ProvisioningError as e:
            self.log.error("Provisioning profile %s failed: %s", self.namespace, e)
            raise

    async def profile_owner(self) -> str:
        """The identity Kubeflow sees for this user: from auth_state, or the fallback."""
        auth_state = await self.user.get_auth_state() or {}
        owner = auth_state.get(self.profile_owner_auth_state_key)
        if isinstance(owner, str) and owner.strip():
            return owner
        if self.profile_owner_fallback:
            if getattr(self.authenticator, "enable_auth_state", None) is False:
                fallback = self.profile_owner_fallback.format(username=self.user.name)
                self.log.warning(
                    "Profile owner of %s built from the hub name by profile_owner_fallback: %s",
                    self.user.name,
                    fallback,
                )
                return fallback
            self.log.warning(
                "profile_owner_fallback ignored for %s: it applies only with auth_state off",
                self.user.name,
            )
        raise ConfigurationError(
            "Your login did not provide the identity Kubeflow needs. Please log out and in again.",
            f"auth_state of {self.user.name} has no {self.profile_owner_auth_state_key!r} "
            "and DnaSpawner.profile_owner_fallback is not set",
        )

    def profile_context(self, owner: str) -> ProfileContext:
        return ProfileContext(
            username=self.user.name,
            namespace=self.namespace,
            owner=owner,
            hub_namespace=self.hub_namespace,
            groups=tuple(sorted(g.name for g in getattr(self.user, "groups", []) or [])),
            service_account=self.service_account or "default-editor",
            notebook_port=self.port,
            kfp_namespace=self.kfp_namespace,
            resource_quota=resource_quota_for(
                (g.name for g in getattr(self.user, "groups", []) or []),
                self.profile_group_resource_quotas,
                self.profile_resource_quota,
            ),
            limit_range=self.profile_limit_range or None,
            legacy_envoy_filter=self.legacy_envoy_filter,
            legacy_ml_pipeline_policy=self.legacy_ml_pipeline_policy,
            extra=self.profile_template_variables,
            blocked_egress_cidrs=tuple(self.notebook_egress_blocked_cidrs),
        )

    def render_profile(self, owner: str) -> RenderedProfile:
        problem = kubeflow_identity_problem(owner)  # auth_state may be edited, or --owner
        if problem is not None:
            raise ConfigurationError(
                "Your login did not provide a usable Kubeflow identity. "
                "Please contact your platform administrator.",
                f"the Profile owner {owner!r} of {self.user.name} {problem}",
                reason="config",
            )
        try:
            return render_profile(self.profile_context(owner), self.profile_template_dirs)
        except TemplateError as e:
            raise ConfigurationError(
                "Your Kubeflow profile could not be prepared. "
                "Please contact your platform administrator.",
                str(e),
                reason="template",
            ) from e

    # --- offboarding ---------------------------------------------------------------------------

    async def delete_forever(self) -> None:
        """JupyterHub deletes this server for good: for the default server, the user is
        being deleted, and profile_retention decides the profile's fate ('keep': nothing but
        the mark changes; 'delete': the namespace goes with everything in it).

        KubeSpawner would delete the server's volume here (delete_pvc); DnaSpawner never
        does: the home PVC belongs to the Kubeflow profile and outlives the hub user, and
        the hub's RBAC has no delete on persistentvolumeclaims.
        """
        if self.delete_pvc:
            self.log.warning(
                "Not deleting %s/%s of %s: DnaSpawner ignores delete_pvc (profile storage "
                "outlives the hub user; delete it in Kubeflow if intended)",
                self.namespace,
                self.pvc_name,
                self.user.name,
            )
        if self.name:
            return  # a named server is deleted, not the user: the profile stays as it is
        await self.offboard_profile()

    async def offboard_profile(self) -> Offboarded:
        api = KubeApi(self.api.api_client, request_timeout=self.k8s_api_request_timeout)
        return await offboard(
            api, self.namespace, self.user.name, self.profile_retention, logger=self.log
        )

    # --- the pod ------------------------------------------------------------------------------

    def notebook_env_settings(self) -> NotebookEnvSettings:
        return NotebookEnvSettings(
            kfp_endpoint=self.kfp_endpoint,
            kfp_ui_endpoint=self.kfp_ui_endpoint,
            kfp_ui_link_base=self.kfp_ui_public_url or None,
            pipeline_uid=self.pipeline_uid,
            pipeline_gid=self.pipeline_gid,
            # Kale creates experiments and runs in the user's own profile.
            kfp_namespace=self.namespace,
        )

    def _build_pod_labels(self, extra_labels: dict[str, str]) -> dict[str, str]:
        labels = super()._build_pod_labels(extra_labels)
        labels.update(REQUIRED_POD_LABELS)
        return labels

    def get_env(self) -> dict[str, Any]:
        env = super().get_env()
        # The notebook runs in its profile namespace: a short hub Service name (z2jh's
        # hub_connect_url http://hub:8081) does not resolve there.
        for name in HUB_URL_VARIABLES:
            if name in env:
                env[name] = qualify_service_url(env[name], self.hub_namespace)
        env.update(notebook_environment(self.notebook_env_settings()))
        # The API token lives in a Secret the pod owns, never in the pod spec (api_token.py).
        return env_without_api_token(env, self.api_token_secret)

    @property
    def api_token_secret(self) -> str:
        """Name of this start's API-token Secret (fresh per start, see _start)."""
        if not getattr(self, "_api_token_secret", None):
            self._api_token_secret = api_token_secret_name(self.pod_name)
        return self._api_token_secret

    async def _make_create_pod_request(self, pod: Any, request_timeout: float) -> bool:
        created = await self._create_pod(pod, request_timeout)
        if created:
            api = KubeApi(self.api.api_client, request_timeout=self.k8s_api_request_timeout)
            found = await api.get(POD_KIND, self.pod_name, self.namespace)
            if found is None:
                return False  # gone again already: KubeSpawner creates it anew
            secret = create_api_token_secret(
                api,
                name=self.api_token_secret,
                namespace=self.namespace,
                token=self.api_token,
                pod_name=self.pod_name,
                pod_uid=found["metadata"]["uid"],
            )
            await spawn_errors.refusals_explained(
                secret, kind="Secret", name=self.api_token_secret, namespace=self.namespace
            )
        return created

    async def _make_create_pvc_request(self, pvc: Any, request_timeout: float) -> bool:
        created = super()._make_create_pvc_request(pvc, request_timeout)
        return await spawn_errors.refusals_explained(
            created, kind="PersistentVolumeClaim", name=pvc.metadata.name, namespace=self.namespace
        )

    # --- progress -----------------------------------------------------------------------------

    def _report_progress(self, message: str) -> None:
        self._progress_messages.append(message)
        self._progress_changed.set()

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Provisioning steps first ("Provisioning your Kubeflow profile…"), then pod events."""
        sent = 0
        while True:
            self._progress_changed.clear()
            while sent < len(self._progress_messages):
                yield {"progress": 5 + 5 * sent, "message": self._progress_messages[sent]}
                sent += 1
            if self._provisioned.is_set():
                break
            try:
                await asyncio.wait_for(self._progress_changed.wait(), timeout=1)
            except TimeoutError:
                pass
        async for event in super().progress():
            yield event
