"""Server options gated by group: who sees and may use each entry of the spawn form.

The spawn form's options are KubeSpawner's ``profile_list`` entries (each may carry
``profile_options`` whose ``choices`` are the choices of a drop-down). Any entry, option or
choice may name the groups allowed to see and use it under :data:`GROUPS_KEY`::

    {"display_name": "GPU server", "slug": "gpu", "dna_hub_groups": ["gpu-users"],
     "kubespawner_override": {"extra_resource_limits": {"nvidia.com/gpu": "1"}},
     "profile_options": {"image": {"display_name": "Image", "choices": {
         "cuda": {"display_name": "CUDA 12", "kubespawner_override": {"image": "..."}},
         "beta": {"display_name": "Beta", "dna_hub_groups": ["ml-platform"], ...}}}}}

Without the key an entry is everyone's; with it, only members of one of its groups (as the
verified token names them, compared exactly) see it. What a form posted is checked again at
spawn with :func:`refused_choice` against the same groups: a hidden entry is refused as if
unknown. The resources an entry gives (GPU limit, node selector, tolerations, image) are
KubeSpawner's own ``kubespawner_override``; this module only decides who may use them.

Pure: lists and dicts in, lists and dicts out.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "GROUPS_KEY",
    "is_gated",
    "refused_choice",
    "server_option_problem",
    "visible_options",
]

#: The key naming the groups allowed to see and use an entry, option or choice.
GROUPS_KEY = "dna_hub_groups"


def _allowed(entry: Mapping[str, Any], groups: frozenset[str]) -> bool:
    allowed = entry.get(GROUPS_KEY)
    if allowed is None:
        return True
    return bool(groups.intersection(str(g) for g in allowed))


def is_gated(options: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any entry, option or choice names groups (else groups need not be read)."""
    for entry in options:
        if GROUPS_KEY in entry:
            return True
        for option in (entry.get("profile_options") or {}).values():
            if GROUPS_KEY in option:
                return True
            if any(GROUPS_KEY in c for c in (option.get("choices") or {}).values()):
                return True
    return False


def visible_options(
    options: Sequence[Mapping[str, Any]], groups: Iterable[str]
) -> list[dict[str, Any]]:
    """The entries (with their options and choices) that ``groups`` may see, without the
    gating keys (the form does not list who else may use what). A default choice that is
    hidden leaves KubeSpawner to make the first visible one the default."""
    member = frozenset(str(g) for g in groups)
    visible: list[dict[str, Any]] = []
    for entry in options:
        if not _allowed(entry, member):
            continue
        shown = copy.deepcopy(dict(entry))
        shown.pop(GROUPS_KEY, None)
        profile_options = {}
        for name, option in (shown.get("profile_options") or {}).items():
            if not _allowed(option, member):
                continue
            option.pop(GROUPS_KEY, None)
            if option.get("choices"):
                choices = {}
                for slug, choice in option["choices"].items():
                    if _allowed(choice, member):
                        choice.pop(GROUPS_KEY, None)
                        choices[slug] = choice
                if not choices and not (option.get("unlisted_choice") or {}).get("enabled"):
                    continue  # nothing left to choose: the option is not shown
                option["choices"] = choices
            profile_options[name] = option
        if "profile_options" in shown:
            shown["profile_options"] = profile_options
        visible.append(shown)
    return visible


def _slug(entry: Mapping[str, Any]) -> str | None:
    slug = entry.get("slug")
    return str(slug) if slug is not None else None


def refused_choice(
    options: Sequence[Mapping[str, Any]],
    user_options: Mapping[str, Any] | None,
    groups: Iterable[str],
) -> str | None:
    """What of ``user_options`` (the posted form) ``groups`` may not use: a sentence for the
    operator naming it, or None when all of it is allowed (or unknown: KubeSpawner refuses
    what no entry offers). ``options`` are KubeSpawner's slugged entries."""
    chosen = dict(user_options or {})
    member = frozenset(str(g) for g in groups)
    slug = chosen.get("profile")
    if slug:
        entry = next((e for e in options if _slug(e) == slug), None)
    else:
        # no choice: KubeSpawner takes the default of the list the user sees
        entry = next((e for e in visible_options(options, member) if e.get("default")), None)
        if entry is not None:
            entry = next((e for e in options if _slug(e) == _slug(entry)), entry)
    if entry is None:
        return None
    if not _allowed(entry, member):
        return f"server option {slug!r} is for groups {list(entry[GROUPS_KEY])}"
    for name, option in (entry.get("profile_options") or {}).items():
        choice = chosen.get(name)
        unlisted = chosen.get(f"{name}--unlisted-choice")
        if choice is None and unlisted is None:
            continue
        if not _allowed(option, member):
            return (
                f"option {name!r} of server option {_slug(entry)!r} is for groups "
                f"{list(option[GROUPS_KEY])}"
            )
        picked = (option.get("choices") or {}).get(choice) if choice is not None else None
        if picked is not None and not _allowed(picked, member):
            return (
                f"choice {choice!r} of option {name!r} of server option {_slug(entry)!r} is "
                f"for groups {list(picked[GROUPS_KEY])}"
            )
    return None


def server_option_problem(entry: Any) -> str | None:
    """What is wrong with one configured entry's gating (None: nothing): the groups must be
    a list of non-empty strings wherever they are named."""
    if not isinstance(entry, Mapping):
        return f"an entry must be a dict, not {type(entry).__name__}"
    name = entry.get("slug") or entry.get("display_name") or "?"
    places: list[tuple[str, Any]] = [(f"entry {name!r}", entry)]
    options = entry.get("profile_options") or {}
    if not isinstance(options, Mapping):
        return f"entry {name!r}: profile_options must be a dict"
    for option_name, option in options.items():
        if not isinstance(option, Mapping):
            return f"entry {name!r}: option {option_name!r} must be a dict"
        places.append((f"option {option_name!r} of entry {name!r}", option))
        for slug, choice in (option.get("choices") or {}).items():
            if not isinstance(choice, Mapping):
                return f"choice {slug!r} of option {option_name!r} must be a dict"
            places.append((f"choice {slug!r} of option {option_name!r} of {name!r}", choice))
    for where, item in places:
        if GROUPS_KEY not in item:
            continue
        groups = item[GROUPS_KEY]
        if (
            not isinstance(groups, list)
            or not groups
            or not all(isinstance(g, str) and g for g in groups)
        ):
            return f"{where}: {GROUPS_KEY} must be a non-empty list of group names"
    return None
