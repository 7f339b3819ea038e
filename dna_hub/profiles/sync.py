"""Roll template changes out to every profile dna_hub manages, and prune what they dropped.

``dna-hub sync`` (dna_hub/cli/sync.py) is the day-2 reconciler: a template change otherwise
reaches a profile only when its user spawns again, and server-side apply never deletes an
object the templates stopped rendering. For each managed profile (:mod:`dna_hub.profiles.managed`:
dna_hub's label *and* its field manager; nothing else is ever touched) it

1. renders the profile again with the hub's own configuration, for the user, owner and
   groups recorded on the Profile at the last spawn (group changes arrive at the next login,
   when the identity provider says so);
2. applies it through
   :class:`~dna_hub.profiles.provisioning.ProfileProvisioner` — the same ownership
   checks, ordering, retries and digest as a spawn, forced so that drift is repaired too;
3. prunes: deletes every object labelled with this profile (and written by dna_hub) that the
   templates no longer render, in the profile's namespace and the extra namespaces the
   templates may write to (the KFP namespace of the legacy ml-pipeline policy).

With ``dry_run`` nothing is written: every object is sent as a server-side dry-run apply and
the answer compared with the live object, which gives the exact per-object diff (defaults
and admission included), plus the objects pruning would delete.

Each profile is independent and every step is safe to repeat: a run that fails half-way
(API errors after bounded retries) reports the profile as failed, and the next run
converges it. At most ``concurrency`` profiles are in flight at once.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.errors import DnaHubError
from dna_hub.k8s.api import KNOWN_KINDS, PROFILE, Kind, KubeApi
from dna_hub.k8s.retry import describe
from dna_hub.policy.rendering import PROFILE_LABEL, RenderedProfile, TemplateError
from dna_hub.policy.teams import CONTRIBUTOR_LABEL
from dna_hub.profiles.managed import (
    GROUPS_ANNOTATION,
    SELECTOR,
    belongs_to_profile,
    hub_groups,
    hub_username,
    is_managed,
    is_orphaned,
    team_group,
)
from dna_hub.profiles.provisioning import (
    DIGEST_ANNOTATION,
    FIELD_MANAGER,
    ProfileProvisioner,
    with_digest,
)

__all__ = ["DEFAULT_PRUNE_KINDS", "Change", "ProfileSync", "SyncResult"]

#: Renders a user's profile: (username, owner, groups) → the objects (the spawner's code).
Renderer = Callable[[str, str, Sequence[str]], RenderedProfile]
#: A team's profile by its OIDC group; None when the group is no longer a configured team.
TeamRenderer = Callable[[str], RenderedProfile | None]

#: Kinds the shipped templates render into namespaces, so pruning looks for them even after
#: the last template of a kind was removed. Kinds only your own templates render are added
#: with ``extra_prune_kinds`` (``dna-hub sync --prune-kind``).
DEFAULT_PRUNE_KINDS: tuple[Kind, ...] = tuple(
    KNOWN_KINDS[key]
    for key in (
        ("kubeflow.org/v1alpha1", "PodDefault"),
        ("v1", "LimitRange"),
        ("security.istio.io/v1", "AuthorizationPolicy"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("networking.istio.io/v1alpha3", "EnvoyFilter"),
    )
)

#: Server-populated fields left out of a dry-run diff: they change on every write.
_VOLATILE_METADATA = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")


@dataclass(frozen=True)
class Change:
    """One object a (dry) run creates, updates or deletes."""

    action: str  # "create" | "update" | "delete"
    kind: str
    namespace: str | None
    name: str
    diff: str = ""

    @property
    def what(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass
class SyncResult:
    profile: str
    username: str | None = None
    #: "converged", "no change", "would change", "skipped", "failed"
    status: str = "failed"
    changes: list[Change] = field(default_factory=list)
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def pruned(self) -> list[Change]:
        return [c for c in self.changes if c.action == "delete"]


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    """Identity of an object across API versions of its group."""
    metadata = obj["metadata"]
    return (_group(obj["apiVersion"]), obj["kind"], metadata.get("namespace"), metadata["name"])


def comparable(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``obj`` without what the server changes on every write (and dna_hub's digest)."""
    if obj is None:
        return None
    clean = copy.deepcopy(dict(obj))
    clean.pop("status", None)
    metadata = clean.get("metadata", {})
    for key in _VOLATILE_METADATA:
        metadata.pop(key, None)
    annotations = metadata.get("annotations") or {}
    annotations.pop(DIGEST_ANNOTATION, None)
    if not annotations:
        metadata.pop("annotations", None)
    return clean


def object_diff(live: Mapping[str, Any], wanted: Mapping[str, Any], what: str) -> str:
    before = yaml.safe_dump(comparable(live), sort_keys=True).splitlines()
    after = yaml.safe_dump(comparable(wanted), sort_keys=True).splitlines()
    return "\n".join(
        difflib.unified_diff(before, after, f"live {what}", f"rendered {what}", lineterm="")
    )


class ProfileSync:
    """Sync managed profiles through one :class:`KubeApi` (see the module docstring)."""

    def __init__(
        self,
        api: KubeApi,
        render: Renderer,
        *,
        render_team: TeamRenderer | None = None,
        prune_namespaces: Iterable[str] = (),
        extra_prune_kinds: Iterable[Kind] = (),
        concurrency: int = 4,
        ready_timeout: float = 120.0,
        service_account: str = "default-editor",
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.api = api
        self.render = render
        self.render_team = render_team
        self.prune_namespaces = tuple(prune_namespaces)
        self.prune_kinds = (*DEFAULT_PRUNE_KINDS, *extra_prune_kinds)
        self.concurrency = concurrency
        self.ready_timeout = ready_timeout
        self.service_account = service_account
        #: Most profiles that were in flight at once during the last run.
        self.max_in_flight = 0
        self._in_flight = 0

    # --- which profiles --------------------------------------------------------------------

    async def managed_profiles(
        self, users: Sequence[str] = (), namespace_for: Callable[[str], str] | None = None
    ) -> tuple[list[dict[str, Any]], list[SyncResult]]:
        """The managed Profiles to sync (all, or those of ``users``), and results for the
        users named that have none (never touched: unmanaged, or no Profile at all)."""
        listing = await self.api.list(PROFILE, label_selector=SELECTOR)
        managed = [p for p in listing.get("items", []) if is_managed(p)]
        if not users:
            return sorted(managed, key=lambda p: p["metadata"]["name"]), []
        by_user = {hub_username(p): p for p in managed}
        chosen: list[dict[str, Any]] = []
        missing: list[SyncResult] = []
        for user in dict.fromkeys(users):
            if user in by_user:
                chosen.append(by_user[user])
                continue
            try:
                name = namespace_for(user) if namespace_for else None
            except ValueError as e:
                missing.append(SyncResult("-", user, "failed", detail=str(e)))
                continue
            existing = await self.api.get(PROFILE, name) if name else None
            if existing is not None:
                missing.append(
                    SyncResult(
                        name or "-",
                        user,
                        "skipped",
                        detail="Profile not managed by dna_hub: left untouched",
                    )
                )
            else:
                missing.append(
                    SyncResult(name or "-", user, "failed", detail="no Profile for this user")
                )
        return chosen, missing

    # --- the run -----------------------------------------------------------------------------

    async def run(
        self,
        profiles: Sequence[Mapping[str, Any]],
        *,
        dry_run: bool = False,
        progress: Callable[[SyncResult], None] | None = None,
    ) -> list[SyncResult]:
        """Sync ``profiles``, at most ``concurrency`` at once; one result per profile."""
        slots = asyncio.Semaphore(self.concurrency)
        self.max_in_flight = 0

        async def one(profile: Mapping[str, Any]) -> SyncResult:
            async with slots:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
                try:
                    result = await self.sync_one(profile, dry_run=dry_run)
                finally:
                    self._in_flight -= 1
            if progress:
                progress(result)
            return result

        return list(await asyncio.gather(*(one(p) for p in profiles)))

    async def sync_one(self, profile: Mapping[str, Any], *, dry_run: bool) -> SyncResult:
        name = profile["metadata"]["name"]
        result = SyncResult(name, hub_username(profile))
        if not is_managed(profile):
            result.status, result.detail = "skipped", "not managed by dna_hub: left untouched"
            return result
        if is_orphaned(profile):
            result.status = "skipped"
            result.detail = "orphaned (its hub user was deleted): see dna-hub gc"
            return result
        if profile["metadata"].get("deletionTimestamp"):
            result.status, result.detail = "skipped", "being deleted"
            return result
        group = team_group(profile)
        if group is None and not result.username:
            result.detail = "the Profile has no dna-hub.io/hub-username annotation"
            return result
        if group is None and GROUPS_ANNOTATION not in (
            profile["metadata"].get("annotations") or {}
        ):
            # Rendered by a dna_hub that did not record groups: rendering it without them
            # could take a group's quota away. Its user's next spawn records them.
            result.status = "skipped"
            result.detail = "no dna-hub.io/hub-groups yet: synced after its user's next spawn"
            return result
        owner = ((profile.get("spec") or {}).get("owner") or {}).get("name")
        if not owner:
            result.detail = "the Profile has no spec.owner.name"
            return result
        try:
            # In this loop: a CLI's, never the hub's (renders take milliseconds).
            if group is not None:
                result.username = f"team {group}"
                team_profile = self.render_team(group) if self.render_team else None
                if team_profile is None:
                    result.status = "skipped"
                    result.detail = (
                        f"team profile of group {group!r}, which DnaSpawner.team_profiles no "
                        "longer configures: left as it is"
                    )
                    return result
                rendered = team_profile
            else:
                # a personal profile without a username was skipped above
                rendered = self.render(str(result.username), owner, hub_groups(profile))
            if rendered.profile["metadata"]["name"] != name:
                result.detail = (
                    f"the configuration now maps {result.username!r} to "
                    f"{rendered.profile['metadata']['name']!r}; this profile is left alone"
                )
                return result
            if dry_run:
                result.changes = await self._plan(profile, rendered)
                result.status = "would change" if result.changes else "no change"
            else:
                await ProfileProvisioner(
                    self.api,
                    ready_timeout=self.ready_timeout,
                    service_account=self.service_account,
                    max_concurrent=self.concurrency,
                ).ensure(rendered, force=True)
                result.changes = await self._prune(rendered)
                result.status = "converged"
        except DnaHubError as e:
            result.detail = e.detail or e.user_message
        except (TemplateError, ValueError) as e:
            result.detail = str(e)
        except (ApiException, TimeoutError, OSError) as e:
            result.detail = describe(e)
        return result

    # --- pruning -----------------------------------------------------------------------------

    async def _labelled(self, rendered: RenderedProfile) -> list[tuple[Kind, dict[str, Any]]]:
        """Every live object labelled with this profile and written by dna_hub."""
        profile = rendered.profile["metadata"]["name"]
        rendered_kinds = [
            await self.api.kind_for(o["apiVersion"], o["kind"]) for o in rendered.namespaced
        ]
        by_resource: dict[tuple[str, str], Kind] = {}
        for kind in (*self.prune_kinds, *rendered_kinds):
            by_resource.setdefault((_group(kind.api_version), kind.plural), kind)
        kinds = list(by_resource.values())
        namespaces = dict.fromkeys([profile, *self.prune_namespaces])
        selector = f"{PROFILE_LABEL}={profile}"

        async def listed(kind: Kind, namespace: str) -> list[tuple[Kind, dict[str, Any]]]:
            try:
                listing = await self.api.list(kind, namespace, label_selector=selector)
            except ApiException as e:
                if e.status == 404:  # the kind is not served here (e.g. no EnvoyFilter CRD)
                    return []
                raise
            found = []
            for item in listing.get("items", []):
                item.setdefault("apiVersion", kind.api_version)
                item.setdefault("kind", kind.kind)
                # Contributor bindings of a team profile carry its label too, but the
                # members' logins keep them in step (dna_hub.profiles.contributors), not templates.
                labels = item.get("metadata", {}).get("labels") or {}
                if belongs_to_profile(item, profile) and CONTRIBUTOR_LABEL not in labels:
                    found.append((kind, item))
            return found

        lists = await asyncio.gather(*(listed(k, ns) for k in kinds for ns in namespaces))
        return [entry for found in lists for entry in found]

    async def _prune(self, rendered: RenderedProfile) -> list[Change]:
        wanted = {_key(o) for o in rendered.namespaced}
        pruned = []
        for kind, obj in await self._labelled(rendered):
            if _key(obj) in wanted:
                continue
            metadata = obj["metadata"]
            await self.api.delete(
                kind, metadata["name"], metadata["namespace"], uid=metadata["uid"]
            )
            pruned.append(Change("delete", kind.kind, metadata["namespace"], metadata["name"]))
        return pruned

    # --- dry run -----------------------------------------------------------------------------

    async def _plan(
        self, live_profile: Mapping[str, Any], rendered: RenderedProfile
    ) -> list[Change]:
        labelled = await self._labelled(rendered)
        live = {_key(obj): obj for _, obj in labelled}
        changes: list[Change] = []
        wanted = [with_digest(rendered.profile, rendered.digest), *rendered.namespaced]
        new_roles = {
            _key(o)[2:] for o in rendered.namespaced if o["kind"] == "Role" and _key(o) not in live
        }

        async def dry_apply(obj: Mapping[str, Any]) -> dict[str, Any] | None:
            try:
                return await self.api.apply(obj, field_manager=FIELD_MANAGER, dry_run=True)
            except ApiException as e:
                # A binding of a Role this run creates: the server checks the Role exists
                # (escalation prevention), and a dry run creates nothing.
                role = (obj.get("roleRef") or {}).get("name")
                if e.status == 404 and (obj["metadata"].get("namespace"), role) in new_roles:
                    return None
                raise

        answers = await asyncio.gather(*(dry_apply(o) for o in wanted))
        for obj, answer in zip(wanted, answers, strict=True):
            metadata = obj["metadata"]
            change = Change("update", obj["kind"], metadata.get("namespace"), metadata["name"])
            current = live_profile if obj["kind"] == "Profile" else live.get(_key(obj))
            if current is None or answer is None:
                changes.append(Change("create", change.kind, change.namespace, change.name))
                continue
            answer.setdefault("apiVersion", obj["apiVersion"])
            answer.setdefault("kind", obj["kind"])
            if comparable(current) != comparable(answer):
                diff = object_diff(current, answer, change.what)
                changes.append(Change("update", change.kind, change.namespace, change.name, diff))
        wanted_keys = {_key(o) for o in rendered.namespaced}
        for key in live:
            if key not in wanted_keys:
                changes.append(Change("delete", key[1], key[2], key[3]))
        return changes
