"""A spawn that Kubernetes or the configuration refuses ends with words people can act on.

When the API server refuses an object of a spawn — the pod, its PersistentVolumeClaim, the
API-token Secret — with a 4xx, KubeSpawner lets the ``ApiException`` escape, and JupyterHub
shows "500 : Unhandled error starting server …". Here such a refusal becomes a
:class:`KubernetesRefused`:

- for the user (``jupyterhub_message``, on the spawn page): what failed, in people's words,
  and what to do;
- for the operator (``str(error)``, in the hub log): the object (kind, namespace/name), the
  HTTP status, the fields Kubernetes names and its message, and where to look.

Both error classes here are JupyterHub ``SpawnException`` s (a ``tornado.web.HTTPError``)
as well as :class:`~dna_hub.errors.DnaHubError` s: a spawn that fails within
its first second is answered by JupyterHub's spawn handler itself, which shows our message
only for an ``HTTPError`` (anything else is "Unhandled error"); later failures are shown
from ``jupyterhub_message`` on the progress page. JupyterHub logs a ``SpawnException``
without a traceback.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web

from dna_hub.errors import ApiFailure, ConfigurationError, DnaHubError, PolicyError
from dna_hub.k8s.retry import api_message, api_status
from dna_hub.policy.spawn_progress import explain_event

try:
    from jupyterhub.spawner import SpawnException
except ImportError:  # JupyterHub 5.x (the chart's hub image, 5.5.0) has no SpawnException yet

    class SpawnException(web.HTTPError):  # type: ignore[no-redef]
        """JupyterHub 6's ``SpawnException`` for JupyterHub 5: an ``HTTPError`` with the same
        constructor and attributes. 5.x shows its ``jupyterhub_message`` the same way."""

        log_message = ""

        def __init__(
            self,
            message: str,
            *,
            reason: str,
            log_message: str = "",
            message_html: str = "",
            status_code: int = 400,
        ) -> None:
            super().__init__(status_code, message, reason=reason)
            self.message = message
            self.reason = reason
            self.message_html = message_html
            self.status_code = status_code
            # as JupyterHub 6 (a plain attribute, shadowing newer tornado's read-only property)
            self.log_message = log_message or message

        def get_message(self) -> str:
            return self.log_message


__all__ = [
    "KubernetesRefused",
    "NameTemplateRefused",
    "raise_refusal",
    "refusal",
    "refusals_explained",
    "shown_by_jupyterhub",
]

T = TypeVar("T")

#: Kubernetes' resource names (a 403's Status ``details.kind``) → kinds.
_KINDS = {
    "pods": "Pod",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "secrets": "Secret",
    "services": "Service",
    "namespaces": "Namespace",
}

#: What each object is, for a data scientist.
_WHAT = {
    "Pod": "your notebook server",
    "PersistentVolumeClaim": "the storage volume of your notebook server (your home directory)",
    "Secret": "the credentials of your notebook server",
    "Service": "the network address of your notebook server",
    "Namespace": "your Kubeflow profile's namespace",
}


class _ShownByJupyterHub(SpawnException):
    """A DnaHubError that JupyterHub also handles as a refused spawn (see module doc)."""

    def __init__(
        self,
        user_message: str,
        detail: str | None = None,
        *,
        reason: str | None = None,
        status_code: int = 500,
    ) -> None:
        label = reason or type(self).label
        SpawnException.__init__(
            self,
            user_message,
            reason=label,
            # tornado formats an HTTPError's log message with %: keep a '%' literal
            log_message=(detail or user_message).replace("%", "%%"),
            status_code=status_code,
        )
        DnaHubError.__init__(self, user_message, detail)
        # a refusal's cause is read from Kubernetes' answer (invalid, forbidden, quota, ...)
        self.reason = label

    label = "error"

    def __str__(self) -> str:
        # dna_hub's convention (ProvisioningError): "user message (detail)".
        return Exception.__str__(self)


class KubernetesRefused(_ShownByJupyterHub, ApiFailure):
    """The API server refused (4xx) an object of the spawn; retrying cannot change that.

    ``kind``, ``name``, ``namespace``, ``status``, ``fields`` (what Kubernetes names in the
    Status causes) and ``api_message`` (its message) are kept for logs and tests.
    """

    label = "invalid"

    def __init__(
        self,
        user_message: str,
        detail: str,
        *,
        reason: str,
        kind: str,
        name: str,
        namespace: str,
        status: int,
        fields: tuple[str, ...],
        api_message: str,
    ) -> None:
        super().__init__(user_message, detail, reason=reason)
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.status = status
        self.fields = fields
        self.api_message = api_message


class NameTemplateRefused(_ShownByJupyterHub, ConfigurationError):
    """A name-bearing template of the spawner configuration gives names Kubernetes refuses."""

    label = "config"


_shown_classes: dict[type[DnaHubError], type[DnaHubError]] = {}


def shown_by_jupyterhub(error: DnaHubError) -> DnaHubError:
    """``error`` as an error JupyterHub shows whenever the spawn fails, even in its first
    second (see the module doc): the same class (a subclass of it, made once per class),
    message, detail and attributes. An error that already is one is returned as it is."""
    if isinstance(error, SpawnException):
        return error
    cls = type(error)
    shown: Any = _shown_classes.get(cls)
    if shown is None:
        shown = _shown_classes[cls] = type(cls.__name__, (_ShownByJupyterHub, cls), {})
        shown.__module__ = cls.__module__
        shown.__qualname__ = cls.__qualname__
    # a request the user may not make is refused (403); anything else failed (500)
    status = 403 if isinstance(error, PolicyError) else 500
    new = shown(error.user_message, error.detail, reason=error.reason, status_code=status)
    for name, value in vars(error).items():
        new.__dict__.setdefault(name, value)
    new.__cause__, new.__context__ = error.__cause__, error.__context__
    return new.with_traceback(error.__traceback__)


def refusal(
    error: BaseException,
    *,
    kind: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
) -> KubernetesRefused | None:
    """The :class:`KubernetesRefused` for a 4xx ``ApiException``; None for anything else.

    409 (conflict) and 429 (slow down) are not refusals: KubeSpawner and
    :func:`dna_hub.k8s.retry.asks_to_retry` retry them. What is not given (a refusal that
    escaped from a hook) is read from the Status Kubernetes answered with.
    """
    if not isinstance(error, ApiException):
        return None
    status = error.status
    if not isinstance(status, int) or not 400 <= status < 500 or status in (409, 429):
        return None
    body = api_status(error)
    details: dict[str, Any] = body["details"] if isinstance(body.get("details"), dict) else {}
    kind = kind or _KINDS.get(str(details.get("kind", "")).lower(), details.get("kind")) or ""
    name = name or str(details.get("name") or "")
    causes: list[Any] = details["causes"] if isinstance(details.get("causes"), list) else []
    fields = tuple(str(c["field"]) for c in causes if isinstance(c, dict) and c.get("field"))
    message = api_message(error)
    quota = status == 403 and "exceeded quota" in message
    # the causes people can act on, as on the progress page (dna_hub/policy/spawn_progress.py)
    explained = explain_event("Forbidden", message) if status == 403 else None
    what = _WHAT.get(kind, "an object of your notebook server")
    if status in (400, 422):
        reason = "invalid"
        user = (
            f"The cluster refused to create {what}: the hub's configuration produced an "
            "invalid one. Nothing you do can fix it; please contact your platform "
            "administrator (the hub's log has the details)."
        )
        fix = (
            "check the spawner settings that name or shape it (dna-hub render --pod shows "
            "the pod; dna-hub doctor checks the name templates)"
        )
    elif quota:
        reason = "quota"
        user = (
            explained.message
            if explained is not None and explained.cause == "gpu-quota"
            else f"There is no room for {what}: your Kubeflow profile's resource quota is used "
            "up. Stop another notebook server or workload in your profile, or ask your "
            "platform administrator for a larger quota, then try again."
        )
        fix = (
            "the profile's ResourceQuota (DnaSpawner.profile_resource_quota, "
            "profile_group_resource_quotas)"
        )
    elif explained is not None and explained.cause == "profile-not-ready":
        reason = "missing"
        user = explained.message
        fix = "whether the profile's namespace and default-editor service account exist"
    elif status == 403:
        reason = "forbidden"
        user = (
            f"JupyterHub is not allowed to create {what}. Please contact your platform "
            "administrator."
        )
        fix = "the hub's RBAC (helm-values/hub-rbac.yaml) and the cluster's admission policies"
    elif status == 404:
        reason = "missing"
        user = (
            f"{what[0].upper()}{what[1:]} could not be created: your Kubeflow profile's "
            "namespace is missing (it may be being deleted). Please try again in a minute; "
            "if it keeps failing, contact your platform administrator."
        )
        fix = "whether the profile namespace exists (kubectl get profile,namespace)"
    else:
        reason = "refused"
        user = f"The cluster refused to create {what}. Please contact your platform administrator."
        fix = "the Kubernetes message"
    where = f"{namespace}/{name}" if namespace and name else (name or namespace or "?")
    status_reason = body.get("reason") or error.reason or ""
    detail = (
        f"creating {kind or 'an object'} {where} was refused: HTTP {status}"
        f"{' ' + str(status_reason) if status_reason else ''}"
        f"{' (fields: ' + ', '.join(fields) + ')' if fields else ''}: {message} — check {fix}"
    )
    return KubernetesRefused(
        user,
        detail,
        reason=reason,
        kind=kind,
        name=name,
        namespace=namespace or "",
        status=status,
        fields=fields,
        api_message=message,
    )


def raise_refusal(
    error: BaseException,
    *,
    kind: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
) -> None:
    """Raise the :class:`KubernetesRefused` of ``error`` (from it), if it is a refusal.

    Use it in an ``except ApiException`` block before a bare ``raise``, which keeps any
    other error as it was.
    """
    refused = refusal(error, kind=kind, name=name, namespace=namespace)
    if refused is not None:
        raise refused from error


async def refusals_explained(
    call: Awaitable[T],
    *,
    kind: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
) -> T:
    """Await ``call``; a refusal escaping from it becomes a :class:`KubernetesRefused`.

    What is not given (a refusal from a hook's object, or KubeSpawner's own Service or SSL
    Secret) is read from the Status Kubernetes answered with.
    """
    try:
        return await call
    except ApiException as e:
        raise_refusal(e, kind=kind, name=name, namespace=namespace)
        raise
