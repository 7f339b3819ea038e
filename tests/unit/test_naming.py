"""The namespace policy: valid, deterministic, injective, never chosen by the user."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dna_hub.policy.naming import NamespacePolicyError, namespace_for, validate_namespace_template

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

HOSTILE_USERNAMES = [
    "alice",
    "Alice",
    "ALICE",
    "alice.smith",
    "alice_smith",
    "alice-smith",
    "alice@example.com",
    "Alice@Example.com",
    "zoë",
    "zoe",
    "用户",
    "ユーザー",
    "a" * 200,
    "a" * 201,
    "b" * 54,
    "b" * 55,
    "alice\nbob",
    "alice\rbob",
    'alice"bob',
    "alice'bob",
    "{{ namespace }}",
    "{% raw %}",
    "{username}",
    "alice: bob",
    "- alice",
    "alice---deadbeef",
    "alice--bob",
    "-alice",
    "alice-",
    "1alice",
    "123",
    " alice",
    "alice ",
    "al ice",
    "kube-system",
    "default",
    "x",
    "../../etc",
    "alice\x00",
]


def test_plain_username_is_used_as_is() -> None:
    assert namespace_for("alice") == "kubeflow-alice"
    assert namespace_for("alice-smith") == "kubeflow-alice-smith"


@pytest.mark.parametrize("username", HOSTILE_USERNAMES)
def test_hostile_usernames_give_valid_labels(username: str) -> None:
    namespace = namespace_for(username)
    assert DNS_1123_LABEL.match(namespace), namespace
    assert len(namespace) <= 63
    assert namespace.startswith("kubeflow-")
    # deterministic: the same input always gives the same namespace
    assert namespace_for(username) == namespace


def test_hostile_usernames_are_distinct() -> None:
    namespaces = [namespace_for(u) for u in HOSTILE_USERNAMES]
    assert len(set(namespaces)) == len(HOSTILE_USERNAMES)


def test_names_that_normalise_alike_stay_apart() -> None:
    group = ["alice.smith", "alice_smith", "alice-smith", "Alice-Smith", "alice smith"]
    assert len({namespace_for(u) for u in group}) == len(group)


def test_known_values_are_stable_across_releases() -> None:
    # A change here moves users to new, empty profiles: it must be deliberate.
    assert namespace_for("Alice@Example.com") == "kubeflow-alice-example-com---f8db6f2f"
    assert namespace_for("alice.smith") == "kubeflow-alice-smith---63425827"
    assert namespace_for("a" * 200) == "kubeflow-" + "a" * 43 + "---c2a908d9"


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_any_username_gives_a_valid_label(username: str) -> None:
    namespace = namespace_for(username)
    assert DNS_1123_LABEL.match(namespace)
    assert len(namespace) <= 63


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_different_usernames_never_share_a_namespace(a: str, b: str) -> None:
    if a != b:
        assert namespace_for(a) != namespace_for(b)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("kubeflow", "exactly once"),
        ("{username}-{username}", "exactly once"),
        ("{username}-{servername}", "exactly once"),
        ("Kubeflow-{username}", "lowercase"),
        ("kube.flow-{username}", "lowercase"),
        ("-{username}", "start with"),
        ("kubeflow--{username}", "'--'"),
        ("a" * 52 + "-{username}", "at least 12"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(template: str, problem: str) -> None:
    with pytest.raises(NamespacePolicyError, match=re.escape(problem)):
        validate_namespace_template(template)


def test_reserved_namespaces_are_refused() -> None:
    with pytest.raises(NamespacePolicyError, match="reserved namespace 'kube-system'"):
        namespace_for("kube-system", "{username}")
    with pytest.raises(NamespacePolicyError, match="reserved"):
        namespace_for("default", "{username}")
    # ... but with the default prefix they are ordinary users
    assert namespace_for("kube-system") == "kubeflow-kube-system"


def test_empty_username_is_an_error() -> None:
    with pytest.raises(NamespacePolicyError, match="empty username"):
        namespace_for("")


def test_custom_template_fits_63_characters() -> None:
    namespace = namespace_for("a" * 100, "team-ml-{username}-nb")
    assert len(namespace) <= 63
    assert namespace.startswith("team-ml-") and namespace.endswith("-nb")


@pytest.mark.parametrize(
    ("username", "namespace"),
    [
        ("system", "kubeflow-system"),
        ("monitoring", "kubeflow-monitoring"),
        ("user-example-com", "kubeflow-user-example-com"),
    ],
)
def test_usernames_mapping_onto_kubeflows_own_namespaces_are_reserved(
    username: str, namespace: str
) -> None:
    with pytest.raises(NamespacePolicyError, match=f"reserved namespace '{namespace}'"):
        namespace_for(username)
