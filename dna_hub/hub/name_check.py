"""At hub start: every name-bearing template of the spawner, expanded for hard usernames.

JupyterHub offers a spawner class no hook when the hub starts; it constructs a spawner for
each user with a running server while it starts, and for any other user when first needed.
``DnaSpawner.__init__`` calls :func:`check_spawner_names`, which checks the effective
configuration once (per distinct configuration: the verdict is cached by the templates and
the settings their expansion depends on) and refuses every construction of a configuration
that gives invalid names, with one :class:`~dna_hub.hub.spawn_errors.NameTemplateRefused`
(a :class:`~dna_hub.errors.ConfigurationError`) naming each setting, the username and the
invalid result. So a hub with running servers does not start; one without refuses the
first spawn (and ``dna-hub render`` / ``dna-hub doctor`` say the same before deployment).
``load_user_options`` checks again: a ``profile_list`` override may change the templates.

The expansion is KubeSpawner's own (``_expand_user_properties``), applied to a stand-in
that has another user's name, so what is checked is what KubeSpawner would produce.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from kubespawner import KubeSpawner

from dna_hub.hub.spawn_errors import NameTemplateRefused
from dna_hub.policy.name_templates import (
    HARD_SERVERNAMES,
    HARD_USERNAMES,
    NameTemplate,
    check_name_templates,
    describe_problems,
    name_templates,
)
from dna_hub.policy.naming import NamespacePolicyError, namespace_for
from dna_hub.profiles.api_token import api_token_secret_name

__all__ = ["SETTINGS", "check_spawner_names", "spawner_name_templates"]

#: The spawner traits :func:`dna_hub.policy.name_templates.name_templates` reads.
SETTINGS = (
    "pod_name_template",
    "pvc_name_template",
    "secret_name_template",
    "dns_name_template",
    "pod_connect_ip",
    "service_account",
    "volumes",
    "volume_mounts",
    "init_containers",
    "extra_containers",
    "extra_pod_config",
    "extra_labels",
    "storage_extra_labels",
    "storage_selector",
    "storage_pvc_ensure",
    "services_enabled",
    "internal_ssl",
)

#: The user id {userid} expands to in the check (any number is as valid as another).
_USER_ID = 1

#: configuration key → "" (valid) or the admin's description of what is invalid
_verdicts: dict[str, str] = {}


def spawner_name_templates(spawner: Any) -> list[NameTemplate]:
    """The name-bearing templates of ``spawner``'s effective configuration."""
    settings = {name: getattr(spawner, name, None) for name in SETTINGS}
    return name_templates(settings, api_token_secret=True)


class _OtherUser:
    """What KubeSpawner's ``_expand_user_properties`` reads of a spawner, for another user."""

    def __init__(self, spawner: Any, username: str, servername: str) -> None:
        self.user = SimpleNamespace(name=username, id=_USER_ID)
        self.name = servername
        self.slug_scheme = spawner.slug_scheme
        self._namespace_default = spawner._namespace_default
        try:
            self.namespace = namespace_for(username, spawner.namespace_template)
        except NamespacePolicyError:  # reported by the namespace policy at the spawn
            self.namespace = spawner.namespace
        # In KubeSpawner.__init__'s order: the pod's name, then the claim's.
        self.pod_name = self.expand(spawner.pod_name_template)
        self.pvc_name = self.expand(spawner.pvc_name_template)

    def expand(self, template: str) -> str:
        return KubeSpawner._expand_user_properties(self, template)


def _expanders(spawner: Any) -> dict[str, Any]:
    others: dict[tuple[str, str], _OtherUser] = {}

    def other(username: str, servername: str) -> _OtherUser:
        if (username, servername) not in others:
            others[username, servername] = _OtherUser(spawner, username, servername)
        return others[username, servername]

    def kubespawner(template: str, username: str, servername: str) -> str:
        return other(username, servername).expand(template)

    def dns_name(template: str, username: str, servername: str) -> str:
        user = other(username, servername)
        return template.format(namespace=user.namespace, name=user.pod_name)

    def api_token_secret(template: str, username: str, servername: str) -> str:
        return api_token_secret_name(kubespawner(template, username, servername))

    return {"kubespawner": kubespawner, "dns_name": dns_name, "api_token_secret": api_token_secret}


def _key(spawner: Any, templates: list[NameTemplate]) -> str:
    # Everything the verdict depends on: the templates and what their expansion reads.
    return json.dumps(
        [
            [(t.setting, t.template, t.rule.name, t.expansion) for t in templates],
            spawner.slug_scheme,
            spawner.namespace_template,
            spawner._namespace_default(),
        ]
    )


def check_spawner_names(spawner: Any) -> list[NameTemplate]:
    """Refuse a configuration whose name-bearing templates give invalid names for any of
    :data:`~dna_hub.policy.name_templates.HARD_USERNAMES` (and server names).

    Returns the templates checked; raises :class:`NameTemplateRefused` (a
    ``ConfigurationError``) naming each broken setting, the username and the result.
    """
    templates = spawner_name_templates(spawner)
    key = _key(spawner, templates)
    verdict = _verdicts.get(key)
    if verdict is None:
        problems = check_name_templates(
            templates,
            _expanders(spawner),
            usernames=HARD_USERNAMES,
            servernames=HARD_SERVERNAMES,
        )
        verdict = _verdicts[key] = describe_problems(problems, type(spawner).__name__)
    if verdict:
        raise NameTemplateRefused(
            "JupyterHub's configuration cannot name your notebook server's objects validly. "
            "Please contact your platform administrator.",
            verdict,
        )
    return templates
