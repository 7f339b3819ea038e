"""``DnaSpawner``: KubeSpawner that starts each user's notebook in their own Kubeflow profile.

This class is glue and configuration. The work is done by pure modules (naming, rendering,
notebook environment) and one I/O module (provisioning); see the package README.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner
from traitlets import default, validate

from dna_hub.errors import ApiFailure, DnaHubError, NamingError, ServerNotStarted
from dna_hub.hub import name_check, server_choice, spawn_errors, startup_heap, team_choice
from dna_hub.hub.queue_watch import QueueWatch, stop_reason
from dna_hub.hub.reflectors import LEAN_REFLECTORS
from dna_hub.hub.settings import (
    DEFAULT_SERVICE_ACCOUNT,
    KUBEFLOW_USERID_KEY,
    DnaSettings,
    NotebookServer,
    ProfileClients,
    subdomain_host_from_config,
)
from dna_hub.k8s.api import KNOWN_KINDS
from dna_hub.k8s.retry import asks_to_retry, describe
from dna_hub.policy.hub_url import HUB_URL_VARIABLES, qualify_service_url
from dna_hub.policy.labels import REQUIRED_POD_LABELS
from dna_hub.policy.naming import NamespacePolicyError, namespace_for
from dna_hub.policy.notebook_env import notebook_environment
from dna_hub.policy.pod_defaults import CPU_REQUEST, MEMORY_LIMIT, MEMORY_REQUEST, SINGLEUSER_IMAGE
from dna_hub.policy.queueing import (
    QUEUE_LABEL,
    accelerator_requests,
    eviction_message,
    queue_timeout_message,
)
from dna_hub.policy.rendering import RenderedProfile
from dna_hub.policy.spawn_progress import ProgressMessage, explain_event
from dna_hub.policy.teams import Team
from dna_hub.profiles.api_token import (
    api_token_secret_name,
    create_api_token_secret,
    env_without_api_token,
)
from dna_hub.profiles.metrics import PROVISIONING_FAILURES
from dna_hub.profiles.offboarding import Offboarded, offboard
from dna_hub.profiles.provisioning import ProvisionResult

__all__ = ["KUBEFLOW_USERID_KEY", "REQUIRED_POD_LABELS", "DnaSpawner"]

POD_KIND = KNOWN_KINDS[("v1", "Pod")]

_RESTRICTED_CONTAINER_SECURITY_CONTEXT = {
    # Pod Security Standard "restricted": https://kubernetes.io/docs/concepts/security/pod-security-standards/
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _cause_margin(start_timeout: float) -> float:
    """How long before JupyterHub's own start timeout the wait for the pod gives up, so a
    pod that did not start ends with its known cause (JupyterHub's clock starts first)."""
    return min(5.0, 0.1 * start_timeout)


class DnaSpawner(DnaSettings, KubeSpawner):
    """Spawn each user's notebook in their own Kubeflow profile namespace.

    dna_hub's own options are :class:`~dna_hub.hub.settings.DnaSettings`'s; this class is
    their lifecycle: KubeSpawner's defaults made secure, and the start, stop and state of a
    server around KubeSpawner's own.

    On start: render the user's profile resources from the templates, apply them (Profile
    first; the Kubeflow profile controller makes the namespace), wait until the namespace and
    its ``default-editor`` service account exist, then start the pod there as KubeSpawner does.
    """

    # --- where the notebook runs: the policy's namespace, whatever sets it ------------

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

    # --- secure defaults for KubeSpawner's own traits ---------------------------------------

    @default("enable_user_namespaces")
    def _enable_user_namespaces_default(self) -> bool:
        # One pod reflector across namespaces; the namespace itself comes from the policy.
        return True

    @default("service_account")
    def _service_account_default(self) -> str:
        return DEFAULT_SERVICE_ACCOUNT

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
        # Computed per user and server at each form and spawn (dna_hub/hub/team_choice.py,
        # dna_hub/hub/server_choice.py).
        if self.team_profiles or self.server_options:
            return DnaSpawner.form_choices
        return []

    async def form_choices(self) -> list[dict[str, Any]]:
        """KubeSpawner's ``profile_list`` callable: the server options, then the team choices
        of this user's server (before the groups' gating, which the form and spawn apply)."""
        teams = await self.team_form_choices() if self.team_profiles else []
        return server_choice.form_entries(self.server_options, teams)

    async def team_form_choices(self) -> list[dict[str, Any]]:
        """The team choices of this user's server."""
        return team_choice.form_choices(
            self, self.user.name, self.name, await self.user.get_auth_state()
        )

    async def _profile_entries(self, current_spawner: Any) -> list[dict[str, Any]]:
        """``profile_list`` as KubeSpawner resolves it (called, sorted), initialized."""
        choices = self._sorted_dict_values(self.profile_list)
        if callable(choices):
            choices = choices(current_spawner)
            if inspect.isawaitable(choices):
                choices = await choices
        return list(self._get_initialized_profile_list(list(choices or [])))

    @default("options_form")
    def _options_form_default(self) -> Any:
        # Always rendered per user: an entry may be for some groups only, even in a fixed list.
        return self._render_options_form_dynamically if self.profile_list else ""

    async def _render_options_form_dynamically(self, current_spawner: Any) -> str:
        # KubeSpawner renders an empty form for an empty list; no choice means no form.
        choices = await server_choice.visible_to(
            self,
            await self._profile_entries(current_spawner),
            lambda: self.user.get_auth_state(),
        )
        return self._render_options_form(choices) if choices else ""

    async def _allowed_entries(self) -> list[dict[str, Any]]:
        """The entries this user may use, the posted choice checked among them (403 if not)."""
        return await server_choice.checked_options(
            self,
            await self._profile_entries(self),
            self.user_options,
            username=self.user.name,
            load_auth_state=lambda: self.user.get_auth_state(),
        )

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
        return int(self.traits()["mem_limit"].validate(self, value))  # type: ignore[attr-defined]

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
        #: start_timeout as configured: a queued spawn may wait kueue_queue_timeout longer
        self._configured_start_timeout = float(self.start_timeout)  # type: ignore[has-type]
        #: The accelerators this start's pod asked for when Kueue queues it ({}: not queued).
        self._queued: dict[str, str] = {}
        self._queue_watch: QueueWatch | None = None
        self._queue_messages: list[str] = []
        #: Why the queue stopped the last server (shown at the next start), if it did.
        self._stopped_by_queue = ""
        #: The uid of this server's pod when Kueue admitted it (poll() asks why it stopped).
        self._queued_pod_uid: str | None = None
        #: The uid the API server gave the pod this start created (the token Secret's owner).
        self._created_pod_uid: str | None = None
        self._apply_namespace_policy(strict=False)
        # Templates that give names Kubernetes refuses: refused here, once per configuration.
        name_check.check_spawner_names(self)

    def _apply_namespace_policy(self, *, strict: bool) -> None:
        """Put the notebook in the namespace the policy gives, whatever state or options say."""
        try:
            namespace = self._policy_namespace()
        except NamespacePolicyError as e:
            if strict:
                raise NamingError(
                    "Your username cannot be mapped to a Kubeflow profile. "
                    "Please contact your platform administrator.",
                    str(e),
                ) from e
            self.log.error("No namespace for %s: %s", self.user.name, e)
            return
        self.namespace = namespace
        dns_name = self.dns_name_template.format(namespace=namespace, name=self.pod_name)
        if self.dns_name != dns_name:  # type: ignore[has-type]  # saved by older config
            self.dns_name = dns_name

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.team:
            state["dna_team_group"] = self.team.group
        if self._stopped_by_queue:
            # kept through the stop (clear_state) for the next start's progress page, which
            # may be another spawner object loaded from the database
            state["dna_stopped_by_queue"] = self._stopped_by_queue
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._stopped_by_queue = str(state.get("dna_stopped_by_queue") or "")
        if state.get("dna_team_group"):
            # The namespace of a running team server comes from the policy, by its group.
            self.team = team_choice.saved_team(
                self,
                state["dna_team_group"],
                username=self.user.name,
                server_name=self.name,
                log=self.log,
            )
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
        # KubeSpawner's, on the entries the user's verified groups allow (what they chose is
        # checked against them again: the form is only what the browser posted)
        profile_list = await self._allowed_entries()
        self._validate_user_options(profile_list)
        selected = (self.user_options or {}).get("profile")
        if profile_list:
            self._load_profile(selected, profile_list)
        elif selected:
            self.log.warning("Profile %r requested, but no profile_lists are configured", selected)
        # A profile_list override must not move a notebook out of its owner's namespace.
        self._apply_namespace_policy(strict=True)
        name_check.check_spawner_names(self)  # nor bring templates that give invalid names

    async def _ensure_namespace(self) -> None:
        """The profile controller creates the namespace, never KubeSpawner (see _start)."""

    def start(self) -> asyncio.Future:
        # Reset before KubeSpawner schedules _start, so progress() never sees a stale run.
        self._progress_messages.clear()
        self._provisioned.clear()
        self._queued = {}
        self._queued_pod_uid = None
        self._queue_watch = None
        self._queue_messages.clear()
        if self._stopped_by_queue:
            self._progress_messages.append(self._stopped_by_queue)
            self._stopped_by_queue = ""
        self._start_deadline = time.monotonic() + self._configured_start_timeout
        # JupyterHub reads start_timeout right after start() returns: with Kueue on, a spawn
        # may queue, so its outer limit is longer; _start_pod keeps start_timeout for pods
        # that are not queued.
        self.start_timeout = self._configured_start_timeout + (
            self.kueue_queue_timeout if self.kueue_enabled else 0.0
        )
        return super().start()

    async def _start(self) -> Any:
        if self.freeze_startup_heap:
            startup_heap.freeze_startup_heap()
        self._api_token_secret = api_token_secret_name(self.pod_name)
        try:
            try:
                # team profiles need per-user origins (or the risk explicitly accepted)
                self.check_team_isolation(
                    (getattr(self.user, "settings", None) or {}).get("subdomain_host")
                    or subdomain_host_from_config(self.config)
                )
                # Whatever the form posted, re-checked against the verified groups now,
                # before anything is created.
                await self._allowed_entries()
                self.team = await team_choice.chosen_team(
                    self,
                    slug=(self.user_options or {}).get("profile"),
                    username=self.user.name,
                    server_name=self.name,
                    load_auth_state=lambda: self.user.get_auth_state(),
                )
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
                self._start_pod(), namespace=self.namespace
            )
        except DnaHubError as e:
            # The next spawn re-applies everything instead of trusting the digest.
            self._force_provision = True
            # Shown in the user's words even when the spawn fails within its first second.
            raise spawn_errors.shown_by_jupyterhub(e) from e.__cause__
        except BaseException:
            self._force_provision = True
            raise
        self._force_provision = False
        return started

    async def _start_pod(self) -> Any:
        """KubeSpawner's start of the pod; a pod that does not start in time ends the spawn
        with the cause its events name, in people's words (a timeout when none is known).

        A pod Kueue queues (it asked for an accelerator, see :meth:`_build_pod_labels`) may
        wait ``kueue_queue_timeout`` longer, its place in the queue shown meanwhile."""
        configured = self._configured_start_timeout
        deadline = getattr(self, "_start_deadline", time.monotonic() + configured)
        margin = _cause_margin(configured)
        task = asyncio.ensure_future(super()._start())
        watch: asyncio.Task[Any] | None = None
        try:
            while not task.done():
                if self._queued and watch is None:
                    deadline += self.kueue_queue_timeout
                    watch = asyncio.ensure_future(self._follow_queue())
                remaining = deadline - time.monotonic() - margin
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait({task}, timeout=min(max(remaining, 0.05), 0.5))
            return task.result()
        except TimeoutError as e:
            queue = self._queue_watch
            if queue is not None and queue.state.phase in ("pending", "unknown"):
                raise ServerNotStarted(
                    queue_timeout_message(
                        self._queued, self.kueue_local_queue, configured + self.kueue_queue_timeout
                    ),
                    f"pod {self.namespace}/{self.pod_name} still queued after "
                    f"{configured + self.kueue_queue_timeout:.0f}s ({queue.state.detail})",
                ) from e
            cause = self.known_cause()
            if cause is None:
                raise
            raise ServerNotStarted(
                cause.final_message,
                f"pod {self.namespace}/{self.pod_name} did not start in {configured}s "
                f"({cause.cause}): {cause.operator_detail}",
            ) from e
        finally:
            for pending in (task, watch):
                if pending is not None and not pending.done():
                    pending.cancel()

    async def _follow_queue(self) -> None:
        watch = self._queue_watch = QueueWatch(
            self.profile_clients().api,
            namespace=self.namespace,
            local_queue=self.kueue_local_queue,
            requests=self._queued,
            interval=self.kueue_poll_interval,
            pod_uid=self._pod_uid,
            report=self._report_queue,
            log=self.log,
        )
        state = await watch.run()
        if state.phase == "evicted":
            self._report_queue(eviction_message(state.detail))
        # a pod that went through the queue: if it stops, poll() asks Kueue why
        self._queued_pod_uid = self._pod_uid()

    def _reflected_pod(self) -> dict[str, Any] | None:
        reflector = getattr(self, "pod_reflector", None)
        if reflector is None:
            return None
        pod: dict[str, Any] | None = reflector.pods.get(f"{self.namespace}/{self.pod_name}")
        return pod

    def _pod_uid(self) -> str | None:
        uid = ((self._reflected_pod() or {}).get("metadata") or {}).get("uid")
        return str(uid) if uid else None

    async def poll(self) -> int | None:
        status = await super().poll()
        uid = self._queued_pod_uid
        if status is not None and uid and not self._stopped_by_queue:
            # Kueue stops a pod it evicts or preempts by deleting it: say why, in the log
            # now and on the progress page of the next start (JupyterHub cleans up the rest)
            self._queued_pod_uid = None
            try:
                detail = await stop_reason(
                    self.profile_clients().api, self.namespace, self.pod_name, uid
                )
            except (ApiException, TimeoutError, OSError) as e:
                self.log.warning("Why the queue stopped %s is unknown: %s", self.pod_name, e)
                detail = None
            if detail is not None:
                self.log.warning(
                    "Server %r of %s stopped by Kueue: %s", self.name, self.user.name, detail
                )
                self._stopped_by_queue = eviction_message(detail)
        return status

    def _report_queue(self, message: str) -> None:
        self._queue_messages.append(message)
        self._progress_changed.set()

    def known_cause(self) -> ProgressMessage | None:
        """The latest event of this server's pod that says in people's words why it is not
        running yet (dna_hub/policy/spawn_progress.py), if any."""
        for event in reversed(self.events):
            explained = explain_event(event.get("reason"), event.get("message"))
            if explained is not None:
                return explained
        return None

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
        self._created_pod_uid = None
        try:
            created = await asyncio.wait_for(
                self.api.create_namespaced_pod(self.namespace, pod), request_timeout
            )
            # The create's answer names the pod's uid: the API-token Secret's owner, without
            # reading the pod back (one request fewer per spawn, on every spawn).
            self._created_pod_uid = getattr(getattr(created, "metadata", None), "uid", None)
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

    @property
    def notebook_server(self) -> NotebookServer:
        """What the profile needs to know of this server (its service account and port)."""
        return NotebookServer(
            service_account=self.service_account or DEFAULT_SERVICE_ACCOUNT, port=self.port
        )

    def profile_clients(self) -> ProfileClients:
        """This spawn's Kubernetes clients, on KubeSpawner's shared API client."""
        return self.clients(
            self.api.api_client,
            request_timeout=self.k8s_api_request_timeout,
            server=self.notebook_server,
            log=self.log,
        )

    async def provision_profile(self) -> ProvisionResult:
        """Render and apply this user's Kubeflow profile; wait until it is ready."""
        auth_state = await self.user.get_auth_state()
        try:
            self._apply_namespace_policy(strict=True)
            if not self.team:
                self.check_personal_namespace(self.user.name, self.namespace)
            owner = self._owner(auth_state)
            # Rendering is CPU work: off the hub's event loop, which serves everyone.
            if self.team:
                rendered = await asyncio.to_thread(
                    self.render_team, self.team, self.notebook_server
                )
            else:
                rendered = await asyncio.to_thread(self.render_profile, owner)
        except DnaHubError as e:
            PROVISIONING_FAILURES.labels(e.reason).inc()
            self.log.error("Cannot provision a profile for %s: %s", self.user.name, e)
            raise
        clients = self.profile_clients()
        try:
            teams = team_choice.sync_at_spawn(
                self,
                clients.contributors,
                username=self.user.name,
                auth_state=auth_state,
                identity=owner,
                server=self.notebook_server,
                team=self.team,
                report=self._report_progress,
                log=self.log,
            )
            ensure = clients.provisioner.ensure(
                rendered, force=self._force_provision, progress=self._report_progress
            )
            if self.team:  # a team server needs its team (and its contributor) first
                await teams
                return await ensure
            # a personal server does not wait for the teams (their failures are logged)
            _, result = await asyncio.gather(teams, ensure)
            return result
        except DnaHubError as e:
            self.log.error("Provisioning profile %s failed: %s", self.namespace, e)
            raise

    async def profile_owner(self) -> str:
        """The identity Kubeflow sees for this user: from auth_state, or the fallback."""
        return self._owner(await self.user.get_auth_state())

    def _owner(self, auth_state: dict[str, Any] | None) -> str:
        enabled = getattr(self.authenticator, "enable_auth_state", None) is not False
        return self.owner_of(self.user.name, auth_state, auth_state_enabled=enabled)

    def user_groups(self) -> list[str]:
        """The user's hub groups (per-group quotas come from these)."""
        return [g.name for g in getattr(self.user, "groups", []) or []]

    def render_profile(self, owner: str) -> RenderedProfile:
        """This user's personal profile, rendered."""
        return self.render_personal(
            username=self.user.name,
            namespace=self.namespace,
            owner=owner,
            groups=self.user_groups(),
            server=self.notebook_server,
        )

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
        api = self.profile_clients().api
        return await offboard(
            api, self.namespace, self.user.name, self.profile_retention, logger=self.log
        )

    # --- the pod ------------------------------------------------------------------------------

    def _build_pod_labels(self, extra_labels: dict[str, str]) -> dict[str, str]:
        labels = super()._build_pod_labels(extra_labels)
        labels.update(REQUIRED_POD_LABELS)
        # A pod that asks for an accelerator waits in its profile's LocalQueue (Kueue gates
        # it until admitted); KubeSpawner builds the pod after load_user_options, so the
        # server option's resources are known here.
        self._queued = self._queue_requests()
        if self._queued:
            labels[QUEUE_LABEL] = self.kueue_local_queue
        else:
            labels.pop(QUEUE_LABEL, None)  # not from extra_labels either: not queued
        return labels

    def _queue_requests(self) -> dict[str, str]:
        """The accelerators this pod asks for, if its profile has a LocalQueue (else {})."""
        team = self.team.group if self.team else None
        if self.cluster_queue_for(self.user_groups(), team=team) is None:
            return {}
        return accelerator_requests(
            [self.extra_resource_limits, self.extra_resource_guarantees], self.kueue_accelerators
        )

    def get_env(self) -> dict[str, Any]:
        env = super().get_env()
        # The notebook runs in its profile namespace: a short hub Service name (z2jh's
        # hub_connect_url http://hub:8081) does not resolve there.
        for name in HUB_URL_VARIABLES:
            if name in env:
                env[name] = qualify_service_url(env[name], self.hub_namespace)
        env.update(notebook_environment(self.notebook_env_settings(self.namespace)))
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
            try:
                return await self._store_api_token()
            except (TimeoutError, OSError) as e:
                # KubeApi retried it already; a bare TimeoutError would reach the user as
                # "Spawn failed: " and the log as JupyterHub's start_timeout (issue 26's
                # 500-user storm). The pod exists: the failed spawn's stop deletes it.
                raise ApiFailure(
                    "The Kubernetes API did not answer while starting your server. "
                    "Please try again in a moment.",
                    f"store the API token of pod {self.namespace}/{self.pod_name} in Secret"
                    f" {self.api_token_secret}: {describe(e)}",
                ) from e
        return created

    async def _store_api_token(self) -> bool:
        """The API-token Secret of the pod just created; False: the pod is gone already
        (KubeSpawner's backoff creates it anew)."""
        api = self.profile_clients().api
        pod_uid = self._created_pod_uid
        if pod_uid is None:  # created by KubeSpawner's own path (after a 409): read it
            found = await api.get(POD_KIND, self.pod_name, self.namespace)
            if found is None:
                return False
            pod_uid = found["metadata"]["uid"]
        secret = create_api_token_secret(
            api,
            name=self.api_token_secret,
            namespace=self.namespace,
            token=self.api_token,
            pod_name=self.pod_name,
            pod_uid=pod_uid,
        )
        await spawn_errors.refusals_explained(
            secret, kind="Secret", name=self.api_token_secret, namespace=self.namespace
        )
        return True

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
        """Provisioning steps first ("Provisioning your Kubeflow profile…"), then pod events;
        an event whose cause is known (no GPU free, image cannot be pulled, ...) is shown in
        people's words (dna_hub/policy/spawn_progress.py), the event itself in ``raw_event``."""
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
        # then the pod's events, and the queue's messages while Kueue holds the pod
        events = aiter(super().progress())
        next_event: asyncio.Future[Any] = asyncio.ensure_future(anext(events))
        shown = 0
        try:
            while True:
                while shown < len(self._queue_messages):
                    yield {"progress": 50, "message": self._queue_messages[shown]}
                    shown += 1
                done, _ = await asyncio.wait({next_event}, timeout=0.5)
                if not done:
                    continue
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    break
                next_event = asyncio.ensure_future(anext(events))
                yield self._explained(event)
                queue = self._queue_watch
                if shown and queue is not None and queue.state.phase in ("pending", "unknown"):
                    # the page's headline is the last message: keep it the place in the queue
                    yield {"progress": 50, "message": self._queue_messages[shown - 1]}
            while shown < len(self._queue_messages):
                yield {"progress": 90, "message": self._queue_messages[shown]}
                shown += 1
        finally:
            next_event.cancel()

    def _explained(self, event: dict[str, Any]) -> dict[str, Any]:
        """A pod event whose cause is known, in people's words (the event in raw_event)."""
        raw = event.get("raw_event")
        explained = explain_event(raw.get("reason"), raw.get("message")) if raw else None
        if explained is not None:
            # people read what to do; the event itself stays in raw_event and the log
            self.log.info(
                "Pod %s/%s: %s (%s)",
                self.namespace,
                self.pod_name,
                explained.cause,
                explained.operator_detail,
            )
            event = {**event, "message": explained.message}
        return event
