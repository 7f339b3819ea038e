"""Which Kubeflow profiles and objects dna_hub manages, and their offboarding marks (pure).

A Profile is dna_hub's when it carries the label ``app.kubernetes.io/managed-by: dna-hub``
*and* dna_hub's field manager wrote it (its managedFields): a label alone can be copied by
anyone, the field manager entry only appears when dna_hub itself applied the object. Day-2
tools (``dna-hub sync``, offboarding, ``dna-hub gc``) never touch anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from dna_hub.policy.labels import (
    FIELD_MANAGER,
    GROUPS_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    OFFBOARDING_FIELD_MANAGER,
    ORPHANED_AT_ANNOTATION,
    ORPHANED_LABEL,
    PROFILE_LABEL,
    TEAM_GROUP_ANNOTATION,
    USERNAME_ANNOTATION,
)

__all__ = [
    "GROUPS_ANNOTATION",
    "OFFBOARDING_FIELD_MANAGER",
    "ORPHANED_AT_ANNOTATION",
    "ORPHANED_LABEL",
    "TEAM_GROUP_ANNOTATION",
    "USERNAME_ANNOTATION",
    "is_managed",
    "is_orphaned",
    "orphaned_at",
    "parse_age",
]

SELECTOR = MANAGED_SELECTOR


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def is_managed(obj: Mapping[str, Any]) -> bool:
    """Labelled as dna_hub's and written by dna_hub's field manager."""
    metadata = _metadata(obj)
    if (metadata.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        return False
    return any(m.get("manager") == FIELD_MANAGER for m in metadata.get("managedFields") or [])


def belongs_to_profile(obj: Mapping[str, Any], profile: str) -> bool:
    """A dna_hub object rendered for ``profile`` (its namespace)."""
    return is_managed(obj) and (_metadata(obj).get("labels") or {}).get(PROFILE_LABEL) == profile


def hub_username(profile: Mapping[str, Any]) -> str | None:
    return (_metadata(profile).get("annotations") or {}).get(USERNAME_ANNOTATION)


def team_group(profile: Mapping[str, Any]) -> str | None:
    return (_metadata(profile).get("annotations") or {}).get(TEAM_GROUP_ANNOTATION)


def hub_groups(profile: Mapping[str, Any]) -> list[str]:
    raw = (_metadata(profile).get("annotations") or {}).get(GROUPS_ANNOTATION)
    try:
        groups = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else []


def is_orphaned(profile: Mapping[str, Any]) -> bool:
    return (_metadata(profile).get("labels") or {}).get(ORPHANED_LABEL) == "true"


def orphaned_at(profile: Mapping[str, Any]) -> datetime | None:
    raw = (_metadata(profile).get("annotations") or {}).get(ORPHANED_AT_ANNOTATION)
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``0s`` → a timedelta; anything else is an error."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"not an age: {text!r} (use a number and s, m, h, d or w, e.g. 30d)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
