"""Which ResourceQuotaSpec a user's personal profile gets (pure).

Precedence, explicit and in this order:

1. ``DnaSpawner.profile_group_resource_quotas``: the **first** entry, in the order the
   configuration lists them, whose group the user is a member of. Put the most specific
   group first (e.g. ``gpu-users`` before ``data-science``). Entries are not merged: one
   spec applies whole.
2. ``DnaSpawner.profile_resource_quota``: everyone else.
3. Neither: no quota.

Team profiles (shared by a group) have their own per-team quota and do not use these.
Group membership is what the identity provider said at the user's last login; a change
reaches the profile at the next login (or ``dna-hub sync`` after it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["check_group_quotas", "resource_quota_for"]


def check_group_quotas(value: Mapping[str, Any]) -> None:
    """Every entry maps a group name to a ResourceQuotaSpec (a mapping)."""
    for group, spec in value.items():
        if not isinstance(group, str) or not group:
            raise ValueError(f"profile_group_resource_quotas: {group!r} is not a group name")
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"profile_group_resource_quotas[{group!r}] must be a ResourceQuotaSpec "
                f'(e.g. {{"hard": {{"cpu": "8"}}}}), not {type(spec).__name__}'
            )


def resource_quota_for(
    groups: Iterable[str],
    group_quotas: Mapping[str, Mapping[str, Any]],
    default: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    member_of = set(groups)
    for group, spec in group_quotas.items():
        if group in member_of:
            return dict(spec)
    return dict(default) if default else None
