"""Render a user's Kubeflow profile resources from the Jinja2 templates in ``profile-templates/``.

Templates are data: an admin may add or override them, but no username or claim may change
a manifest's structure. That is guaranteed here, not left to template authors:

- every ``{{ expression }}`` is emitted as a JSON value (``"kubeflow-alice"``, ``7200``,
  ``["a", "b"]``) — JSON is YAML, so a newline, a quote, ``: `` or ``{{ }}`` inside a name
  stays inside its string;
- the YAML is parsed before the values go in: each template's output with a token per
  value (its *skeleton*, which only the template's control flow shapes) is parsed once and
  the values are put where their tokens are (:mod:`dna_hub.policy.template_skeleton`); where that
  would differ from parsing the text with the values in place, that text is parsed;
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
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dna_hub.policy import template_skeleton, yaml_json
from dna_hub.policy.labels import (
    GROUPS_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PROFILE_LABEL,
    TEAM_GROUP_ANNOTATION,
    USERNAME_ANNOTATION,
)
from dna_hub.policy.pod_defaults import DEFAULT_LIMIT_RANGE

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

#: Kinds that are cluster-scoped. Only the user's own Profile may be rendered among them.
_CLUSTER_SCOPED = {("kubeflow.org", "Profile")}

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_COMPACT = json.JSONEncoder(separators=(",", ":"))
#: The digest's JSON: ``json.dumps(objects, sort_keys=True, separators=(",", ":"))``.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))

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
    #: Kueue (DnaSpawner.kueue_cluster_queue): the profile's LocalQueue and the ClusterQueue
    #: it points at; None: no LocalQueue (Kueue integration off).
    kueue_local_queue: str | None = None
    kueue_cluster_queue: str | None = None

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
            "kueue_local_queue": self.kueue_local_queue,
            "kueue_cluster_queue": self.kueue_cluster_queue,
        }

    def allowed_namespaces(self) -> set[str]:
        allowed = {self.namespace}
        if self.legacy_ml_pipeline_policy or self.legacy_envoy_filter:
            allowed.add(self.kfp_namespace)
        return allowed


@dataclass(frozen=True, slots=True)
class RenderedProfile:
    """The objects a login applies, Profile first, and a digest of the whole set.

    The manifests are kept as JSON text, which the garbage collector never traverses (a
    login storm holds hundreds of these while spawns are in flight). :attr:`profile`,
    :attr:`namespaced` and :attr:`objects` decode a fresh copy on every access: changing
    one changes nothing here — build another with :meth:`of`.
    """

    profile_json: str
    namespaced_json: str
    digest: str

    @classmethod
    def of(
        cls, profile: Mapping[str, Any], namespaced: Iterable[Mapping[str, Any]]
    ) -> RenderedProfile:
        """The rendered set of these manifests (copied), with its digest."""
        namespaced = list(namespaced)
        return cls(
            profile_json=_COMPACT.encode(profile),
            namespaced_json=_COMPACT.encode(namespaced),
            digest=digest_objects([profile, *namespaced]),
        )

    @property
    def profile(self) -> dict[str, Any]:
        """The Profile (a fresh copy)."""
        return json.loads(self.profile_json)

    @property
    def namespaced(self) -> tuple[dict[str, Any], ...]:
        """The namespaced objects, in template order (fresh copies)."""
        return tuple(json.loads(self.namespaced_json))

    @property
    def objects(self) -> list[dict[str, Any]]:
        """The Profile, then the namespaced objects (fresh copies)."""
        return [self.profile, *self.namespaced]


@functools.cache
def default_template_dir() -> Path:
    """The default templates: package data in a wheel, the repo's folder in a checkout."""
    packaged = resources.files("dna_hub").joinpath("profile-templates")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "profile-templates"


#: JSON's own string encoder (``json.dumps`` of a ``str`` without ``ensure_ascii``).
_encode_json_string = json.encoder.encode_basestring


def _json_text(value: Any, template: str | None) -> str:
    """A value's JSON text, which YAML reads verbatim (:mod:`dna_hub.policy.yaml_json`: any name
    the hub accepts, emoji included)."""
    if type(value) is str:
        if value.isascii() and "\x7f" not in value:
            return _encode_json_string(value)  # what yaml_json.dumps gives, sooner
        try:
            return yaml_json.dumps(value)
        except UnicodeEncodeError as e:
            raise TemplateError(
                f"cannot insert the value {value!r}: it is not valid Unicode ({e.reason})"
            ) from e
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError, naming the variable
    try:
        return yaml_json.dumps(value, sort_keys=True, allow_nan=False)
    except TypeError as e:
        raise TemplateError(f"cannot insert a value of type {type(value).__name__}: {e}") from e
    except UnicodeEncodeError as e:
        raise TemplateError(
            f"cannot insert the value {value!r}: it is not valid Unicode ({e.reason})"
        ) from e
    except ValueError as e:  # NaN, Infinity: not JSON, and YAML would read them as strings
        raise TemplateError(
            f"profile template {template}: cannot insert the value {value!r}: NaN and "
            "infinite numbers are not JSON"
        ) from e


#: Per thread: the JSON texts of the values inserted so far while rendering a skeleton
#: (``texts`` is ``None`` while rendering the text with the values in place).
_recording = threading.local()


@jinja2.pass_context
def _finalize(context: jinja2.runtime.Context, value: Any) -> str:
    """Jinja ``finalize``: every expression becomes a JSON value — in a skeleton, a token
    standing for it (:mod:`dna_hub.policy.template_skeleton`). Takes the context, so Jinja never
    finalizes a constant at compile time: each ``{{ }}`` is one value per render."""
    text = _json_text(value, context.name)
    texts: list[str] | None = getattr(_recording, "texts", None)
    if texts is None:
        return text
    texts.append(text)
    return template_skeleton.token(len(texts) - 1)


class _ProfileTemplate(jinja2.Template):
    #: Whether rendered output can never flow back into a value (set when loaded).
    dna_hub_skeleton = False


class _OverridingLoader(jinja2.FileSystemLoader):
    """Jinja's loader, whose compiled templates also go stale when a file of the same name
    appears in (or leaves) an earlier directory — an override added while the hub runs —
    not only when the file they were compiled from changes."""

    def get_source(self, environment: jinja2.Environment, template: str) -> Any:
        source, filename, uptodate = super().get_source(environment, template)
        earlier: list[str] = []
        for directory in self.searchpath:
            candidate = os.path.normpath(os.path.join(directory, template))
            if candidate == filename:
                break
            earlier.append(candidate)

        def still_current() -> bool:
            # the file itself is unchanged and no earlier directory has one of its name
            return bool(uptodate()) and not any(os.path.isfile(c) for c in earlier)

        return source, filename, still_current

    def load(
        self,
        environment: jinja2.Environment,
        name: str,
        globals: Any = None,
    ) -> jinja2.Template:
        """Jinja's ``load`` (no bytecode cache here), which also notes whether the template
        may be rendered as a skeleton (:func:`template_skeleton.skeleton_safe`)."""
        source, filename, uptodate = self.get_source(environment, name)
        tree = environment.parse(source, name, filename)
        code = environment.compile(tree, name, filename)
        template = environment.template_class.from_code(environment, code, globals or {}, uptodate)
        template.dna_hub_skeleton = template_skeleton.skeleton_safe(tree)  # type: ignore[attr-defined]
        return template


@functools.lru_cache(maxsize=16)
def _environment(template_dirs: tuple[str, ...]) -> ImmutableSandboxedEnvironment:
    """One environment per set of directories: templates are compiled once, not per spawn
    (Jinja still notices an edited, added or removed file)."""
    env = ImmutableSandboxedEnvironment(
        loader=_OverridingLoader(list(template_dirs)),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        # No HTML escaping: the output is YAML, made safe by _finalize.
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.template_class = _ProfileTemplate
    return env


def template_names(template_dirs: Sequence[Path | str]) -> list[str]:
    """Template file names, the union over all dirs; a name in an earlier dir wins."""
    names: set[str] = set()
    for directory in template_dirs:
        try:
            entries = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            raise TemplateError(f"profile template directory {directory} does not exist") from None
        names.update(n for n in entries if n.endswith(TEMPLATE_SUFFIX))
    return sorted(names)


_YAML_HINT = (
    "Insert values as {{ value }} with nothing around them in the same scalar: no quotes, "
    'no prefix or suffix (write {{ namespace ~ "-suffix" }} instead)'
)


def _render(template: jinja2.Template, parent: dict[str, Any]) -> str:
    """``template.render``, with one context ``parent`` (globals and variables) for all
    templates of a profile instead of a copy each (the sandbox keeps it unchanged)."""
    environment = template.environment
    try:
        return environment.concat(
            template.root_render_func(template.new_context(parent, shared=True))
        )
    except Exception:
        environment.handle_exception()
        raise  # not reached: handle_exception raises


def _render_documents(
    env: ImmutableSandboxedEnvironment, name: str, parent: dict[str, Any]
) -> list[Any]:
    try:
        template = env.get_template(name)
        if getattr(template, "dna_hub_skeleton", False):
            texts: list[str] = []
            _recording.texts = texts
            try:
                skeleton = _render(template, parent)
            finally:
                _recording.texts = None
            if skeleton.count(template_skeleton.TOKEN_PREFIX) == len(texts):
                documents = _from_skeleton(skeleton, texts)
                if documents is not None:
                    return documents
                text = template_skeleton.with_values(skeleton, texts)
            else:  # never: no template text holds this process's token prefix
                text = _render(template, parent)
        else:
            text = _render(template, parent)
    except jinja2.UndefinedError as e:
        raise TemplateError(f"profile template {name}: {e.message}") from e
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"profile template {name}, line {e.lineno}: {e.message}") from e
    except jinja2.TemplateError as e:
        raise TemplateError(f"profile template {name}: {e}") from e
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=_SafeLoader) if doc is not None]
    except yaml.YAMLError as e:
        raise TemplateError(
            f"profile template {name} does not render valid YAML ({e}). {_YAML_HINT}"
        ) from e
    try:  # as JSON keeps them (a key 8888 becomes "8888"), like a skeleton's documents
        return json.loads(json.dumps(documents))
    except (TypeError, ValueError) as e:
        raise TemplateError(f"profile template {name} renders what JSON cannot hold: {e}") from e


def _from_skeleton(skeleton: str, texts: list[str]) -> list[Any] | None:
    """The documents from the parsed skeleton; ``None``: parse the text with the values."""
    try:
        compiled = template_skeleton.compile_skeleton(skeleton)
        if compiled is None:
            return None
        return [doc for doc in compiled.build(texts) if doc is not None]
    except (yaml.YAMLError, template_skeleton.NotAValue):
        return None  # the text with the values in place reports its own error


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
            annotations[USERNAME_ANNOTATION] = context.username
            annotations[GROUPS_ANNOTATION] = json.dumps(sorted(context.groups))
        else:
            annotations[TEAM_GROUP_ANNOTATION] = context.team
    return obj


def digest_objects(objects: Iterable[Mapping[str, Any]]) -> str:
    """A stable digest of a set of manifests: equal digests mean nothing to apply."""
    canonical = _CANONICAL.encode(list(objects))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def render_profile(
    context: ProfileContext, extra_template_dirs: Sequence[Path | str] = ()
) -> RenderedProfile:
    """Render and check every profile template for one user.

    ``extra_template_dirs`` come first: a file there with the same name as a default
    template replaces it; other files add objects.
    """
    dirs = (*(os.fspath(d) for d in extra_template_dirs), str(default_template_dir()))
    env = _environment(dirs)
    parent = dict(env.globals, **context.template_variables())
    profiles: list[dict[str, Any]] = []
    namespaced: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str | None, str]] = set()
    for name in template_names(dirs):
        try:
            for doc in _render_documents(env, name, parent):
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
    return RenderedProfile.of(profiles[0], namespaced)
