"""The pure claim rules of dna_hub.auth.claims (the hub-level tests are in
test_auth_hardening.py): groups claim types, the Kubeflow identity rule, subject bindings."""

from __future__ import annotations

import pytest

from dna_hub.auth.binding import make_binding, verify_binding
from dna_hub.auth.claims import (
    KUBEFLOW_IDENTITY_MAX_LENGTH,
    ClaimError,
    check_kubeflow_identity,
    groups_from_claims,
    kubeflow_identity_problem,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, []), ([], []), (["a", "b"], ["a", "b"])],
)
def test_groups_list(value, expected):
    assert groups_from_claims({"groups": value}, "groups") == expected


@pytest.mark.parametrize("value", ["hub-admins", {"a": 1}, 3, ["a", 1], [None], True])
def test_groups_wrong_type_refused(value):
    with pytest.raises(ClaimError, match="'groups' claim as"):
        groups_from_claims({"groups": value}, "groups")


def test_groups_single_string_only_when_allowed():
    assert groups_from_claims({"g": "x"}, "g", allow_single_string=True) == ["x"]
    with pytest.raises(ClaimError, match="a single string"):
        groups_from_claims({"g": "x"}, "g")


@pytest.mark.parametrize(
    "value",
    [
        "alice@example.com",
        "Alice.Smith@Example.com",
        "sub|123",
        "ü@ß.de",
        "😀@x",
        "a" * 256,
        "dna-hub-team@example.com",  # only the exact reserved prefix is refused
        "x:dna-hub-team:y",
    ],
)
def test_good_identities(value):
    assert kubeflow_identity_problem(value) is None
    assert check_kubeflow_identity(value, "x") == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("a" * (KUBEFLOW_IDENTITY_MAX_LENGTH + 1), "characters long"),
        ("a\nb", "U+000A"),
        ("a b", "U+0020"),
        ("a\tb", "U+0009"),
        ("a\u00a0b", "U+00A0"),  # no-break space
        ("a\u200bb", "U+200B"),  # zero-width space (format)
        ("a\u2028b", "U+2028"),  # line separator
        ("a\x00b", "U+0000"),
        ("a\ud800b", "U+D800"),  # lone surrogate
        (42, "not a string"),
        # a team Profile's owner (issue 25): whoever logged in as it would own the team
        ("dna-hub-team:kubeflow-team-ml", "starts with 'dna-hub-team:'"),
        ("DNA-Hub-Team:kubeflow-team-ml", "starts with 'dna-hub-team:'"),
        ("system:serviceaccount:jupyterhub:hub", "starts with 'system:'"),
        ("System:Masters", "starts with 'system:'"),
    ],
)
def test_bad_identities(value, problem):
    assert problem in (kubeflow_identity_problem(value) or "")
    with pytest.raises(ClaimError, match="from the 'email' claim"):
        check_kubeflow_identity(value, "the 'email' claim")


def test_binding_mac():
    key, other_key = b"k" * 32, b"o" * 32
    binding = make_binding(key, "carol", "https://idp", "sub-1")
    assert verify_binding(binding, [key], "carol")
    assert verify_binding(binding, [other_key, key], "carol")  # key rotation
    assert not verify_binding(binding, [other_key], "carol")
    assert not verify_binding(binding, [key], "bob")  # copied to another user
    assert not verify_binding({**binding, "sub": "sub-2"}, [key], "carol")
    assert not verify_binding({**binding, "iss": "https://evil"}, [key], "carol")
    assert not verify_binding({"iss": "x", "sub": "y"}, [key], "carol")
    assert not verify_binding("garbage", [key], "carol")
    assert not verify_binding(binding, [], "carol")
