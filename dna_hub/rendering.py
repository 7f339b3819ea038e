"""Render a user's Kubeflow profile resources from the Jinja2 templates in ``profile-templates/``.

Templates are data: an admin may add or override them, but no username or claim may change
a manifest's structure. That is guaranteed here, not left to template authors:

- every ``{{ expression }}`` is emitted as a JSON value (``"kubeflow-alice"``, ``7200``,
  ``["a", "b"]``) — JSON is YAML, so a newline, a quote, ``: `` or ``{{ }}`` inside a name
  stays inside its string;
- templates run in Jinja's immutable sandbox with ``StrictUndefined``, so a misspelt
  variable is an error naming the template and the variable, not an empty string;
- the rendered stream is parsed and every object is checked: a mapping with ``apiVersion``,
  ``kind`` and ``metadata.name``; namespaced objects only in the user's namespace or in a
  namespace the admin allowed (the KFP namespace for the legacy ml-pipeline policy); the
  only cluster-scoped object is the user's own Profile.

Everything here is pure: no I/O but reading the template files.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import yaml_json
from .pod_defaults import DEFAULT_LIMIT_RANGE

__all__ = [
    "MANAGED_BY_LABEL",
    "PROFILE_LABEL",
    "ProfileContext",
    "RenderedProfile",
    "TemplateError",
    "default_template_dir",
    "render_profile",
]

TEMPLATE_SUFFIX = ".yaml.j2"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "dna-hub"
#: Marks every object dna_hub renders with the profile it belongs to (a label value is at
#: most 63 characters — the namespace always is — and the username may not be).
PROFILE_LABEL = "dna-hub.io/profile"

#: Kinds that are cluster-scoped. Only the user's own Profile may be rendered among them.
_CLUSTER_SCOPED = {("kubeflow.org", "Profile")}

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Cloud metadata services, whose credentials belong to the node, not the user: all of
#: link-local 169.254.0.0/16 (AWS/Azure/GCP/OpenStack/Oracle 169.254.169.254, GKE's
#: metadata server 169.254.169.252, AWS ECS 169.254.170.2, Tencent 169.254.0.23) and
#: Alibaba Cloud's 100.100.100.200. IPv6 egress is not opened at all.
BLOCKED_EGRESS_CIDRS = ("169.254.0.0/16", "100.100.100.200/32")

#: Cluster-scoped kinds refused while rendering, before any request. Any other kind the API
#: server reports as cluster-scoped is refused by provisioning before anything is written.
_KNOWN_CLUSTER_SCOPED = {
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("storage.k8s.io", "StorageClass"),
    ("scheduling.k8s.io", "PriorityClass"),
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS_SUBDOMAIN.match(value))


class TemplateError(ValueError):
    """A profile template is invalid or renders something dna_hub refuses to apply."""

    #: File name of the template at fault, when one is (set by :func:`render_profile`).
    template: str | None = None


@dataclass(frozen=True)
class ProfileContext:
    """What a profile template may use. Documented in ``profile-templates/README.md``.

    Identity fields come from the login; the rest is admin configuration.
    """

    username: str
    namespace: str
    owner: str
    hub_namespace: str
    groups: tuple[str, ...] = ()
    owner_kind: str = "User"
    service_account: str = "default-editor"
    notebook_port: int = 8888
    kfp_namespace: str = "kubeflow"
    resource_quota: Mapping[str, Any] | None = None
    legacy_envoy_filter: bool = False
    legacy_ml_pipeline_policy: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: The OIDC group of a team profile (``None`` for a personal profile). A team's context
    #: has no member-specific data: every member renders the same objects.
    team: str | None = None
    #: LimitRangeSpec of the profile namespace (DnaSpawner.profile_limit_range), or None.
    limit_range: Mapping[str, Any] | None = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_LIMIT_RANGE)
    )
    #: IPv4 ranges the notebook may not reach (cloud metadata services); see the spawner's
    #: notebook_egress_blocked_cidrs.
    blocked_egress_cidrs: tuple[str, ...] = BLOCKED_EGRESS_CIDRS

    @property
    def service_account_principal(self) -> str:
        """The Istio (SPIFFE) principal of the notebook's service account."""
        return f"cluster.local/ns/{self.namespace}/sa/{self.service_account}"

    def template_variables(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "namespace": self.namespace,
            "owner": self.owner,
            "owner_kind": self.owner_kind,
            "groups": list(self.groups),
            "hub_namespace": self.hub_namespace,
            "service_account": self.service_account,
            "service_account_principal": self.service_account_principal,
            "notebook_port": self.notebook_port,
            "kfp_namespace": self.kfp_namespace,
            "resource_quota": dict(self.resource_quota) if self.resource_quota else None,
            "legacy_envoy_filter": self.legacy_envoy_filter,
            "legacy_ml_pipeline_policy": self.legacy_ml_pipeline_policy,
            "extra": dict(self.extra),
            "team": self.team,
            "limit_range": dict(self.limit_range) if self.limit_range else None,
            "blocked_egress_cidrs": list(self.blocked_egress_cidrs),
        }

    def allowed_namespaces(self) -> set[str]:
        allowed = {self.namespace}
        if self.legacy_ml_pipeline_policy or self.legacy_envoy_filter:
            allowed.add(self.kfp_namespace)
        return allowed


@dataclass(frozen=True)
class RenderedProfile:
    """The objects a login applies, Profile first, and a digest of the whole set."""

    profile: dict[str, Any]
    namespaced: tuple[dict[str, Any], ...]
    digest: str

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [self.profile, *self.namespaced]


def default_template_dir() -> Path:
    """The default templates: package data in a wheel, the repo's folder in a checkout."""
    packaged = resources.files("dna_hub").joinpath("profile-templates")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "profile-templates"


def _json_value(value: Any) -> str:
    """Jinja ``finalize``: every expression becomes a JSON value that YAML reads verbatim
    (:mod:`dna_hub.yaml_json`: any name the hub accepts, emoji included)."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError, naming the variable
    try:
        return yaml_json.dumps(value, sort_keys=True)
    except TypeError as e:
        raise TemplateError(f"cannot insert a value of type {type(value).__name__}: {e}") from e
    except UnicodeEncodeError as e:
        raise TemplateError(
            f"cannot insert the value {value!r}: it is not valid Unicode ({e.reason})"
        ) from e


class _OverridingLoader(jinja2.FileSystemLoader):
    """Jinja's loader, whose compiled templates also go stale when a file of the same name
    appears in (or leaves) an earlier directory — an override added while the hub runs —
    not only when the file they were compiled from changes."""

    def _resolve(self, template: str) -> str | None:
        for directory in self.searchpath:
            candidate = Path(directory, template)
            if candidate.is_file():
                return str(candidate)
        return None

    def get_source(self, environment: jinja2.Environment, template: str) -> Any:
        source, filename, uptodate = super().get_source(environment, template)

        def still_current() -> bool:
            return bool(uptodate()) and self._resolve(template) == filename

        return source, filename, still_current


@functools.lru_cache(maxsize=16)
def _environment(template_dirs: tuple[Path, ...]) -> ImmutableSandboxedEnvironment:
    """One environment per set of directories: templates are compiled once, not per spawn
    (Jinja still notices an edited, added or removed file)."""
    loader = _OverridingLoader([str(d) for d in template_dirs])
    return ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        finalize=_json_value,
        # No HTML escaping: the output is YAML, made safe by _json_value.
        autoescape=False,
        keep_trailing_newline=True,
    )


def template_names(template_dirs: Sequence[Path]) -> list[str]:
    """Template file names, the union over all dirs; a name in an earlier dir wins."""
    names: set[str] = set()
    for directory in template_dirs:
        if not directory.is_dir():
            raise TemplateError(f"profile template directory {directory} does not exist")
        names.update(p.name for p in directory.iterdir() if p.name.endswith(TEMPLATE_SUFFIX))
    return sorted(names)


def _render_documents(
    env: ImmutableSandboxedEnvironment, name: str, variables: Mapping[str, Any]
) -> list[Any]:
    try:
        text = env.get_template(name).render(variables)
    except jinja2.UndefinedError as e:
        raise TemplateError(f"profile template {name}: {e.message}") from e
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"profile template {name}, line {e.lineno}: {e.message}") from e
    except jinja2.TemplateError as e:
        raise TemplateError(f"profile template {name}: {e}") from e
    try:
        return [doc for doc in yaml.load_all(text, Loader=_SafeLoader) if doc is not None]
    except yaml.YAMLError as e:
        raise TemplateError(
            f"profile template {name} does not render valid YAML ({e}). Insert values as "
            "{{ value }} with nothing around them in the same scalar: no quotes, no prefix "
            'or suffix (write {{ namespace ~ "-suffix" }} instead)'
        ) from e


def _check_object(name: str, obj: Any, context: ProfileContext) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise TemplateError(
            f"profile template {name} renders a {type(obj).__name__}, not an object"
        )
    for key in ("apiVersion", "kind"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise TemplateError(f"profile template {name}: an object has no {key}")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise TemplateError(f"profile template {name}: {obj['kind']} has no metadata.name")
    group = obj["apiVersion"].rpartition("/")[0]
    what = f"{obj['kind']} {metadata['name']!r} (template {name})"
    if not _is_dns_subdomain(metadata["name"]):
        raise TemplateError(
            f"{what}: metadata.name must be a DNS-1123 subdomain (lowercase letters, digits, "
            "'-' and '.', starting and ending with a letter or digit, at most 253 characters)"
        )
    if (group, obj["kind"]) in _CLUSTER_SCOPED:
        if "namespace" in metadata:
            raise TemplateError(f"{what} is cluster-scoped and must not set metadata.namespace")
        if obj["kind"] == "Profile" and metadata["name"] != context.namespace:
            raise TemplateError(
                f"{what}: the Profile must be named after the user's namespace "
                f"{context.namespace!r}"
            )
    else:
        namespace = metadata.get("namespace")
        allowed = context.allowed_namespaces()
        if namespace not in allowed:
            raise TemplateError(
                f"{what} is in namespace {namespace!r}; dna_hub only writes into the user's "
                f"namespace {context.namespace!r}"
                + (f" or {context.kfp_namespace!r}" if context.kfp_namespace in allowed else "")
            )
        if (group, obj["kind"]) in _KNOWN_CLUSTER_SCOPED:
            raise TemplateError(
                f"{what} is a cluster-scoped kind; profile templates may only render "
                "namespaced objects (and the user's Profile)"
            )
    labels = metadata.setdefault("labels", {})
    if not isinstance(labels, dict):
        raise TemplateError(f"{what}: metadata.labels must be a mapping")
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    labels[PROFILE_LABEL] = context.namespace
    if obj["kind"] == "Profile":
        # Who the profile was rendered for: `dna-hub sync` renders it again from these (a
        # team's Profile is named by its group instead: 00-profile.yaml.j2, team-group).
        annotations = metadata.setdefault("annotations", {})
        if not isinstance(annotations, dict):
            raise TemplateError(f"{what}: metadata.annotations must be a mapping")
        if context.team is None:
            annotations["dna-hub.io/hub-username"] = context.username
            annotations["dna-hub.io/hub-groups"] = json.dumps(sorted(context.groups))
        else:
            annotations["dna-hub.io/team-group"] = context.team
    return obj


def digest_objects(objects: Iterable[Mapping[str, Any]]) -> str:
    """A stable digest of a set of manifests: equal digests mean nothing to apply."""
    canonical = json.dumps(list(objects), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def render_profile(
    context: ProfileContext, extra_template_dirs: Sequence[Path | str] = ()
) -> RenderedProfile:
    """Render and check every profile template for one user.

    ``extra_template_dirs`` come first: a file there with the same name as a default
    template replaces it; other files add objects.
    """
    dirs = [Path(d) for d in extra_template_dirs] + [default_template_dir()]
    env = _environment(tuple(dirs))
    variables = context.template_variables()
    profiles: list[dict[str, Any]] = []
    namespaced: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str | None, str]] = set()
    for name in template_names(dirs):
        try:
            for doc in _render_documents(env, name, variables):
                obj = _check_object(name, doc, context)
                key = (
                    obj["apiVersion"],
                    obj["kind"],
                    obj["metadata"].get("namespace"),
                    obj["metadata"]["name"],
                )
                if key in seen:
                    raise TemplateError(
                        f"{obj['kind']} {key[3]!r} is rendered twice (template {name})"
                    )
                seen.add(key)
                (profiles if obj["kind"] == "Profile" else namespaced).append(obj)
        except TemplateError as e:
            e.template = name
            raise
    if len(profiles) != 1:
        raise TemplateError(
            f"the profile templates must render exactly one Profile, not {len(profiles)}"
        )
    return RenderedProfile(
        profile=profiles[0],
        namespaced=tuple(namespaced),
        digest=digest_objects([profiles[0], *namespaced]),
    )
