"""What happens to a user's Kubeflow profile when the hub deletes the user, and ``dna-hub gc``.

``DnaSpawner.profile_retention`` decides, when JupyterHub deletes a user (``delete_forever``
of their default server — also what z2jh's user culling does):

* ``keep`` (default): the Profile is marked orphaned — label ``dna-hub.io/orphaned=true``
  and annotation ``dna-hub.io/orphaned-at`` (UTC) — and nothing else changes: the namespace,
  its notebooks' volumes, pipelines and data stay. The marks are written by their own field
  manager, so if the user comes back, their next spawn removes exactly them.

The hub never deletes a Profile (``delete`` was removed: deleting one deletes its namespace
and everything in it, volumes included, and an internet-facing identity must not be able to
do that — the admission guards refuse it). ``dna-hub gc``, run by an operator, lists
orphaned profiles older than a given age — and *stranded* ones, which a spawn created and
left ``pending`` when it found the namespace owned by someone else — and deletes them only
when told to. Whatever the path, a Profile dna_hub does not manage
(:mod:`dna_hub.profiles.managed`), or that was rendered for another hub user, is never
touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.k8s.api import NAMESPACE, PROFILE, KubeApi
from dna_hub.policy.labels import DIGEST_ANNOTATION
from dna_hub.profiles.managed import (
    OFFBOARDING_FIELD_MANAGER,
    ORPHANED_AT_ANNOTATION,
    ORPHANED_LABEL,
    SELECTOR,
    hub_username,
    is_managed,
    is_orphaned,
    orphaned_at,
    timestamp,
)

__all__ = [
    "DELETE_REMOVED",
    "RETENTION_POLICIES",
    "Offboarded",
    "find_orphans",
    "find_stranded",
    "gc_delete",
    "offboard",
]

RETENTION_POLICIES = ("keep",)
#: Why ``profile_retention = "delete"`` is refused (it was accepted before).
DELETE_REMOVED = (
    "profile_retention 'delete' was removed: the hub may not delete Profiles (deleting one "
    "deletes its namespace and every volume in it). Keep the default 'keep' and delete old "
    "orphans with `dna-hub gc --yes` as an operator (docs/operations.md)"
)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Offboarded:
    namespace: str
    #: "marked", "already marked", "deleted", "absent", "untouched"
    action: str
    detail: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


def _profile_stub(name: str) -> dict[str, Any]:
    return {"apiVersion": "kubeflow.org/v1", "kind": "Profile", "metadata": {"name": name}}


async def mark_orphaned(api: KubeApi, name: str, when: datetime) -> None:
    """Label and annotate the Profile as orphaned, as the offboarding field manager."""
    stub = _profile_stub(name)
    stub["metadata"]["labels"] = {ORPHANED_LABEL: "true"}
    stub["metadata"]["annotations"] = {ORPHANED_AT_ANNOTATION: timestamp(when)}
    await api.apply(stub, field_manager=OFFBOARDING_FIELD_MANAGER)


async def unmark_orphaned(api: KubeApi, name: str) -> None:
    """Remove exactly the orphan marks: the offboarding field manager now applies nothing."""
    await api.apply(_profile_stub(name), field_manager=OFFBOARDING_FIELD_MANAGER)


async def offboard(
    api: KubeApi,
    namespace: str,
    username: str,
    policy: str,
    *,
    now: datetime | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> Offboarded:
    """Apply ``policy`` to the profile of the deleted hub user ``username``."""
    logger = logger or log
    if policy == "delete":
        raise ValueError(DELETE_REMOVED)
    if policy not in RETENTION_POLICIES:
        raise ValueError(f"profile_retention must be one of {RETENTION_POLICIES}, not {policy!r}")
    profile = await api.get(PROFILE, namespace)
    if profile is None:
        return Offboarded(namespace, "absent")
    if not is_managed(profile) or hub_username(profile) != username:
        logger.warning(
            "Profile %s is not dna_hub's profile of %s: left untouched", namespace, username
        )
        return Offboarded(namespace, "untouched", "not managed by dna_hub for this user")
    if is_orphaned(profile):
        return Offboarded(namespace, "already marked")
    await mark_orphaned(api, namespace, now or _now())
    logger.info("Marked profile %s of deleted user %s orphaned (kept)", namespace, username)
    return Offboarded(namespace, "marked")


async def find_orphans(
    api: KubeApi, older_than: timedelta, *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Managed, orphaned Profiles orphaned at least ``older_than`` ago, oldest first."""
    now = now or _now()
    listing = await api.list(PROFILE, label_selector=f"{SELECTOR},{ORPHANED_LABEL}=true")
    found = []
    for profile in listing.get("items", []):
        when = orphaned_at(profile)
        if is_managed(profile) and is_orphaned(profile) and when and now - when >= older_than:
            found.append(profile)
    return sorted(found, key=lambda p: (orphaned_at(p), p["metadata"]["name"]))


async def gc_delete(
    api: KubeApi,
    profile: dict[str, Any],
    older_than: timedelta,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> str:
    """Delete one orphan found by :func:`find_orphans`, if it still is one: read it again
    and delete with uid and resourceVersion preconditions, so a user who came back in the
    meantime (their spawn removed the marks) keeps their profile. What happened, in words."""
    name = profile["metadata"]["name"]
    current = await api.get(PROFILE, name)
    if current is None:
        return "already gone"
    when = orphaned_at(current)
    if not (is_managed(current) and is_orphaned(current) and when):
        return "kept: no longer orphaned"
    if (now or _now()) - when < older_than or current["metadata"]["uid"] != profile["metadata"][
        "uid"
    ]:
        return "kept: changed since listed"
    return await _delete_unchanged(api, current, dry_run=dry_run)


async def _delete_unchanged(api: KubeApi, profile: dict[str, Any], *, dry_run: bool) -> str:
    """Delete exactly this version of the Profile (uid and resourceVersion preconditions),
    in words."""
    try:
        await api.delete(
            PROFILE,
            profile["metadata"]["name"],
            uid=profile["metadata"]["uid"],
            resource_version=profile["metadata"]["resourceVersion"],
            dry_run=dry_run,
        )
    except ApiException as e:
        if e.status == 404:
            return "already gone"
        if e.status == 409:
            return "kept: changed since read (run gc again)"
        raise
    return "would delete (dry run)" if dry_run else "deleted"


async def find_stranded(api: KubeApi) -> list[tuple[dict[str, Any], str]]:
    """Managed Profiles a spawn left ``pending`` because their namespace belongs to someone
    else (the hub never deletes a Profile): (Profile, the namespace's owner), by name."""
    listing = await api.list(PROFILE, label_selector=SELECTOR)
    stranded = []
    for profile in listing.get("items", []):
        annotations = profile["metadata"].get("annotations") or {}
        if not is_managed(profile) or annotations.get(DIGEST_ANNOTATION) != "pending":
            continue
        name = profile["metadata"]["name"]
        namespaces = await api.list(NAMESPACE, field_selector=f"metadata.name={name}")
        for namespace in namespaces.get("items") or []:
            other = (namespace["metadata"].get("annotations") or {}).get("owner")
            if other != profile["spec"]["owner"]["name"]:
                stranded.append((profile, other or "(no owner)"))
    return sorted(stranded, key=lambda ps: ps[0]["metadata"]["name"])


async def gc_delete_stranded(
    api: KubeApi, profile: dict[str, Any], *, dry_run: bool = False
) -> str:
    """Delete one stranded Profile, unchanged since listed (uid and resourceVersion
    preconditions). Its namespace is someone else's: the profile controller does not own
    it, so deleting the Profile deletes nothing of theirs."""
    return await _delete_unchanged(api, profile, dry_run=dry_run)
