"""Server options at the hub: the form shows a user only the options their groups allow,
and what the form posted is checked again at spawn (dna_hub/policy/server_options.py).

Groups come only from the verified token, as for teams
(:func:`dna_hub.hub.team_choice.verified_groups`). Every function takes the settings and
plain values; none takes a spawner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from dna_hub.errors import OptionNotAllowed
from dna_hub.hub.settings import DnaSettings
from dna_hub.hub.team_choice import PERSONAL_SLUG, verified_groups
from dna_hub.policy.server_options import is_gated, refused_choice, visible_options

__all__ = ["checked_options", "form_entries", "visible_to"]

LoadAuthState = Callable[[], Awaitable[Mapping[str, Any] | None]]


def form_entries(
    server_options: Sequence[Mapping[str, Any]], team_choices: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The form's entries: the server options, then the team choices (whose 'personal'
    entry the server options stand for, as they run in the personal profile)."""
    if not server_options:
        return list(team_choices)
    teams = [c for c in team_choices if c.get("slug") != PERSONAL_SLUG]
    return [dict(entry) for entry in server_options] + teams


async def visible_to(
    settings: DnaSettings, entries: Sequence[Mapping[str, Any]], load_auth_state: LoadAuthState
) -> list[dict[str, Any]]:
    """The entries this user's verified groups may see (auth_state is read only when some
    entry is gated)."""
    if not is_gated(entries):
        return [dict(e) for e in entries]
    return visible_options(entries, verified_groups(settings, await load_auth_state()))


async def checked_options(
    settings: DnaSettings,
    entries: Sequence[Mapping[str, Any]],
    user_options: Mapping[str, Any] | None,
    *,
    username: str,
    load_auth_state: LoadAuthState,
) -> list[dict[str, Any]]:
    """The entries the user may use, after checking that what they chose is among them;
    :class:`OptionNotAllowed` (403) when it is not. ``entries`` are KubeSpawner's
    initialized (slugged) entries."""
    if not is_gated(entries):
        return [dict(e) for e in entries]
    groups = verified_groups(settings, await load_auth_state())
    refused = refused_choice(entries, user_options, groups)
    if refused is not None:
        raise OptionNotAllowed(
            "You may not use that server option: it is for members of other groups. "
            "Choose one of the options the spawn form offers you.",
            f"{username} chose {refused} (their verified groups: {groups})",
        )
    return visible_options(entries, groups)
