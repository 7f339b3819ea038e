"""Public, documented path of the login hook (``c.Authenticator.post_auth_hook``).

The hook lives in :mod:`dna_hub.hub.team_login`; this module keeps the import path that
docs/deploy.md and existing hub configurations use.
"""

from dna_hub.hub.team_login import pending, sync_teams_at_login

__all__ = ["pending", "sync_teams_at_login"]
