"""Errors a spawn can fail with: a message the user can act on, the detail for the admin.

JupyterHub shows ``jupyterhub_message`` of a failed spawn's exception on the progress page;
``str(error)`` (the admin detail) goes to the hub log.
"""

from __future__ import annotations


class ProvisioningError(Exception):
    """Provisioning a user's Kubeflow profile failed.

    ``reason`` is a short, fixed label for metrics and logs: ``ownership``, ``timeout``,
    ``api``, ``forbidden``, ``invalid`` (the cluster rejected a manifest), ``deleting``,
    ``naming``, ``template``, ``config``, ``team`` (a team choice refused or unavailable).
    """

    reason = "error"

    def __init__(self, user_message: str, detail: str | None = None, *, reason: str | None = None):
        super().__init__(f"{user_message} ({detail})" if detail else user_message)
        self.user_message = user_message
        self.detail = detail
        if reason:
            self.reason = reason

    @property
    def jupyterhub_message(self) -> str:
        return self.user_message


class OwnershipConflict(ProvisioningError):
    """The Profile or namespace exists and belongs to someone else: nothing is written."""

    reason = "ownership"


class ProfileNotReady(ProvisioningError):
    """The profile controller did not create the namespace or service account in time."""

    reason = "timeout"


class ApiFailure(ProvisioningError):
    """The Kubernetes API refused a request, or kept failing after bounded retries."""

    reason = "api"


class ConfigurationError(ProvisioningError):
    """dna_hub's configuration (templates, naming policy) cannot serve this user."""

    reason = "config"
