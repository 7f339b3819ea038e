"""Public, documented path of the team hooks: at login (``c.Authenticator.post_auth_hook``)
after every re-check with the provider (``c.DnaOIDCAuthenticator.team_access_hook``) and
after every background re-check of all users (``c.DnaOIDCAuthenticator.team_sweep_hook``).

The hook lives in :mod:`dna_hub.hub.team_login`; this module keeps the import path that
docs/deploy.md and existing hub configurations use.
"""

from dna_hub.hub.team_login import (
    pending,
    sweep_team_access,
    sync_teams_at_login,
    sync_teams_at_recheck,
)

__all__ = ["pending", "sweep_team_access", "sync_teams_at_login", "sync_teams_at_recheck"]
