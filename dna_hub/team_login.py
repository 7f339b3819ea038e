"""Public, documented path of the team hooks: at login (``c.Authenticator.post_auth_hook``)
and after every re-check with the provider (``c.DnaOIDCAuthenticator.team_access_hook``).

The hook lives in :mod:`dna_hub.hub.team_login`; this module keeps the import path that
docs/deploy.md and existing hub configurations use.
"""

from dna_hub.hub.team_login import pending, sync_teams_at_login, sync_teams_at_recheck

__all__ = ["pending", "sync_teams_at_login", "sync_teams_at_recheck"]
