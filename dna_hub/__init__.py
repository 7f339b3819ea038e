"""dna_hub: Zero to JupyterHub as the notebook front door of a multi-user Kubeflow platform.

The two classes a JupyterHub config selects are imported lazily, so the pure modules
(`dna_hub.policy.naming`, `dna_hub.policy.rendering`, ...) can be used without importing JupyterHub.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DnaOIDCAuthenticator", "DnaSpawner", "__version__"]

if TYPE_CHECKING:
    from dna_hub.auth.oidc import DnaOIDCAuthenticator
    from dna_hub.hub.spawner import DnaSpawner


def __getattr__(name: str) -> Any:
    if name == "DnaSpawner":
        from dna_hub.hub.spawner import DnaSpawner

        return DnaSpawner
    if name == "DnaOIDCAuthenticator":
        from dna_hub.auth.oidc import DnaOIDCAuthenticator

        return DnaOIDCAuthenticator
    raise AttributeError(f"module 'dna_hub' has no attribute {name!r}")
