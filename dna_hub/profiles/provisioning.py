"""Make a user's Kubeflow profile exist and match its rendered templates, safely and fast.

Order matters, and every step is safe to repeat, so a failed spawn leaves state the next
spawn converges from:

1. **Ownership first.** The Profile is read and the namespace listed by name, at once; if
   either belongs to someone else, nothing is written. A run that created the Profile and
   then finds the namespace taken by someone else leaves that Profile ``pending`` and says
   so: the hub may never delete a Profile (deleting one deletes its namespace and every
   volume in it; the admission guards refuse it), so an operator's ``dna-hub gc`` removes
   it (it lists such stranded Profiles).
2. **Up to date?** The Profile carries the digest of the last rendered set that was fully
   applied. Equal digest and the namespace is this owner's: done, two concurrent requests
   (Profile and namespace) in all.
3. **Profile.** Created (a create fails instead of overwriting a Profile that appeared in the
   meantime) or server-side applied, with the digest annotation set to ``pending`` so an
   interrupted run is never mistaken for a finished one.
4. **Wait** — by watch, not sleep-and-poll — until Kubeflow's profile controller has made the
   namespace (owned by this user) and the ``default-editor`` service account. The namespace
   is watched from the resourceVersion of step 1's listing (so that listing serves both the
   owner check and the wait), ``default-editor`` by a watch without a resourceVersion (the
   API server first sends what already exists as ADDED events): no list on the way. Watching
   is an optimisation: when a watch fails (410 Gone, a dropped connection) the wait lists,
   then watches from the list; a hub whose RBAC lacks ``watch`` on one of them, or that has
   no free watch slot, polls instead (list with growing pauses) and, for the RBAC, logs a
   warning naming the missing permission.
5. **Namespaced objects**, server-side applied (field manager ``dna-hub``).
6. **Digest** recorded on the Profile.

A brand-new user's first spawn of a profile of N objects (the Profile and N-1 namespaced
ones) therefore sends N + 5 requests (8 objects: 13) — read Profile ‖ list namespace,
create Profile (pending), watch namespace, the namespaced objects ‖ watch
``default-editor``, record the digest — whether the controller is faster than the hub or
not. A repeat spawn of an up-to-date profile sends 2.

One provisioning runs at a time per profile in this process, so two simultaneous spawns
of the same user cannot race; the second finds the work done.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.errors import (
    ApiFailure,
    ApiForbidden,
    DnaHubError,
    InvalidObject,
    OwnershipConflict,
    ProfileDeleting,
    ProfileNotReady,
    ProvisioningError,
    TemplateRenderError,
)
from dna_hub.k8s.api import NAMESPACE, PROFILE, SERVICE_ACCOUNT, Kind, KubeApi
from dna_hub.k8s.concurrency import LoopLimit
from dna_hub.k8s.retry import describe, is_retryable
from dna_hub.policy.labels import DIGEST_ANNOTATION, FIELD_MANAGER
from dna_hub.policy.rendering import RenderedProfile
from dna_hub.profiles.managed import is_orphaned
from dna_hub.profiles.metrics import (
    PROVISIONING_DURATION,
    PROVISIONING_FAILURES,
    PROVISIONING_REQUESTS,
)
from dna_hub.profiles.offboarding import unmark_orphaned

__all__ = ["DIGEST_ANNOTATION", "FIELD_MANAGER", "ProfileProvisioner", "ProvisionResult"]

PENDING = "pending"
#: The annotation Kubeflow's profile controller puts on a profile namespace.
NAMESPACE_OWNER_ANNOTATION = "owner"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ProvisionResult:
    namespace: str
    #: True when the profile was already up to date and nothing was written.
    up_to_date: bool
    #: Kubernetes API requests this provisioning sent, retries included.
    requests: int
    seconds: float


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def _terminating(namespace: Mapping[str, Any]) -> bool:
    return (namespace.get("status") or {}).get("phase") == "Terminating"


def with_digest(profile: Mapping[str, Any], digest: str) -> dict[str, Any]:
    manifest = copy.deepcopy(dict(profile))
    manifest["metadata"].setdefault("annotations", {})[DIGEST_ANNOTATION] = digest
    return manifest


def _apply_waves(objects: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Objects applied concurrently within a wave, waves in order.

    A RoleBinding goes after the Roles: the API server checks that the hub holds what the
    bound Role grants (escalation prevention), so the Role must exist by then.
    """
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    others = [o for o in objects if o["kind"] != "RoleBinding"]
    return [wave for wave in (others, bindings) if wave]


async def _all(*calls: Awaitable[Any]) -> list[Any]:
    """Run concurrently; on the first failure cancel the rest and raise that failure."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class ProfileProvisioner:
    """Provisions rendered profiles through a :class:`KubeApi`."""

    _locks: ClassVar[weakref.WeakValueDictionary[str, asyncio.Lock]] = weakref.WeakValueDictionary()
    #: At most this many provisionings run at once per event loop (the hub's one loop).
    #: Beyond it they queue: a login storm then costs the loop a bounded amount of work per
    #: iteration (its stalls stay short for everyone), and the API server is not flooded.
    max_concurrent: int = 32
    provisioning_limit: ClassVar[LoopLimit] = LoopLimit()

    def __init__(
        self,
        api: KubeApi,
        *,
        ready_timeout: float = 120.0,
        service_account: str = "default-editor",
        log: logging.Logger | logging.LoggerAdapter | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        self.api = api
        if max_concurrent is not None:
            self.max_concurrent = max_concurrent
        self.ready_timeout = ready_timeout
        self.service_account = service_account
        self.log = log or logging.getLogger(__name__)
        #: Resources this identity may list but not watch (a 403 on the watch): waits on
        #: them poll for the rest of this provisioner's life.
        self.unwatchable: set[str] = set()

    async def ensure(
        self,
        rendered: RenderedProfile,
        *,
        force: bool = False,
        progress: Progress | None = None,
    ) -> ProvisionResult:
        """Provision ``rendered``; ``force`` re-applies even when the digest matches."""
        namespace = rendered.profile["metadata"]["name"]
        lock = self._locks.get(namespace)
        if lock is None:
            lock = self._locks[namespace] = asyncio.Lock()
        started = time.perf_counter()
        requests_before = self.api.requests
        path = "full"
        try:
            report = progress or (lambda _: None)
            async with lock:
                slots = self.provisioning_limit.get(self.max_concurrent)
                if slots.locked():
                    report("Waiting for other users' profiles to be provisioned…")
                async with slots:
                    up_to_date = await self._ensure(rendered, force, report)
            path = "fast" if up_to_date else "full"
        except DnaHubError as e:
            PROVISIONING_FAILURES.labels(e.reason).inc()
            PROVISIONING_DURATION.labels("failure", path).observe(time.perf_counter() - started)
            raise
        finally:
            PROVISIONING_REQUESTS.inc(self.api.requests - requests_before)
        seconds = time.perf_counter() - started
        PROVISIONING_DURATION.labels("success", path).observe(seconds)
        return ProvisionResult(
            namespace=namespace,
            up_to_date=up_to_date,
            requests=self.api.requests - requests_before,
            seconds=seconds,
        )

    async def _ensure(self, rendered: RenderedProfile, force: bool, progress: Progress) -> bool:
        namespace = rendered.profile["metadata"]["name"]
        owner = rendered.profile["spec"]["owner"]["name"]
        # Both at once: the namespace's owner is checked on every path, the up-to-date one
        # included (a namespace replaced by someone else's must never get the notebook). The
        # namespace is listed (by name), not read: the list's resourceVersion is where the
        # wait below starts watching, so one request serves the check and the wait.
        profile, listing = await _all(
            self._request(f"read Profile {namespace}", self.api.get(PROFILE, namespace)),
            self._request(
                f"list namespace {namespace}",
                self.api.list(NAMESPACE, field_selector=f"metadata.name={namespace}"),
            ),
        )
        existing = next(
            (i for i in listing.get("items") or [] if i["metadata"]["name"] == namespace), None
        )
        if profile is not None:
            self._check_profile(profile, owner)
        ready = existing is not None and not _terminating(existing)
        if existing is not None and ready:
            self._check_namespace(existing, owner)
        if profile is not None and is_orphaned(profile):
            # The user is back (a deleted hub user's name, same owner): adopt it again
            # before anything else, so `dna-hub gc` no longer sees an orphan.
            await self._request(
                f"remove the orphan marks of Profile {namespace}",
                unmark_orphaned(self.api, namespace),
            )
        elif (
            ready
            and profile is not None
            and not force
            and _annotations(profile).get(DIGEST_ANNOTATION) == rendered.digest
        ):
            return True

        await self._check_namespaced(rendered)
        progress("Provisioning your Kubeflow profile…")
        await self._write_profile(rendered, owner, exists=profile is not None)
        # Not there yet (the usual first spawn): the wait watches from the listing, so it
        # sees the namespace appear even if that happened while the Profile was written. There
        # already: the wait lists it again, so its owner is checked after the Profile write.
        since = None if ready else listing["metadata"]["resourceVersion"]
        try:
            await self._wait_and_apply(rendered, owner, progress, since)
        except OwnershipConflict:
            if profile is None:
                # Never deleted by the hub (see the module docstring): stays pending, which
                # `dna-hub gc` lists as stranded, and claims nothing the other owner has.
                self.log.warning(
                    "Profile %s was created for %s, but its namespace belongs to someone "
                    "else; left pending for an operator (`dna-hub gc` lists it)",
                    namespace,
                    owner,
                )
            raise
        return False

    async def _wait_and_apply(
        self,
        rendered: RenderedProfile,
        owner: str,
        progress: Progress,
        namespace_since: str | None,
    ) -> None:
        """``namespace_since``: the resourceVersion of a listing that found no usable
        namespace, to watch from (None: the namespace was there; list it again).

        When the namespace is new, ``default-editor`` is too (most likely not there yet):
        it is watched without a list. Otherwise it is listed first, as it most likely exists
        — one request either way, and no watch for an identity that may only list (the
        ``dna-hub sync`` CronJob's).
        """
        namespace = rendered.profile["metadata"]["name"]

        # One deadline for the whole wait on the profile controller (namespace, then
        # default-editor), so ready_timeout bounds it as its help says.
        deadline = asyncio.get_running_loop().time() + self.ready_timeout
        progress(f"Waiting for namespace {namespace}…")
        await self._wait_for(
            NAMESPACE,
            None,
            namespace,
            lambda ns: self._namespace_ready(ns, owner),
            deadline,
            watch_first=namespace_since is not None,
            since=namespace_since,
        )
        progress("Applying your profile's access policies…")
        # The namespace exists: apply into it while the controller makes default-editor
        # (watched without a resourceVersion: if it exists already, it arrives as ADDED).
        await _all(
            self._apply_namespaced(rendered.namespaced),
            self._wait_for(
                SERVICE_ACCOUNT,
                namespace,
                self.service_account,
                lambda _: True,
                deadline,
                watch_first=namespace_since is not None,
            ),
        )
        await self._request(
            f"record the applied digest on Profile {namespace}",
            self.api.apply(
                with_digest(rendered.profile, rendered.digest), field_manager=FIELD_MANAGER
            ),
        )

    async def _check_namespaced(self, rendered: RenderedProfile) -> None:
        """Refuse, before anything is written, an object of a kind the API server reports
        as cluster-scoped: its metadata.namespace would be ignored and it would be applied
        cluster-wide (kinds are looked up once per process)."""
        for obj in rendered.namespaced:
            what = f"{obj['kind']} {obj['metadata']['name']!r} ({obj['apiVersion']})"
            try:
                kind = await self._request(
                    f"look up {what}", self.api.kind_for(obj["apiVersion"], obj["kind"])
                )
            except ValueError as e:
                raise TemplateRenderError(
                    "Your Kubeflow profile's templates are invalid. "
                    "Please contact your platform administrator.",
                    f"profile template renders {what}: {e}",
                ) from e
            if not kind.namespaced:
                raise TemplateRenderError(
                    "Your Kubeflow profile's templates are invalid. "
                    "Please contact your platform administrator.",
                    f"profile template renders {what}, which the API server reports as "
                    "cluster-scoped; profile templates may only render namespaced objects; "
                    "nothing written",
                )

    async def _apply_namespaced(self, objects: Sequence[Mapping[str, Any]]) -> None:
        for wave in _apply_waves(objects):
            await _all(
                *(
                    self._request(
                        f"apply {obj['kind']} {obj['metadata']['name']}",
                        self.api.apply(obj, field_manager=FIELD_MANAGER),
                    )
                    for obj in wave
                )
            )

    async def _write_profile(
        self, rendered: RenderedProfile, owner: str, *, exists: bool
    ) -> dict[str, Any]:
        namespace = rendered.profile["metadata"]["name"]
        manifest = with_digest(rendered.profile, PENDING)
        if not exists:
            try:
                # Not forced: if someone else's Profile of this name appeared since we
                # looked, its owner field conflicts and the apply fails instead of taking
                # the Profile over.
                return await self.api.apply(manifest, field_manager=FIELD_MANAGER, force=False)
            except ApiException as e:
                if e.status != 409:
                    raise self._api_failure(f"create Profile {namespace}", e) from e
                conflict = e
            except (TimeoutError, OSError) as e:
                # after KubeApi's retries; bare, it reached the user as "Spawn failed: "
                raise self._unanswered(f"create Profile {namespace}", e) from e
            current = await self._request(
                f"read Profile {namespace}", self.api.get(PROFILE, namespace)
            )
            if current is None:
                raise self._api_failure(f"create Profile {namespace}", conflict)
            self._check_profile(current, owner)
        return await self._request(
            f"apply Profile {namespace}", self.api.apply(manifest, field_manager=FIELD_MANAGER)
        )

    def _check_profile(self, profile: Mapping[str, Any], owner: str) -> None:
        name = profile["metadata"]["name"]
        found = (profile.get("spec") or {}).get("owner") or {}
        if found.get("name") != owner:
            raise OwnershipConflict(
                f"The Kubeflow profile {name} belongs to someone else, so it cannot be used for "
                "your notebook. Please contact your platform administrator.",
                f"Profile {name} is owned by {found.get('name')!r}, not {owner!r}; nothing written",
            )
        if profile["metadata"].get("deletionTimestamp"):
            raise ProfileDeleting(
                f"Your Kubeflow profile {name} is being deleted. Try again when it is gone.",
                f"Profile {name} has a deletionTimestamp",
            )

    def _check_namespace(self, namespace: Mapping[str, Any], owner: str) -> None:
        name = namespace["metadata"]["name"]
        found = _annotations(namespace).get(NAMESPACE_OWNER_ANNOTATION)
        if found != owner:
            raise OwnershipConflict(
                f"The namespace {name} already exists and does not belong to you, so your "
                "Kubeflow profile cannot be created. Please contact your platform administrator.",
                f"namespace {name} has owner annotation {found!r}, not {owner!r}; nothing written",
            )

    def _namespace_ready(self, namespace: Mapping[str, Any], owner: str) -> bool:
        if _terminating(namespace):
            return False  # the controller makes it anew once the old one is gone
        self._check_namespace(namespace, owner)
        return True

    async def _wait_for(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        accept: Callable[[dict[str, Any]], bool],
        deadline: float,
        *,
        watch_first: bool = False,
        since: str | None = None,
    ) -> dict[str, Any]:
        """List, then watch from the list's resourceVersion, until ``accept`` is true.

        ``watch_first``: first one watch and no list — from ``since`` (the resourceVersion
        of an earlier listing that found nothing acceptable) or, without it, from the
        current state (the server first sends what exists as ADDED events). If that watch
        cannot be opened or ends without the object (410 or another ERROR event, a dropped
        connection, a 403), the wait goes on by listing as above.

        A watch holds an HTTP connection for its whole life, from the pool every other
        request of the hub uses; so at most ``KubeApi.watch_slots`` are open at once, and a
        spawn that finds them all taken polls (list, with growing pauses) until one frees.
        A kind this identity may not watch (403) is polled the same way.
        """
        what = f"{kind.kind} {name}" + (f" in {namespace}" if namespace else "")
        selector = f"metadata.name={name}"
        pause = 0.25
        try:
            async with asyncio.timeout_at(deadline):
                slots = self.api.watch_slots()
                if watch_first and not slots.locked() and kind.plural not in self.unwatchable:
                    async with slots:
                        found = await self._watch_once(
                            kind, namespace, selector, since, accept, deadline, what
                        )
                    if found is not None:
                        return found
                while True:
                    listing = await self._request(
                        f"list {what}", self.api.list(kind, namespace, field_selector=selector)
                    )
                    for item in listing.get("items", []):
                        if accept(item):
                            return item
                    slots = self.api.watch_slots()
                    if slots.locked() or kind.plural in self.unwatchable:
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, 2.0)
                        continue
                    async with slots:
                        found = await self._watch_once(
                            kind,
                            namespace,
                            selector,
                            listing["metadata"]["resourceVersion"],
                            accept,
                            deadline,
                            what,
                        )
                    if found is not None:
                        return found
        except TimeoutError:
            raise ProfileNotReady(
                "Your Kubeflow profile was not ready in time. Please try again; if this keeps "
                "happening, contact your platform administrator.",
                f"{what} did not appear within {self.ready_timeout:.0f}s "
                "(is Kubeflow's profile controller running?)",
            ) from None

    async def _watch_once(
        self,
        kind: Kind,
        namespace: str | None,
        selector: str,
        resource_version: str | None,
        accept: Callable[[dict[str, Any]], bool],
        deadline: float,
        what: str,
    ) -> dict[str, Any] | None:
        """One watch from ``resource_version`` (None: from the current state, existing
        objects first as ADDED): the object, or None to list again."""
        remaining = max(1, int(deadline - asyncio.get_running_loop().time()))
        try:
            async for event in self.api.watch(
                kind,
                namespace,
                field_selector=selector,
                resource_version=resource_version,
                timeout_seconds=remaining,
            ):
                event_type = event.get("type")
                if event_type in ("ADDED", "MODIFIED") and accept(event["object"]):
                    return event["object"]
                if event_type == "ERROR":
                    return None  # e.g. 410 Gone: list again
        except ApiException as e:
            if e.status == 403:
                # Designed fallback, not an error: polling finds the object too, later.
                self.unwatchable.add(kind.plural)
                self.log.warning(
                    "may not watch %s (RBAC lacks 'watch %s'): polling for %s instead; "
                    "grant it as in helm-values/hub-rbac.yaml",
                    kind.plural,
                    kind.plural,
                    what,
                )
                return None
            if not is_retryable(e):
                raise self._api_failure(f"watch {what}", e) from e
            self.log.info("watch of %s answered %s; listing again", what, describe(e))
        except (aiohttp.ClientError, TimeoutError) as e:
            # A dropped or stalled watch is normal (API server restart, proxy idle timeout);
            # this TimeoutError is the request's own: the overall deadline cancels instead.
            self.log.info("watch of %s interrupted (%s); listing again", what, describe(e))
        await asyncio.sleep(0.5)  # so a failing server is not hammered
        return None

    async def _request(self, what: str, call: Any) -> Any:
        """Await one API call, turning a final failure into an actionable error."""
        try:
            return await call
        except ApiException as e:
            raise self._api_failure(what, e) from e
        except (TimeoutError, OSError) as e:
            raise self._unanswered(what, e) from e

    @staticmethod
    def _unanswered(what: str, error: BaseException) -> ApiFailure:
        return ApiFailure(
            "The Kubernetes API did not answer while setting up your Kubeflow profile. "
            "Please try again in a moment.",
            f"{what}: {describe(error)}",
        )

    def _api_failure(self, what: str, error: ApiException) -> ProvisioningError:
        if error.status == 403:
            return ApiForbidden(
                "JupyterHub is not allowed to set up your Kubeflow profile. "
                "Please contact your platform administrator.",
                f"{what}: {describe(error)} — check helm-values/hub-rbac.yaml is applied",
            )
        if error.status in (400, 422):
            return InvalidObject(
                "Your Kubeflow profile's configuration was rejected by the cluster. "
                "Please contact your platform administrator.",
                f"{what}: {describe(error)} — check the profile templates",
            )
        return ApiFailure(
            "The Kubernetes API failed while setting up your Kubeflow profile. "
            "Please try again in a moment.",
            f"{what}: {describe(error)}",
        )

    #: For what is written beside a profile (dna_hub.profiles.contributors): the same translation of
    #: API failures into errors a user and an admin can act on.
    request = _request
    api_failure = _api_failure
