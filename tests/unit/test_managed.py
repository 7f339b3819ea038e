"""Which profiles dna_hub's day-2 tools may touch, orphan marks, ages (pure), and the sync
decisions taken before any request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dna_hub.profiles.managed import (
    GROUPS_ANNOTATION,
    ORPHANED_AT_ANNOTATION,
    ORPHANED_LABEL,
    USERNAME_ANNOTATION,
    hub_groups,
    is_managed,
    is_orphaned,
    orphaned_at,
    parse_age,
)
from dna_hub.profiles.sync import ProfileSync


def profile(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    managers: tuple[str, ...] = ("dna-hub",),
    **metadata: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {
            "name": "kubeflow-alice",
            "labels": {"app.kubernetes.io/managed-by": "dna-hub", **(labels or {})},
            "annotations": {
                USERNAME_ANNOTATION: "alice",
                GROUPS_ANNOTATION: '["data-science"]',
                **(annotations or {}),
            },
            "managedFields": [{"manager": m, "operation": "Apply"} for m in managers],
            **metadata,
        },
        "spec": {"owner": {"kind": "User", "name": "alice@example.com"}},
    }


def test_managed_needs_the_label_and_dna_hubs_field_manager() -> None:
    assert is_managed(profile())
    assert not is_managed(profile(managers=("someone-else",)))  # a copied label
    unlabelled = profile()
    del unlabelled["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert not is_managed(unlabelled)


def test_orphan_marks_and_groups() -> None:
    marked = profile(
        labels={ORPHANED_LABEL: "true"},
        annotations={ORPHANED_AT_ANNOTATION: "2026-01-02T03:04:05Z"},
    )
    assert is_orphaned(marked) and not is_orphaned(profile())
    assert orphaned_at(marked) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert orphaned_at(profile(annotations={ORPHANED_AT_ANNOTATION: "yesterday"})) is None
    assert hub_groups(profile()) == ["data-science"]
    assert hub_groups(profile(annotations={GROUPS_ANNOTATION: "not json"})) == []


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("0s", timedelta(0)),
        (" 90m ", timedelta(minutes=90)),
    ],
)
def test_ages(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "1.5d", "30 days", "1y"])
def test_bad_ages_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an age"):
        parse_age(text)


def never_render(*_: Any) -> Any:
    raise AssertionError("must not render")


@pytest.mark.parametrize(
    ("live", "status", "detail"),
    [
        (profile(managers=("someone-else",)), "skipped", "not managed"),
        (profile(labels={ORPHANED_LABEL: "true"}), "skipped", "orphaned"),
        (profile(deletionTimestamp="2026-01-01T00:00:00Z"), "skipped", "being deleted"),
        (profile(annotations={USERNAME_ANNOTATION: ""}), "failed", "hub-username"),
    ],
)
async def test_sync_decides_before_any_request(live: dict, status: str, detail: str) -> None:
    syncer = ProfileSync(api=None, render=never_render)  # type: ignore[arg-type]
    result = await syncer.sync_one(live, dry_run=False)
    assert (result.status, detail in result.detail) == (status, True), result


async def test_sync_skips_a_profile_rendered_before_groups_were_recorded() -> None:
    old = profile()
    del old["metadata"]["annotations"][GROUPS_ANNOTATION]
    result = await ProfileSync(api=None, render=never_render).sync_one(old, dry_run=False)  # type: ignore[arg-type]
    assert result.status == "skipped" and "next spawn" in result.detail
