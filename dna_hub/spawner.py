"""``DnaSpawner``: KubeSpawner that starts each user's notebook in their own Kubeflow profile.

This class is glue and configuration. The work is done by pure modules (naming, rendering,
notebook environment) and one I/O module (provisioning); see the package README.
"""

from __future__ import annotations

import asyncio
import os
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubespawner import KubeSpawner
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default, validate

from .errors import ConfigurationError, ProvisioningError
from .hub_url import HUB_URL_VARIABLES, qualify_service_url
from .k8s.api import KubeApi
from .metrics import PROVISIONING_FAILURES
from .naming import (
    DEFAULT_NAMESPACE_TEMPLATE,
    NamespacePolicyError,
    namespace_for,
    validate_namespace_template,
)
from .notebook_env import NotebookEnvSettings, notebook_environment
from .provisioning import ProfileProvisioner, ProvisionResult
from .rendering import ProfileContext, RenderedProfile, TemplateError, render_profile

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
        help="""Profile owner to use when auth_state has no owner, as a template with
        {username} (e.g. '{username}@example.com'). Empty (default): such a spawn fails with a
        clear message, because guessing the owner would hand the profile to the wrong
        identity.""",
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

    @validate("max_concurrent_watches", "max_concurrent_provisioning")
    def _validate_at_least_one(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            raise ValueError(f"{proposal['trait'].name} must be at least 1")
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
        self._apply_namespace_policy(strict=False)

    def _apply_namespace_policy(self, *, strict: bool) -> None:
        """Put the notebook in the namespace the policy gives, whatever state or options say."""
        try:
            namespace = namespace_for(self.user.name, self.namespace_template)
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
        if self.namespace != namespace:
            self.namespace = namespace
            self.dns_name = self.dns_name_template.format(namespace=namespace, name=self.pod_name)

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
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
        self._apply_namespace_policy(strict=False)

    async def load_user_options(self) -> None:
        await super().load_user_options()
        # A profile_list override must not move a notebook out of its owner's namespace.
        self._apply_namespace_policy(strict=True)

    async def _ensure_namespace(self) -> None:
        """The profile controller creates the namespace, never KubeSpawner (see _start)."""

    def start(self) -> asyncio.Future:
        # Reset before KubeSpawner schedules _start, so progress() never sees a stale run.
        self._progress_messages.clear()
        self._provisioned.clear()
        return super().start()

    async def _start(self) -> Any:
        try:
            try:
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
            started = await super()._start()
        except BaseException:
            # The next spawn re-applies everything instead of trusting the digest.
            self._force_provision = True
            raise
        self._force_provision = False
        return started

    # --- provisioning -------------------------------------------------------------------------

    async def provision_profile(self) -> ProvisionResult:
        """Render and apply this user's Kubeflow profile; wait until it is ready."""
        try:
            self._apply_namespace_policy(strict=True)
            owner = await self.profile_owner()
            # Rendering is CPU work: off the hub's event loop, which serves everyone.
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
            return await provisioner.ensure(
                rendered, force=self._force_provision, progress=self._report_progress
            )
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
            return self.profile_owner_fallback.format(username=self.user.name)
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
            resource_quota=self.profile_resource_quota or None,
            legacy_envoy_filter=self.legacy_envoy_filter,
            legacy_ml_pipeline_policy=self.legacy_ml_pipeline_policy,
            extra=self.profile_template_variables,
        )

    def render_profile(self, owner: str) -> RenderedProfile:
        try:
            return render_profile(self.profile_context(owner), self.profile_template_dirs)
        except TemplateError as e:
            raise ConfigurationError(
                "Your Kubeflow profile could not be prepared. "
                "Please contact your platform administrator.",
                str(e),
                reason="template",
            ) from e

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

    async def delete_forever(self) -> None:
        """Deleting a hub user never deletes storage in their Kubeflow profile.

        The profile namespace, and the home PVC in it, belong to the Kubeflow identity and
        outlive the hub user; the hub's RBAC has no delete on persistentvolumeclaims.
        """
        if self.delete_pvc:
            self.log.warning(
                "Not deleting %s/%s of %s: DnaSpawner ignores delete_pvc (profile storage "
                "outlives the hub user; delete it in Kubeflow if intended)",
                self.namespace,
                self.pvc_name,
                self.user.name,
            )

    def _build_pod_labels(self, extra_labels: dict[str, str]) -> dict[str, str]:
        labels = super()._build_pod_labels(extra_labels)
        labels.update(REQUIRED_POD_LABELS)
        return labels

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        # The notebook runs in its profile namespace: a short hub Service name (z2jh's
        # hub_connect_url http://hub:8081) does not resolve there.
        for name in HUB_URL_VARIABLES:
            if name in env:
                env[name] = qualify_service_url(env[name], self.hub_namespace)
        env.update(notebook_environment(self.notebook_env_settings()))
        return env

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
