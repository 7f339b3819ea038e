"""Name-bearing templates of the spawner's configuration, checked before any user needs them.

KubeSpawner expands ``{username}``, ``{servername}``, ``{user_server}``, ``{pvc_name}``, ...
in many settings that end up as Kubernetes object names or label values: the pod's and the
claim's names, volume claim names, label values. Kubernetes refuses a name that is not valid
for its kind (HTTP 422), at the spawn, for the users whose names break the template — an
email-shaped username in ``home-{unescaped_username}`` gives ``home-carol@example.com``.
Nothing validates them before that.

Here, purely (no JupyterHub, no cluster):

- :func:`name_templates` finds the name-bearing settings in KubeSpawner settings (the
  places where KubeSpawner applies ``_expand_user_properties`` / ``_expand_all`` to a value
  that names an object or is a label value), each with the rule its result must follow;
- :func:`check_name_templates` expands each one for a corpus of hard but hub-valid
  usernames (:data:`HARD_USERNAMES`) and server names (:data:`HARD_SERVERNAMES`) with an
  expansion function it is given, and returns the first invalid result of each;
- :func:`describe_problems` says it in one message that names the setting, the user and
  the invalid result.

The spawner's glue (:mod:`dna_hub.hub.name_check`) gives the expansion functions (the
real KubeSpawner expansion) and raises the message as a configuration error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DNS_1035_LABEL",
    "DNS_1123_LABEL",
    "DNS_1123_SUBDOMAIN",
    "DNS_NAME",
    "HARD_SERVERNAMES",
    "HARD_USERNAMES",
    "LABEL_VALUE",
    "Expand",
    "NameProblem",
    "NameRule",
    "NameTemplate",
    "check_name_templates",
    "describe_problems",
    "name_templates",
]

#: Usernames JupyterHub accepts (no '/', not empty, not only dots, no surrounding space) that
#: break careless templates: email-shaped, dots, plus signs, upper case, non-ASCII, spaces,
#: digits only, dashes at both ends, long. "alice" is the control.
HARD_USERNAMES: tuple[str, ...] = (
    "alice",
    "carol@example.com",
    "Alice.Smith@Example.com",
    "first.last+jupyter@mail.example.co.uk",
    "o'brien_jr",
    "zoë.müller",
    "用户",
    "anne marie",
    "-dash-",
    "123456",
    "firstname.middlename.lastname.with.many.parts@a-very-long-department-name.example.org",
    "x" * 100,
)

#: The default server, and named servers: JupyterHub (>= 6) creates a named server only
#: with a safe slug of 1 to 30 characters as its name.
HARD_SERVERNAMES: tuple[str, ...] = ("", "analysis", "gpu-experiments-for-the-thesis")

#: (template, username, servername) -> the expanded value
Expand = Callable[[str, str, str], str]

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"


@dataclass(frozen=True)
class NameRule:
    """What an expanded value must be, and how it is said to an admin."""

    name: str
    description: str
    pattern: re.Pattern[str]
    max_length: int
    #: every dot-separated part at most 63 characters (a DNS name)
    label_parts: bool = False
    allow_empty: bool = False

    @property
    def article(self) -> str:
        return "an" if self.name.startswith("RFC") else "a"

    def valid(self, value: str) -> bool:
        if value == "":
            return self.allow_empty
        if len(value) > self.max_length or not self.pattern.fullmatch(value):
            return False
        return not self.label_parts or all(len(part) <= 63 for part in value.split("."))


DNS_1123_SUBDOMAIN = NameRule(
    "RFC 1123 subdomain",
    "at most 253 characters of lowercase letters, digits, '-' and '.', starting and "
    "ending with a letter or digit",
    re.compile(rf"{_LABEL}(\.{_LABEL})*"),
    253,
)
DNS_1123_LABEL = NameRule(
    "RFC 1123 label",
    "at most 63 characters of lowercase letters, digits and '-', starting and ending with "
    "a letter or digit",
    re.compile(_LABEL),
    63,
)
DNS_1035_LABEL = NameRule(
    "RFC 1035 label",
    "at most 63 characters of lowercase letters, digits and '-', starting with a letter "
    "and ending with a letter or digit",
    re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?"),
    63,
)
DNS_NAME = NameRule(
    "DNS name",
    "an RFC 1123 subdomain whose dot-separated parts have at most 63 characters each",
    re.compile(rf"{_LABEL}(\.{_LABEL})*"),
    253,
    label_parts=True,
)
LABEL_VALUE = NameRule(
    "label value",
    "empty, or at most 63 characters of letters, digits, '-', '_' and '.', starting and "
    "ending with a letter or digit",
    re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"),
    63,
    allow_empty=True,
)


@dataclass(frozen=True)
class NameTemplate:
    """One configured value that KubeSpawner expands into a name or a label value."""

    #: Where it is configured, as an admin writes it:
    #: ``volumes[0].persistentVolumeClaim.claimName``.
    setting: str
    template: str
    rule: NameRule
    #: What the result names, in the admin's words: "PersistentVolumeClaim name".
    names: str
    #: Which expansion applies (a key of the expanders given to :func:`check_name_templates`):
    #: ``kubespawner`` (KubeSpawner's ``_expand_user_properties``), ``dns_name``
    #: (``dns_name_template.format(namespace=, name=<pod name>)``), ``api_token_secret``
    #: (DnaSpawner's API-token Secret of the pod named by the template).
    expansion: str = "kubespawner"


@dataclass(frozen=True)
class NameProblem:
    template: NameTemplate
    username: str
    servername: str
    #: The invalid result, or None when the template could not be expanded at all.
    result: str | None
    error: str = ""

    def __str__(self) -> str:
        t = self.template
        server = f", server {self.servername!r}" if self.servername else ""
        if self.result is None:
            return (
                f"{t.setting} = {t.template!r} cannot be expanded for user "
                f"{self.username!r}{server}: {self.error}"
            )
        return (
            f"{t.setting} = {t.template!r} gives {self.result!r} for user "
            f"{self.username!r}{server}, which is not a valid {t.names} (must be "
            f"{t.rule.article} {t.rule.name}: {t.rule.description}){_hint(t, self.result)}"
        )


_RAW_FIELDS = ("{unescaped_username}", "{unescaped_servername}", "{escaped_")


def _hint(template: NameTemplate, result: str) -> str:
    if any(field in template.template for field in _RAW_FIELDS):
        return (
            "; use {username}, {servername} or {user_server} (KubeSpawner's safe slugs), or "
            "{pod_name} / {pvc_name}, never the raw or escaped names"
        )
    if len(result) > template.rule.max_length or (
        template.rule.label_parts and any(len(p) > 63 for p in result.split("."))
    ):
        return (
            "; shorten the fixed text: {username} and {user_server} take up to 48 characters each"
        )
    return ""


def _walk_volume_names(
    where: str, volume: Mapping[str, Any]
) -> Iterable[tuple[str, Any, NameRule, str]]:
    """(setting, value, rule, what) for each name in one volume (camelCase or snake_case)."""
    yield f"{where}.name", volume.get("name"), DNS_1123_LABEL, "volume name"
    for source, key, what in (
        ("persistentVolumeClaim", "claimName", "PersistentVolumeClaim name"),
        ("persistent_volume_claim", "claim_name", "PersistentVolumeClaim name"),
        ("secret", "secretName", "Secret name"),
        ("secret", "secret_name", "Secret name"),
        ("configMap", "name", "ConfigMap name"),
        ("config_map", "name", "ConfigMap name"),
    ):
        inner = volume.get(source)
        if isinstance(inner, Mapping) and key in inner:
            yield f"{where}.{source}.{key}", inner[key], DNS_1123_SUBDOMAIN, what
    projected = volume.get("projected")
    if isinstance(projected, Mapping):
        for i, item in enumerate(projected.get("sources") or []):
            for source, what in (
                ("secret", "Secret name"),
                ("configMap", "ConfigMap name"),
                ("config_map", "ConfigMap name"),
            ):
                inner = item.get(source) if isinstance(item, Mapping) else None
                if isinstance(inner, Mapping) and "name" in inner:
                    yield (
                        f"{where}.projected.sources[{i}].{source}.name",
                        inner["name"],
                        DNS_1123_SUBDOMAIN,
                        what,
                    )


def _entries(value: Any) -> Iterable[tuple[str, Any]]:
    """KubeSpawner takes these as a list, or a dict whose values it sorts by key."""
    if isinstance(value, Mapping):
        for key in sorted(value):
            yield f"[{key!r}]", value[key]
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield f"[{i}]", item


def name_templates(
    settings: Mapping[str, Any], *, api_token_secret: bool = False
) -> list[NameTemplate]:
    """The name-bearing templates in KubeSpawner ``settings`` (trait name → effective value).

    Missing settings are skipped. Covered, with what the result must be:

    - ``pod_name_template``: a Pod name (RFC 1123 subdomain); also a Service name (RFC 1035
      label) with ``services_enabled`` or ``internal_ssl``; with ``api_token_secret``, the
      Secret DnaSpawner names after the pod (``<pod>-api-token-<8 hex>``, subdomain);
    - ``pvc_name_template``: a PersistentVolumeClaim name (subdomain);
    - ``secret_name_template`` (used with ``internal_ssl``): a Secret name (subdomain);
    - ``dns_name_template`` (used with ``services_enabled`` or ``internal_ssl``): a DNS name;
    - ``pod_connect_ip``, when it is a template: a DNS name;
    - ``service_account``: a ServiceAccount name (subdomain);
    - ``volumes``: each volume's name (label) and the names it refers to: claimName,
      secret.secretName, configMap.name, projected sources (subdomains);
    - ``volume_mounts``: each mount's volume name (label);
    - ``init_containers``, ``extra_containers``: each container's name (label);
    - ``extra_pod_config``: ``hostname`` and ``subdomain`` (labels);
    - ``extra_labels``, ``storage_extra_labels``: each value (label value);
    - ``storage_selector`` (used with ``storage_pvc_ensure``): matchLabels values and
      matchExpressions values (label values).
    """
    found: list[NameTemplate] = []

    def add(
        setting: str, value: Any, rule: NameRule, names: str, expansion: str = "kubespawner"
    ) -> None:
        if isinstance(value, str):
            found.append(NameTemplate(setting, value, rule, names, expansion))

    services = bool(settings.get("services_enabled") or settings.get("internal_ssl"))
    pod = settings.get("pod_name_template")
    add("pod_name_template", pod, DNS_1123_SUBDOMAIN, "Pod name")
    if services:
        add("pod_name_template", pod, DNS_1035_LABEL, "Service name (services_enabled)")
        add("dns_name_template", settings.get("dns_name_template"), DNS_NAME, "DNS name",
            "dns_name")  # fmt: skip
    if api_token_secret:
        add("pod_name_template", pod, DNS_1123_SUBDOMAIN,
            "Secret name (the pod's API-token Secret <pod>-api-token-<8 hex>)",
            "api_token_secret")  # fmt: skip
    add("pvc_name_template", settings.get("pvc_name_template"), DNS_1123_SUBDOMAIN,
        "PersistentVolumeClaim name")  # fmt: skip
    if settings.get("internal_ssl"):
        add("secret_name_template", settings.get("secret_name_template"), DNS_1123_SUBDOMAIN,
            "Secret name (internal_ssl)")  # fmt: skip
    connect = settings.get("pod_connect_ip")
    if isinstance(connect, str) and "{" in connect:
        add("pod_connect_ip", connect, DNS_NAME, "host name")
    add("service_account", settings.get("service_account"), DNS_1123_SUBDOMAIN,
        "ServiceAccount name")  # fmt: skip

    for where, volume in _entries(settings.get("volumes")):
        if isinstance(volume, Mapping):
            for setting, value, rule, names in _walk_volume_names(f"volumes{where}", volume):
                add(setting, value, rule, names)
    for where, mount in _entries(settings.get("volume_mounts")):
        if isinstance(mount, Mapping):
            add(f"volume_mounts{where}.name", mount.get("name"), DNS_1123_LABEL, "volume name")
    for trait in ("init_containers", "extra_containers"):
        for where, container in _entries(settings.get(trait)):
            if isinstance(container, Mapping):
                add(f"{trait}{where}.name", container.get("name"), DNS_1123_LABEL,
                    "container name")  # fmt: skip
    pod_config = settings.get("extra_pod_config")
    if isinstance(pod_config, Mapping):
        for key in ("hostname", "subdomain"):
            add(f"extra_pod_config.{key}", pod_config.get(key), DNS_1123_LABEL, f"pod {key}")

    for trait in ("extra_labels", "storage_extra_labels"):
        labels = settings.get(trait)
        if isinstance(labels, Mapping):
            for key in sorted(labels):
                add(f"{trait}[{key!r}]", labels[key], LABEL_VALUE, f"value of label {key}")
    selector = settings.get("storage_selector")
    if settings.get("storage_pvc_ensure") and isinstance(selector, Mapping):
        match = selector.get("matchLabels") or selector.get("match_labels") or {}
        if isinstance(match, Mapping):
            for key in sorted(match):
                add(f"storage_selector.matchLabels[{key!r}]", match[key], LABEL_VALUE,
                    f"value of label {key}")  # fmt: skip
        expressions = selector.get("matchExpressions") or selector.get("match_expressions")
        for i, expression in enumerate(expressions or []):
            if isinstance(expression, Mapping):
                for j, value in enumerate(expression.get("values") or []):
                    add(f"storage_selector.matchExpressions[{i}].values[{j}]", value,
                        LABEL_VALUE, "label value")  # fmt: skip
    return found


def check_name_templates(
    templates: Iterable[NameTemplate],
    expanders: Mapping[str, Expand],
    *,
    usernames: Iterable[str] = HARD_USERNAMES,
    servernames: Iterable[str] = HARD_SERVERNAMES,
) -> list[NameProblem]:
    """The first invalid result of each template, over every username and server name.

    ``expanders[template.expansion](template.template, username, servername)`` gives the
    value; an expander raising ``KeyError``, ``IndexError`` or ``ValueError`` (an unknown
    field, a stray brace) is reported as a template that cannot be expanded.
    """
    usernames, servernames = tuple(usernames), tuple(servernames)
    problems: list[NameProblem] = []
    for template in templates:
        problem = _first_problem(template, expanders[template.expansion], usernames, servernames)
        if problem is not None:
            problems.append(problem)
    return problems


def _first_problem(
    template: NameTemplate, expand: Expand, usernames: tuple[str, ...], servernames: tuple[str, ...]
) -> NameProblem | None:
    for servername in servernames:
        for username in usernames:
            try:
                value = expand(template.template, username, servername)
            except (KeyError, IndexError, ValueError) as e:
                error = f"unknown field {e}" if isinstance(e, KeyError) else str(e)
                return NameProblem(template, username, servername, None, error)
            if not template.rule.valid(value):
                return NameProblem(template, username, servername, value)
    return None


def describe_problems(problems: Iterable[NameProblem], owner: str = "DnaSpawner") -> str:
    """One message for an admin: each broken setting with the first user it breaks for."""
    lines = [f"{owner}.{problem}" for problem in problems]
    if not lines:
        return ""
    head = (
        f"{len(lines)} name-bearing setting{'s' if len(lines) > 1 else ''} of the spawner "
        "configuration give{} names Kubernetes would refuse".format("" if len(lines) > 1 else "s")
    )
    return head + ":\n  " + "\n  ".join(lines)
