"""The private methods of KubeSpawner and oauthenticator that dna_hub relies on, pinned.

dna_hub overrides or calls a few private methods where no public hook fits (each is named
below with why). A KubeSpawner or oauthenticator release may change them without notice;
this test compares their signatures on the installed versions with the ones dna_hub was
written against, so an upgrade fails here, naming what changed, instead of in a spawn.

Public hooks considered and not used: ``after_pod_created_hook`` would give the pod's UID
for the API-token Secret's ownerReference, but it is an operator's trait (z2jh sets hooks
from values): a configured hook would silently replace dna_hub's required step, and the pod
creation needs dna_hub's retry of "try again" answers anyway (``_make_create_pod_request``).
"""

from __future__ import annotations

import inspect

import oauthenticator.oauth2
import pytest
from kubespawner import KubeSpawner

from dna_hub.hub.spawner import DnaSpawner

#: KubeSpawner's private methods DnaSpawner overrides or calls, with the signature written for.
KUBESPAWNER_SEAMS = {
    # the whole start: provisioning before KubeSpawner's own
    "_start": "(self)",
    # the profile controller makes the namespace, never KubeSpawner
    "_ensure_namespace": "(self)",
    # lean reflectors and a relist period KubeSpawner does not expose
    "_start_reflector": "(self, kind: str, reflector_class: "
    "Type[kubespawner.reflector.ResourceReflector], replace: bool = False, **kwargs)",
    # retry of 429/ServerTimeout, the API-token Secret owned by the pod, refusals explained
    "_make_create_pod_request": "(self, pod, request_timeout)",
    "_make_create_pvc_request": "(self, pvc, request_timeout)",
    # the labels the PodDefault selects, whatever extra_labels says
    "_build_pod_labels": "(self, extra_labels)",
    # no form where there is no choice
    "_render_options_form_dynamically": "(self, current_spawner)",
    "_render_options_form": "(self, profile_list)",
    # the profile_list steps of KubeSpawner's load_user_options, run on the entries the
    # user's verified groups allow (dna_hub/hub/server_choice.py)
    "_sorted_dict_values": "(self, src)",
    "_get_initialized_profile_list": "(self, profile_list: list)",
    "_validate_user_options": "(self, profile_list)",
    "_load_profile": "(self, slug, profile_list)",
    # the name check expands templates exactly as KubeSpawner does
    "_expand_user_properties": "(self, template, slug_scheme=None)",
}

#: oauthenticator's state cookie codec, which the login handlers share with it.
OAUTHENTICATOR_SEAMS = {
    "_serialize_state": "(state)",
    "_deserialize_state": "(b64_state)",
}


@pytest.mark.parametrize("name", sorted(KUBESPAWNER_SEAMS))
def test_kubespawner_private_methods_are_as_written_for(name: str) -> None:
    method = getattr(KubeSpawner, name, None)
    assert method is not None, f"KubeSpawner.{name} is gone: dna_hub's override has no effect"
    assert str(inspect.signature(method)) == KUBESPAWNER_SEAMS[name], (
        f"KubeSpawner.{name} changed its signature: review DnaSpawner's use of it"
    )


def test_dna_spawner_overrides_only_pinned_private_methods() -> None:
    """A new override of a private KubeSpawner method must be pinned above."""
    overridden = {
        name
        for name, value in vars(DnaSpawner).items()
        if name.startswith("_")
        and not name.startswith("__")
        and callable(value)
        and hasattr(KubeSpawner, name)
        and not name.startswith(("_validate", "_default"))
        and not name.endswith("_default")
    }
    assert overridden <= set(KUBESPAWNER_SEAMS), overridden - set(KUBESPAWNER_SEAMS)


@pytest.mark.parametrize("name", sorted(OAUTHENTICATOR_SEAMS))
def test_oauthenticator_private_functions_are_as_written_for(name: str) -> None:
    function = getattr(oauthenticator.oauth2, name, None)
    assert function is not None, f"oauthenticator.oauth2.{name} is gone"
    assert str(inspect.signature(function)) == OAUTHENTICATOR_SEAMS[name]
