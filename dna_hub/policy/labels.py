"""Every label, annotation and field manager dna_hub writes or reads, in one place.

These names are an interface: the admission guards (``helm-values/hub-object-guard.yaml``),
``dna-hub sync``/``gc``, the profile templates and operators' selectors all rely on them, so
a change here is a migration, never a rename.
"""

from __future__ import annotations

#: The server-side-apply field manager of every object dna_hub renders.
FIELD_MANAGER = "dna-hub"
#: Offboarding writes its marks as its own field manager, so removing them is one apply.
OFFBOARDING_FIELD_MANAGER = "dna-hub-offboarding"

#: ``app.kubernetes.io/managed-by: dna-hub`` on every object dna_hub renders or creates.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "dna-hub"
#: The profile an object belongs to (a label value is at most 63 characters — the namespace
#: always is — and the username may not be).
PROFILE_LABEL = "dna-hub.io/profile"

#: The digest of what was last applied to a Profile (``pending`` while an apply runs).
DIGEST_ANNOTATION = "dna-hub.io/applied-digest"
#: The hub user a Profile was rendered for, and their hub groups then (JSON list).
USERNAME_ANNOTATION = "dna-hub.io/hub-username"
GROUPS_ANNOTATION = "dna-hub.io/hub-groups"
#: On a team Profile instead of the hub username: the OIDC group of the team.
TEAM_GROUP_ANNOTATION = "dna-hub.io/team-group"
#: Set when the hub deleted the user and DnaSpawner.profile_retention is "keep".
ORPHANED_LABEL = "dna-hub.io/orphaned"
ORPHANED_AT_ANNOTATION = "dna-hub.io/orphaned-at"

#: On every contributor object dna_hub makes: a hash of the identity it is for, so one
#: label-selected list finds exactly this identity's bindings (a label value cannot hold an
#: email address; the exact identity is the ``user`` annotation, as Kubeflow writes it).
CONTRIBUTOR_LABEL = "dna-hub.io/contributor"

#: Marks a notebook server's API-token Secret with its pod (the admission guard checks it).
API_TOKEN_LABEL = "dna-hub.io/api-token-for"  # noqa: S105 (a label name, not a secret)

#: Labels every notebook pod carries, whatever extra_labels says (z2jh sets extra_labels
#: from singleuser.extraLabels, replacing any default): the access-ml-pipeline PodDefault
#: selects pods by it and mounts the KFP token into them.
REQUIRED_POD_LABELS = {"access-ml-pipeline": "true"}

#: Selector of everything dna_hub manages.
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"

#: A team Profile's owner is ``dna-hub-team:<profile name>``: an identity of its own per team,
#: which no person logs in as (DnaOIDCAuthenticator refuses it as a Kubeflow identity) and
#: which the admission guards admit as owner of that one Profile only.
TEAM_OWNER_PREFIX = "dna-hub-team:"
