"""The cluster objects a platform engineer applies next to the chart, rendered from one place.

The hub's RBAC (``hub-rbac.yaml``), the admission guards that confine it and the sync job
(``hub-namespace-guard.yaml``: an allow-list of every write of each identity;
``hub-object-guard.yaml``: the shapes of the objects) and the sync CronJob with its RBAC
(``dna-hub-sync.yaml``) are Jinja templates in ``dna_hub/policy/platform_templates/``, rendered with
:class:`PlatformValues` — the guarded identities, the KFP namespace, the profile prefix and
the features the hub's configuration turns on (``dna-hub manifests`` builds them from
``jupyterhub_config.py``). A rule for a feature that is off is not rendered at all.

Values are checked before they reach a template: an identity is a ServiceAccount's
``namespace:name`` (DNS labels), so nothing a value holds can change a policy's CEL.
``helm-values/*.yaml`` are these files rendered for :data:`SHIPPED` (every feature on, the
names the chart and tests use); tests/unit/test_platform_manifests.py holds them equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2
import yaml

from dna_hub.policy.labels import TEAM_OWNER_PREFIX

__all__ = [
    "FILES",
    "SHIPPED",
    "PlatformValues",
    "ServiceAccountRef",
    "platform_objects",
    "render_platform",
]

#: The files ``dna-hub manifests`` writes, in the order they are applied.
FILES = ("hub-rbac.yaml", "dna-hub-sync.yaml", "hub-namespace-guard.yaml", "hub-object-guard.yaml")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PROFILE_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*-)?$")


@dataclass(frozen=True)
class ServiceAccountRef:
    namespace: str
    name: str

    def __post_init__(self) -> None:
        for part in (self.namespace, self.name):
            if not _DNS_LABEL.match(part):
                raise ValueError(
                    f"service account {self.namespace}:{self.name}: {part!r} is not a DNS label"
                )

    @classmethod
    def parse(cls, value: str) -> ServiceAccountRef:
        """``namespace:name`` (as ``--hub-service-account`` takes it)."""
        namespace, sep, name = value.partition(":")
        if not sep:
            raise ValueError(f"service account {value!r}: expected NAMESPACE:NAME")
        return cls(namespace, name)

    @property
    def username(self) -> str:
        """The identity the API server sees."""
        return f"system:serviceaccount:{self.namespace}:{self.name}"


@dataclass(frozen=True)
class PlatformValues:
    hub: ServiceAccountRef = field(default_factory=lambda: ServiceAccountRef("jupyterhub", "hub"))
    sync: ServiceAccountRef = field(
        default_factory=lambda: ServiceAccountRef("jupyterhub", "dna-hub-sync")
    )
    kfp_namespace: str = "kubeflow"
    #: the fixed part of the namespace templates (``kubeflow-`` for ``kubeflow-{username}``)
    profile_prefix: str = "kubeflow-"
    teams: bool = False
    legacy_envoy_filter: bool = False
    legacy_ml_pipeline_policy: bool = False
    #: Kueue-aware spawning (DnaSpawner.kueue_cluster_queue): LocalQueues in profiles
    kueue: bool = False
    #: what the header says the files were rendered for
    generated_for: str = "defaults"

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.kfp_namespace):
            raise ValueError(f"kfp_namespace {self.kfp_namespace!r} is not a DNS label")
        if not _PROFILE_PREFIX.match(self.profile_prefix):
            raise ValueError(
                f"profile prefix {self.profile_prefix!r}: the namespace templates must start "
                "with a fixed prefix of lowercase letters, digits and '-', ending in '-'"
            )
        if self.hub == self.sync:
            raise ValueError("the hub and the sync job must be different service accounts")
        if "\n" in self.generated_for:
            raise ValueError("generated_for is one line")


#: What ``helm-values/`` holds: every feature on, the names the chart and the tests use.
SHIPPED = PlatformValues(
    teams=True,
    legacy_envoy_filter=True,
    legacy_ml_pipeline_policy=True,
    kueue=True,
    generated_for="every feature on; hub jupyterhub:hub, sync jupyterhub:dna-hub-sync",
)


def _writes(resources_ops: list[tuple[str, str]]) -> list[str]:
    """``group/resource:OPERATION`` strings, as the allow-lists compare them."""
    return [f"{kind}:{op}" for kind, ops in resources_ops for op in ops.split()]


def _context(values: PlatformValues) -> dict[str, Any]:
    legacy_policies = values.legacy_ml_pipeline_policy or values.legacy_envoy_filter
    template_kinds = [
        ("/limitranges", "CREATE UPDATE"),
        ("kubeflow.org/poddefaults", "CREATE UPDATE"),
        ("security.istio.io/authorizationpolicies", "CREATE UPDATE"),
        ("networking.k8s.io/networkpolicies", "CREATE UPDATE"),
        ("rbac.authorization.k8s.io/roles", "CREATE UPDATE"),
        ("rbac.authorization.k8s.io/rolebindings", "CREATE UPDATE"),
    ]
    if values.legacy_envoy_filter:
        template_kinds.append(("networking.istio.io/envoyfilters", "CREATE UPDATE"))
    if values.kueue:
        template_kinds.append(("kueue.x-k8s.io/localqueues", "CREATE UPDATE"))
    hub_profile = [
        ("/pods", "CREATE DELETE"),
        ("/secrets", "CREATE"),
        ("/persistentvolumeclaims", "CREATE"),
        *template_kinds,
    ]
    if values.teams:
        hub_profile += [
            ("rbac.authorization.k8s.io/rolebindings", "DELETE"),
            ("security.istio.io/authorizationpolicies", "DELETE"),
        ]
    # sync prunes what the templates dropped: every template kind may also be deleted
    sync_profile = [(kind, ops + " DELETE") for kind, ops in template_kinds]
    kfp = [("security.istio.io/authorizationpolicies", "CREATE UPDATE")] if legacy_policies else []
    guarded = [values.hub.username, values.sync.username]
    return {
        "hub": values.hub,
        "sync": values.sync,
        "kfp_namespace": values.kfp_namespace,
        "profile_prefix": values.profile_prefix,
        "team_owner_prefix": TEAM_OWNER_PREFIX,
        "teams": values.teams,
        "legacy_envoy_filter": values.legacy_envoy_filter,
        "kueue": values.kueue,
        "generated_for": values.generated_for,
        "guarded_cel": "[" + ", ".join(f"'{name}'" for name in guarded) + "]",
        "hub_cluster_writes": _writes([("kubeflow.org/profiles", "CREATE UPDATE")]),
        "hub_profile_writes": _writes(hub_profile),
        "hub_kfp_writes": _writes(kfp),
        "sync_cluster_writes": _writes([("kubeflow.org/profiles", "UPDATE")]),
        "sync_profile_writes": _writes(sync_profile),
        "sync_kfp_writes": _writes(
            [("security.istio.io/authorizationpolicies", "CREATE UPDATE DELETE")]
            if legacy_policies
            else []
        ),
    }


def _environment() -> jinja2.Environment:
    templates = resources.files("dna_hub.policy").joinpath("platform_templates")
    loader = jinja2.FunctionLoader(lambda name: templates.joinpath(name).read_text())
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 (YAML, not HTML; values are checked DNS labels)
    )


def render_platform(values: PlatformValues) -> dict[str, str]:
    """Each of :data:`FILES` as YAML text (checked to parse)."""
    environment = _environment()
    context = _context(values)
    rendered = {}
    for name in FILES:
        text = environment.get_template(f"{name}.j2").render(context)
        list(yaml.safe_load_all(text))  # a template bug must not reach a cluster
        rendered[name] = text.rstrip("\n") + "\n"
    return rendered


def platform_objects(values: PlatformValues) -> dict[str, list[dict[str, Any]]]:
    """Each file's objects."""
    return {
        name: [o for o in yaml.safe_load_all(text) if o]
        for name, text in render_platform(values).items()
    }
