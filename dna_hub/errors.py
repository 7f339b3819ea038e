"""Every error dna_hub raises on purpose: one root, one subclass per cause.

A :class:`DnaHubError` carries two texts: ``user_message``, what the person whose login or
spawn failed can act on (JupyterHub shows an exception's ``jupyterhub_message`` on the
spawn-progress page), and ``detail``, what the operator needs (``str(error)``, which goes to
the hub log). ``reason`` is a fixed label per class, for metrics and logs; it never comes
from a caller, so a cause is always its own class.

Three families, siblings under the root, because they call for different people:

- :class:`ConfigurationError` — dna_hub's configuration (traits, templates, naming policy)
  cannot serve this user: the platform engineer fixes the config;
- :class:`ProvisioningError` — talking to the cluster failed (ownership, timeouts, refusals):
  the operator looks at the cluster, or the user tries again;
- :class:`PolicyError` — the request itself is not allowed (a team the user may not use): the
  user is told why, nobody needs to fix anything.

Errors of the pure policy modules that are plain ``ValueError`` subclasses
(:class:`~dna_hub.policy.naming.NamespacePolicyError`,
:class:`~dna_hub.policy.rendering.TemplateError`, :class:`~dna_hub.policy.teams.TeamConfigError`)
stay ``ValueError``s so traitlets validators can raise them; the hub layer wraps them in the
classes below. The login path's errors (:mod:`dna_hub.auth`) are tornado ``HTTPError``s and
token errors with their own reasons: they never reach a spawn.
"""

from __future__ import annotations

__all__ = [
    "ApiFailure",
    "ApiForbidden",
    "ConfigurationError",
    "DnaHubError",
    "InvalidObject",
    "NamingError",
    "OptionNotAllowed",
    "OwnershipConflict",
    "PolicyError",
    "ProfileDeleting",
    "ProfileNotReady",
    "ProvisioningError",
    "ServerNotStarted",
    "TeamNotAllowed",
    "TeamUnavailable",
    "TemplateRenderError",
]


class DnaHubError(Exception):
    """Root of dna_hub's errors: a message for the user, the detail for the operator."""

    #: Fixed label of the cause (metrics ``reason``, logs). Each subclass sets its own.
    reason = "error"

    def __init__(self, user_message: str, detail: str | None = None) -> None:
        super().__init__(f"{user_message} ({detail})" if detail else user_message)
        self.user_message = user_message
        self.detail = detail

    @property
    def jupyterhub_message(self) -> str:
        """What JupyterHub shows the user on the spawn page."""
        return self.user_message


# --- configuration: the platform engineer fixes it ----------------------------------------


class ConfigurationError(DnaHubError):
    """dna_hub's configuration cannot serve this user (traits, owner, team settings)."""

    reason = "config"


class NamingError(ConfigurationError):
    """The naming policy gives no usable namespace for this user or team."""

    reason = "naming"


class TemplateRenderError(ConfigurationError):
    """A profile template does not render objects dna_hub may apply."""

    reason = "template"


# --- provisioning: the cluster said no, or did not answer ---------------------------------


class ProvisioningError(DnaHubError):
    """Provisioning a Kubeflow profile failed in the cluster."""

    reason = "provisioning"


class OwnershipConflict(ProvisioningError):
    """The Profile or namespace exists and belongs to someone else: nothing is written."""

    reason = "ownership"


class ProfileDeleting(ProvisioningError):
    """The Profile is being deleted: a new one can only be made once it is gone."""

    reason = "deleting"


class ProfileNotReady(ProvisioningError):
    """The profile controller did not create the namespace or service account in time."""

    reason = "timeout"


class ApiFailure(ProvisioningError):
    """The Kubernetes API failed, or kept failing after bounded retries."""

    reason = "api"


class ApiForbidden(ApiFailure):
    """The API server refused the hub's request (403): its RBAC or an admission guard."""

    reason = "forbidden"


class InvalidObject(ApiFailure):
    """The API server refused an object as invalid (400/422): a template or config fault."""

    reason = "invalid"


class ServerNotStarted(ProvisioningError):
    """The notebook pod did not start in time, for a cause its events name (no GPU free, an
    image that cannot be pulled, ...): the user reads that cause, not a timeout."""

    reason = "not-started"


class TeamUnavailable(ProvisioningError):
    """The team profile a server needs could not be made ready."""

    reason = "team"


# --- policy: the request is not allowed --------------------------------------------------


class PolicyError(DnaHubError):
    """What was asked for is not allowed for this user."""

    reason = "policy"


class TeamNotAllowed(PolicyError):
    """A team choice the user's verified groups do not entitle them to."""

    reason = "team"


class OptionNotAllowed(PolicyError):
    """A server option (or a choice of one) the user's verified groups do not entitle them to."""

    reason = "option"
