"""Keep a user's team profiles and contributor bindings in step with their verified groups.

For one login (identity + :class:`~dna_hub.policy.teams.TeamPlan`):

1. **Team profiles**: each team's Profile is rendered from the same templates as a personal
   one and provisioned by :class:`~dna_hub.profiles.provisioning.ProfileProvisioner` (ownership
   checked before any write, digest fast path). A team that fails (e.g. its namespace
   belongs to someone else) is logged and skipped; the others go on.
2. **Contributors** — KFAM-exact (:func:`dna_hub.policy.teams.contributor_objects`): one
   label-selected list per kind finds the bindings dna_hub made for this identity, in any
   namespace. Missing ones are *created*, never applied: a create fails (409) instead of
   adopting a binding of the same name that someone else made (e.g. in the Kubeflow
   dashboard), which is then left alone. Ones dna_hub made that the identity is no longer
   entitled to (left the group, role changed, team removed) are deleted. Nothing without
   dna_hub's labels and this identity's ``user`` annotation is ever deleted.

Granting ``kubeflow-edit``/``kubeflow-view`` in a namespace needs the hub to hold them there
or to hold ``bind`` on them (Kubernetes RBAC escalation prevention). The hub holds ``bind`` on
exactly those two ClusterRoles and none of their rights: a team Profile is owned by the
team's own identity (:func:`dna_hub.policy.teams.team_owner`), never the hub, so the hub is
no team's ``kubeflow-admin``. It may ``list``/``delete`` RoleBindings and
AuthorizationPolicies (helm-values/hub-rbac.yaml); the admission guards admit creating a
contributor binding only in a team's namespace (its ``owner`` annotation is the team's
identity) for a person, and deleting only the bindings dna_hub labelled.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.errors import ApiFailure, DnaHubError, NamingError
from dna_hub.k8s.api import AUTHORIZATION_POLICY, ROLE_BINDING, Kind, KubeApi
from dna_hub.k8s.retry import describe
from dna_hub.policy.rendering import MANAGED_BY, MANAGED_BY_LABEL, RenderedProfile
from dna_hub.policy.teams import (
    CONTRIBUTOR_LABEL,
    DEFAULT_INGRESS_GATEWAY_PRINCIPAL,
    DEFAULT_KFP_UI_PRINCIPAL,
    Contributor,
    Team,
    TeamPlan,
    contributor_label_value,
    contributor_objects,
)
from dna_hub.profiles.provisioning import FIELD_MANAGER, ProfileProvisioner, Progress

__all__ = ["ContributorSync", "TeamSyncResult"]

Key = tuple[str, str]  # (namespace, name)


@dataclass
class TeamSyncResult:
    """What one sync did; ``failed`` maps a team's group (or, for a contributor binding,
    its namespace) to the error, whose ``str`` is the admin-facing reason."""

    ready: list[Team] = field(default_factory=list)
    failed: dict[str, DnaHubError] = field(default_factory=dict)
    created: list[Key] = field(default_factory=list)
    deleted: list[Key] = field(default_factory=list)
    #: Bindings of a contributor's name that dna_hub did not make: left alone.
    foreign: list[Key] = field(default_factory=list)


class ContributorSync:
    """Team profiles and contributor bindings for one identity, through a :class:`KubeApi`."""

    _locks: ClassVar[weakref.WeakValueDictionary[str, asyncio.Lock]] = weakref.WeakValueDictionary()

    def __init__(
        self,
        api: KubeApi,
        provisioner: ProfileProvisioner,
        *,
        principals: Sequence[str] = (DEFAULT_INGRESS_GATEWAY_PRINCIPAL, DEFAULT_KFP_UI_PRINCIPAL),
        ready_timeout: float = 120.0,
        log: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.api = api
        self.provisioner = provisioner
        self.principals = tuple(principals)
        self.ready_timeout = ready_timeout
        self.log = log or logging.getLogger(__name__)

    async def sync(
        self,
        identity: str,
        plan: TeamPlan,
        render: Callable[[Team], RenderedProfile],
        *,
        progress: Mapping[str, Progress] | None = None,
    ) -> TeamSyncResult:
        """Provision ``plan``'s team profiles and make the identity's bindings match it.

        ``render`` turns a team into its rendered profile (CPU work: run off the loop);
        ``progress`` maps a team's group to where its provisioning steps are reported (the
        progress page of a spawn in that team).
        """
        lock = self._locks.get(identity)
        if lock is None:
            lock = self._locks[identity] = asyncio.Lock()
        async with lock:
            result = TeamSyncResult()
            for group, reason in plan.refused:
                result.failed[group] = NamingError(
                    "This team's profile is not available to you.", reason
                )
                self.log.warning("Team of group %r refused for %s: %s", group, identity, reason)
            await asyncio.gather(
                *(
                    self._provision(team, render, result, (progress or {}).get(team.group))
                    for team in plan.teams
                )
            )
            await self._contributors(identity, plan, result)
            return result

    async def _provision(
        self,
        team: Team,
        render: Callable[[Team], RenderedProfile],
        result: TeamSyncResult,
        progress: Progress | None,
    ) -> None:
        try:
            rendered = await asyncio.to_thread(render, team)
            await self.provisioner.ensure(rendered, progress=progress)
        except DnaHubError as e:
            result.failed[team.group] = e
            self.log.error(
                "Team profile %s of group %r not provisioned; its contributors are not updated: %s",
                team.namespace,
                team.group,
                e,
            )
            return
        result.ready.append(team)

    async def _mine(self, kind: Kind, identity: str) -> dict[Key, dict[str, Any]]:
        """This identity's contributor objects that dna_hub made, in every namespace."""
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{CONTRIBUTOR_LABEL}="
        listing = await self.provisioner.request(
            f"list {kind.kind}s of contributor {identity!r}",
            self.api.list(kind, label_selector=selector + contributor_label_value(identity)),
        )
        found: dict[Key, dict[str, Any]] = {}
        for item in listing.get("items", []):
            metadata = item["metadata"]
            # The label is a hash; the annotation is the exact identity.
            if (metadata.get("annotations") or {}).get("user") == identity:
                found[(metadata["namespace"], metadata["name"])] = item
        return found

    async def _contributors(self, identity: str, plan: TeamPlan, result: TeamSyncResult) -> None:
        entitled = plan.contributors(identity)
        ready = {team.namespace for team in result.ready}
        bindings, policies = await asyncio.gather(
            self._mine(ROLE_BINDING, identity), self._mine(AUTHORIZATION_POLICY, identity)
        )
        wanted: dict[Key, Contributor] = {(c.namespace, c.name): c for c in entitled}
        creates = []
        for key, contributor in sorted(wanted.items()):
            if contributor.namespace not in ready:
                continue  # its profile is not ours or not ready: write nothing there
            binding, policy = contributor_objects(contributor, principals=self.principals)
            if key not in bindings:
                creates.append(self._create_binding(binding, result))
            if key not in policies:
                creates.append(self._create(AUTHORIZATION_POLICY, policy, result))
            elif policies[key].get("spec") != policy["spec"]:
                # e.g. the principals were reconfigured: it is ours, so update it
                await self.provisioner.request(
                    f"apply AuthorizationPolicy {key[1]} in {key[0]}",
                    self.api.apply(policy, field_manager=FIELD_MANAGER),
                )
        await asyncio.gather(*creates)
        stale = [(ROLE_BINDING, key) for key in bindings if key not in wanted] + [
            (AUTHORIZATION_POLICY, key) for key in policies if key not in wanted
        ]
        await asyncio.gather(*(self._delete(kind, key, identity, result) for kind, key in stale))

    async def _create_binding(self, binding: Mapping[str, Any], result: TeamSyncResult) -> None:
        namespace = binding["metadata"]["namespace"]
        try:
            await self._create(ROLE_BINDING, binding, result)
        except DnaHubError as e:
            result.failed[namespace] = e
            self.log.error("Contributor binding in %s not created: %s", namespace, e)

    async def _create(self, kind: Kind, obj: Mapping[str, Any], result: TeamSyncResult) -> None:
        """Create, never apply: an object of this name that dna_hub did not make for this
        identity (it was not in the label-selected list) answers 409 and is left alone."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        what = f"create {kind.kind} {key[1]} in {key[0]}"
        try:
            await self.api.create(kind, obj, field_manager=FIELD_MANAGER)
        except ApiException as e:
            if e.status != 409:
                raise self.provisioner.api_failure(what, e) from e
            result.foreign.append(key)
            self.log.info(
                "%s %s in %s exists and was not made by dna_hub for this identity; left alone",
                kind.kind,
                key[1],
                key[0],
            )
            return
        except (TimeoutError, OSError) as e:
            raise ApiFailure(
                "The Kubernetes API did not answer while setting up your team's access. "
                "Please try again in a moment.",
                f"{what}: {describe(e)}",
            ) from e
        result.created.append(key)
        self.log.info("Contributor %s %s created in %s", kind.kind, key[1], key[0])

    async def _delete(self, kind: Kind, key: Key, identity: str, result: TeamSyncResult) -> None:
        namespace, name = key
        await self.provisioner.request(
            f"delete {kind.kind} {name} in {namespace}", self.api.delete(kind, name, namespace)
        )
        result.deleted.append(key)
        self.log.info(
            "Contributor %s %s in %s deleted: %s is no longer entitled to it",
            kind.kind,
            name,
            namespace,
            identity,
        )

    async def sweep(
        self,
        entitled: Callable[[], Awaitable[set[str]]],
        *,
        namespaces: set[str],
        grace: float = 120.0,
        now: datetime | None = None,
    ) -> list[Key]:
        """Delete the contributor objects dna_hub made for identities no longer entitled.

        One label-selected list per kind finds every contributor object dna_hub made; only
        those in ``namespaces`` (the configured teams' namespaces: another hub on the same
        cluster keeps its own) are considered. ``entitled()`` is asked *after* the listing
        (a login meanwhile counts); objects younger than ``grace`` seconds are left for the
        next sweep (a login whose user record is not saved yet). Each delete is conditional
        on the listed object's uid and resourceVersion: one changed since is left alone.
        """
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{CONTRIBUTOR_LABEL}"
        listings = await asyncio.gather(
            *(
                self.provisioner.request(
                    f"list every contributor {kind.kind}",
                    self.api.list(kind, label_selector=selector),
                )
                for kind in (ROLE_BINDING, AUTHORIZATION_POLICY)
            )
        )
        keep = await entitled()
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=grace)
        deleted: list[Key] = []
        for kind, listing in zip((ROLE_BINDING, AUTHORIZATION_POLICY), listings, strict=True):
            for item in listing.get("items", []):
                metadata = item["metadata"]
                if metadata.get("namespace") not in namespaces:
                    continue
                identity = (metadata.get("annotations") or {}).get("user")
                created = _timestamp(metadata.get("creationTimestamp"))
                if identity in keep or created is None or created > cutoff:
                    continue
                key = (metadata["namespace"], metadata["name"])
                try:
                    await self.api.delete(
                        kind,
                        key[1],
                        key[0],
                        uid=metadata.get("uid"),
                        resource_version=metadata.get("resourceVersion"),
                    )
                except ApiException as e:
                    if e.status == 409:
                        continue  # changed since the listing: the next sweep looks again
                    raise self.provisioner.api_failure(f"delete {kind.kind} {key[1]}", e) from e
                deleted.append(key)
                self.log.warning(
                    "Contributor %s %s in %s deleted: no hub user holds identity %r any more",
                    kind.kind,
                    key[1],
                    key[0],
                    identity,
                )
        return deleted


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def describe_result(result: TeamSyncResult) -> str:
    return (
        f"{len(result.ready)} team(s) ready, {len(result.failed)} refused, "
        f"{len(result.created)} binding(s) created, {len(result.deleted)} deleted"
    )
