"""The namespace naming policy: one pure function from a hub username to a namespace.

The namespace is also the Kubeflow Profile's name, so it decides whose data a notebook sees.
It is never chosen by the user: it is derived from the hub username by an admin-configured
template (default ``kubeflow-{username}``) and must be

- a valid DNS-1123 label (what a Namespace name must be) — the *whole* name, not only the
  username part, at most 63 characters;
- deterministic across restarts and releases (the same user always lands in the same
  namespace, or they lose their data);
- injective: two different hub users never get the same namespace.

KubeSpawner 7's ``safe_slug`` gives the last two for the username part: a username that is
already a valid, short, lowercase object name is used as it is; anything else (upper case,
dots, ``@``, unicode, too long, containing ``--``) becomes ``<stripped>---<sha256[:8]>``,
and such a slug cannot equal any name used as it is, because those never contain ``--``.
What it leaves out, and this module adds: fitting the slug into the length the template
leaves, refusing templates that would break injectivity or validity, and refusing names
that land on namespaces a user must never own (``kube-system``, ``default``, ...).
"""

from __future__ import annotations

import re
import string

from dna_hub.policy.slugs import is_valid_object_name, safe_slug

__all__ = [
    "DEFAULT_NAMESPACE_TEMPLATE",
    "RESERVED_NAMESPACES",
    "NamespacePolicyError",
    "namespace_for",
    "validate_namespace_template",
]

DEFAULT_NAMESPACE_TEMPLATE = "kubeflow-{username}"

#: Kubernetes' own namespaces and Kubeflow's system namespaces. A template such as
#: ``{username}`` must not hand ``kube-system`` to a user called "kube-system".
RESERVED_NAMESPACES = frozenset(
    {
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "kubeflow",
        "istio-system",
        "auth",
        "cert-manager",
        "knative-serving",
        "knative-eventing",
        "oauth2-proxy",
        # Kubeflow's own namespaces that the default template `kubeflow-{username}` can
        # produce: a user named "system" must not own kubeflow-system.
        "kubeflow-system",
        "kubeflow-monitoring",
        "kubeflow-user-example-com",
        "istio-ingress",
        "istio-gateways",
        "kserve",
        "knative-operator",
        "dex",
        "jupyterhub",
    }
)
_RESERVED_PREFIXES = ("kube-",)

#: The shortest room a template may leave for the username slug. ``safe_slug`` needs 12
#: characters for the hash form (``x---`` + 8 hex digits); anything shorter cannot be
#: injective for long usernames.
MIN_USERNAME_ROOM = 12

_DNS_LABEL_MAX = 63
_FIXED_PART = re.compile(r"^[a-z0-9-]*$")


class NamespacePolicyError(ValueError):
    """The namespace policy cannot produce a valid name: bad template or reserved name."""


def validate_namespace_template(template: str) -> tuple[str, str]:
    """Check a namespace template and return its fixed ``(prefix, suffix)``.

    The template must contain ``{username}`` exactly once and nothing else to substitute:
    any other field (server name, a claim, ...) would let something other than the hub
    username decide the namespace, or let two users share one.
    """
    fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    if fields != ["username"]:
        raise NamespacePolicyError(
            f"namespace template {template!r} must contain {{username}} exactly once and no "
            f"other field (found {fields or 'none'})"
        )
    prefix, _, suffix = template.partition("{username}")
    for part in (prefix, suffix):
        if not _FIXED_PART.match(part):
            raise NamespacePolicyError(
                f"namespace template {template!r}: the fixed text {part!r} may only contain "
                "lowercase letters, digits and '-'"
            )
    if prefix and not prefix[0].isalpha():
        raise NamespacePolicyError(
            f"namespace template {template!r} must start with a lowercase letter or {{username}}"
        )
    if "--" in prefix or "--" in suffix:
        raise NamespacePolicyError(
            f"namespace template {template!r} must not contain '--': it is the separator "
            "of the hashed form and would break uniqueness"
        )
    room = _DNS_LABEL_MAX - len(prefix) - len(suffix)
    if room < MIN_USERNAME_ROOM:
        raise NamespacePolicyError(
            f"namespace template {template!r} leaves {room} characters for the username; "
            f"at least {MIN_USERNAME_ROOM} are needed (a namespace has at most 63)"
        )
    return prefix, suffix


def namespace_for(username: str, template: str = DEFAULT_NAMESPACE_TEMPLATE) -> str:
    """Return the namespace (= Kubeflow Profile name) for a hub username.

    Raises :class:`NamespacePolicyError` with a message naming the problem when the
    template is invalid, the username is empty, or the result is a reserved namespace.
    """
    if not username:
        raise NamespacePolicyError("cannot derive a namespace from an empty username")
    prefix, suffix = validate_namespace_template(template)
    room = _DNS_LABEL_MAX - len(prefix) - len(suffix)
    slug = safe_slug(username, max_length=room)
    namespace = f"{prefix}{slug}{suffix}"
    if not is_valid_object_name(namespace):
        # Unreachable with a validated template; a clear error beats a guess if it ever is.
        raise NamespacePolicyError(
            f"namespace {namespace!r} for user {username!r} is not a valid DNS-1123 label"
        )
    if namespace in RESERVED_NAMESPACES or namespace.startswith(_RESERVED_PREFIXES):
        raise NamespacePolicyError(
            f"user {username!r} maps to the reserved namespace {namespace!r}; "
            "choose a namespace template with a prefix such as 'kubeflow-{username}'"
        )
    return namespace
