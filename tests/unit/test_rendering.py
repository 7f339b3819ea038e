"""Profile templates: data, not code — no username or claim changes a manifest's structure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from devstack.paths import shared_path
from dna_hub.policy.naming import namespace_for
from dna_hub.policy.rendering import (
    MANAGED_BY_LABEL,
    PROFILE_LABEL,
    ProfileContext,
    TemplateError,
    render_profile,
)
from tests.unit.test_naming import HOSTILE_USERNAMES

HOSTILE_CLAIMS = [
    "alice@example.com",
    "Alice.Smith@Example.COM",
    'evil"\n  kind: ClusterRoleBinding\n#',
    "evil'\n---\napiVersion: v1\nkind: Secret",
    "{{ namespace }}{% if true %}x{% endif %}",
    "key: value",
    "- item",
    "&anchor *alias !!python/object",
    "\u2028\u2029\t\x85",
    "x" * 500,
]


def context(username: str = "alice", owner: str = "alice@example.com", **kw: Any) -> ProfileContext:
    return ProfileContext(
        username=username,
        namespace=namespace_for(username),
        owner=owner,
        hub_namespace="jupyterhub",
        groups=kw.pop("groups", ("data-science",)),
        **kw,
    )


def shape(value: Any) -> Any:
    """The structure of a manifest: keys and types, with strings blanked."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def all_optional(**kw: Any) -> ProfileContext:
    return context(
        legacy_envoy_filter=True,
        legacy_ml_pipeline_policy=True,
        resource_quota={"hard": {"cpu": "4", "memory": "8Gi"}},
        **kw,
    )


def test_default_set_secure_by_default() -> None:
    rendered = render_profile(context())
    kinds = [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]
    assert kinds == [
        ("Profile", "kubeflow-alice"),
        ("PodDefault", "access-ml-pipeline"),
        ("LimitRange", "dna-hub-defaults"),
        ("AuthorizationPolicy", "dna-hub-notebook-ingress"),
        ("NetworkPolicy", "dna-hub-notebook-ingress"),
        ("NetworkPolicy", "dna-hub-metadata-egress"),
        ("Role", "dna-hub-kale-workflows"),
        ("RoleBinding", "dna-hub-kale-workflows"),
    ]
    # legacy header-based pieces are off by default
    assert not any(o["kind"] == "EnvoyFilter" for o in rendered.objects)
    for obj in rendered.namespaced:
        assert obj["metadata"]["namespace"] == "kubeflow-alice"
    for obj in rendered.objects:
        assert obj["metadata"]["labels"][MANAGED_BY_LABEL] == "dna-hub"
        assert obj["metadata"]["labels"][PROFILE_LABEL] == "kubeflow-alice"


def test_profile_owner_keeps_case() -> None:
    rendered = render_profile(context(owner="Alice.Smith@Example.COM"))
    assert rendered.profile["spec"]["owner"] == {"kind": "User", "name": "Alice.Smith@Example.COM"}
    assert "resourceQuotaSpec" not in rendered.profile["spec"]


def test_pod_default_mounts_the_kfp_token() -> None:
    (pod_default,) = [o for o in render_profile(context()).namespaced if o["kind"] == "PodDefault"]
    spec = pod_default["spec"]
    assert spec["selector"] == {"matchLabels": {"access-ml-pipeline": "true"}}
    (volume,) = spec["volumes"]
    token = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {
        "path": "token",
        "expirationSeconds": 7200,
        "audience": "pipelines.kubeflow.org",
    }
    assert spec["volumeMounts"][0]["mountPath"] == "/var/run/secrets/kubeflow/pipelines"
    assert spec["env"] == [
        {"name": "KF_PIPELINES_SA_TOKEN_PATH", "value": "/var/run/secrets/kubeflow/pipelines/token"}
    ]


def _by_kind(ctx: ProfileContext) -> dict[str, dict[str, Any]]:
    """The namespaced objects by kind; of the NetworkPolicies, the notebook's."""
    objs = render_profile(ctx).namespaced
    return {o["kind"]: o for o in objs if o["metadata"]["name"] != "dna-hub-metadata-egress"}


def test_notebook_ingress_is_not_open_to_everyone() -> None:
    objs = _by_kind(context())
    policy = objs["AuthorizationPolicy"]["spec"]
    assert policy["action"] == "ALLOW"
    (rule,) = policy["rules"]
    assert rule["from"] == [{"source": {"namespaces": ["jupyterhub", "kubeflow-alice"]}}]
    assert rule["to"] == [{"operation": {"ports": ["8888"]}}]
    netpol = objs["NetworkPolicy"]["spec"]
    assert netpol["policyTypes"] == ["Ingress", "Egress"]
    (egress,) = netpol["egress"]
    # every cloud metadata address: all of link-local (GKE's is 169.254.169.252) + Alibaba's
    blocked = ["169.254.0.0/16", "100.100.100.200/32"]
    assert {"ipBlock": {"cidr": "0.0.0.0/0", "except": blocked}} in egress["to"]
    assert all("::" not in str(peer) for peer in egress["to"])  # no IPv6 egress opened
    (ingress,) = netpol["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8888}]
    hub_peer, own_namespace = ingress["from"]
    assert hub_peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "jupyterhub"
    }
    assert own_namespace == {"podSelector": {}}


def test_kale_role_has_only_what_kale_needs() -> None:
    objs = {o["kind"]: o for o in render_profile(context()).namespaced}
    for rule in objs["Role"]["rules"]:
        assert rule["apiGroups"] == ["argoproj.io"]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        # core kinds under the argoproj.io group grant nothing: they must not be there
        assert not {"pods", "pods/log", "secrets"} & set(rule["resources"])
    binding = objs["RoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "default-editor", "namespace": "kubeflow-alice"}
    ]


def test_legacy_envoy_filter_overwrites_never_appends() -> None:
    (envoy,) = [o for o in render_profile(all_optional()).namespaced if o["kind"] == "EnvoyFilter"]
    text = json.dumps(envoy)
    assert '"append": true' not in text
    (header,) = envoy["spec"]["configPatches"][0]["patch"]["value"]["request_headers_to_add"]
    assert header["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
    assert header["header"] == {"key": "kubeflow-userid", "value": "alice@example.com"}


def test_legacy_ml_pipeline_policy_lives_in_kfp_namespace() -> None:
    objs = render_profile(all_optional()).namespaced
    (policy,) = [
        o
        for o in objs
        if o["metadata"].get("namespace") == "kubeflow"
        and o["metadata"]["name"].startswith("dna-hub-ml-pipeline-")
    ]
    assert policy["metadata"]["name"] == "dna-hub-ml-pipeline-kubeflow-alice"
    assert policy["spec"]["rules"][0]["from"][0]["source"]["principals"] == [
        "cluster.local/ns/kubeflow-alice/sa/default-editor"
    ]


@pytest.mark.parametrize("username", HOSTILE_USERNAMES)
def test_hostile_usernames_keep_structure(username: str) -> None:
    reference = render_profile(all_optional())
    rendered = render_profile(all_optional(username=username))
    assert [shape(o) for o in rendered.objects] == [shape(o) for o in reference.objects]
    assert rendered.profile["metadata"]["name"] == namespace_for(username)


@pytest.mark.parametrize("claim", HOSTILE_CLAIMS)
def test_hostile_claims_keep_structure_and_stay_verbatim(claim: str) -> None:
    reference = render_profile(all_optional())
    rendered = render_profile(all_optional(owner=claim, groups=(claim, "ok")))
    assert [shape(o) for o in rendered.objects] == [shape(o) for o in reference.objects]
    # the value arrives exactly as given, inside its string
    assert rendered.profile["spec"]["owner"]["name"] == claim
    assert len(rendered.objects) == len(reference.objects)


def test_digest_changes_with_content_only() -> None:
    assert render_profile(context()).digest == render_profile(context()).digest
    assert render_profile(context()).digest != render_profile(context(owner="bob@x")).digest
    assert render_profile(context()).digest != render_profile(all_optional()).digest


# --- admin templates: override, add, and clear errors -------------------------------------


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def test_extra_dir_adds_and_overrides(tmp_path: Path) -> None:
    write(
        tmp_path,
        "40-configmap.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: team\n  namespace: {{ namespace }}\n"
        "data:\n  owner: {{ owner }}\n  site: {{ extra.site }}\n",
    )
    write(tmp_path, "90-legacy-envoyfilter.yaml.j2", "")  # an override that renders nothing
    rendered = render_profile(context(legacy_envoy_filter=True, extra={"site": "eu-1"}), [tmp_path])
    kinds = [o["kind"] for o in rendered.objects]
    assert "ConfigMap" in kinds and "EnvoyFilter" not in kinds
    (cm,) = [o for o in rendered.objects if o["kind"] == "ConfigMap"]
    assert cm["data"] == {"owner": "alice@example.com", "site": "eu-1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ nmespace }}\n", "'nmespace'"),
        ("{% if %}", "line 1"),
        (
            'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "{{ namespace }}"\n'
            "  namespace: {{ namespace }}\n",
            "does not render valid YAML",
        ),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n", "namespace None"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: kube-system\n",
            "namespace 'kube-system'",
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n"
            "metadata:\n  name: x\n",
            "only writes into the user's namespace",
        ),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "no metadata.name"),
        ("- a\n- b\n", "renders a list"),
        ("kind: ConfigMap\nmetadata:\n  name: x\n", "no apiVersion"),
        (
            "apiVersion: kubeflow.org/v1\nkind: Profile\nmetadata:\n  name: someone-else\n"
            "spec:\n  owner: {kind: User, name: x}\n",
            "named after the user's namespace",
        ),
        (
            "apiVersion: kubeflow.org/v1alpha1\nkind: PodDefault\nmetadata:\n"
            "  name: access-ml-pipeline\n  namespace: {{ namespace }}\nspec: {}\n",
            "rendered twice",
        ),
    ],
)
def test_bad_templates_fail_with_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, "50-admin.yaml.j2", text)
    with pytest.raises(TemplateError, match=message.replace("(", r"\(")) as info:
        render_profile(context(), [tmp_path])
    assert "50-admin.yaml.j2" in str(info.value) or "rendered twice" in str(info.value)


def test_missing_template_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        render_profile(context(), [tmp_path / "nope"])


def test_templates_cannot_reach_python(tmp_path: Path) -> None:
    write(
        tmp_path,
        "50-admin.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: {{ namespace }}\n"
        # __name__ is a plain string: only the sandbox stops this rendering
        "data:\n  x: {{ ''.__class__.__name__ }}\n",
    )
    with pytest.raises(TemplateError, match="unsafe"):
        render_profile(context(), [tmp_path])


# --- every rendered object validates offline against the real schemas ---------------------

CRD_FILES = {
    "kubeflow.org": ["profiles.kubeflow.org.yaml", "poddefaults.kubeflow.org.yaml"],
    "security.istio.io": ["authorizationpolicies.security.istio.io.yaml"],
    "networking.istio.io": ["envoyfilters.networking.istio.io.yaml"],
}


def crd_schema(api_version: str, kind: str) -> dict | None:
    group, _, version = api_version.rpartition("/")
    for file in CRD_FILES.get(group, []):
        crd = yaml.safe_load(shared_path("crds", file).read_text())
        if crd["spec"]["names"]["kind"] != kind:
            continue
        for v in crd["spec"]["versions"]:
            if v["name"] == version:
                return v["schema"]["openAPIV3Schema"]
    return None


@pytest.mark.parametrize("username", ["alice", "Alice.Smith@Example.com", "a" * 200])
def test_custom_resources_match_the_upstream_crd_schemas(username: str) -> None:
    for obj in render_profile(all_optional(username=username)).objects:
        if "." not in obj["apiVersion"].split("/")[0] or obj["apiVersion"].startswith(
            ("rbac.", "networking.k8s.io")
        ):
            continue
        schema = crd_schema(obj["apiVersion"], obj["kind"])
        assert schema is not None, f"no CRD for {obj['apiVersion']} {obj['kind']}"
        jsonschema.validate(obj, schema)


def test_core_kinds_pass_kubernetes_validate_strict() -> None:
    checked = 0
    for obj in render_profile(all_optional(username="Alice.Smith@Example.com")).objects:
        if obj["apiVersion"].split("/")[0] not in (
            "v1",
            "rbac.authorization.k8s.io",
            "networking.k8s.io",
        ):
            continue
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
        checked += 1
    assert checked == 5  # LimitRange, the two NetworkPolicies, Role, RoleBinding


def test_kubernetes_validate_strict_catches_a_typo() -> None:
    bad = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "x", "namespace": "y"},
        "rules": [{"apiGroup": ["argoproj.io"], "resources": ["workflows"], "verbs": ["get"]}],
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


#: Names JupyterHub accepts whose characters JSON's ASCII escapes or YAML's reader would
#: mangle: beyond the basic plane (a surrogate pair in ASCII JSON, which YAML refuses), YAML
#: line breaks, byte-order mark and non-printable characters.
UNICODE_NAMES = [
    "emoji😀user",
    "\U0001d4b6\U0001d4c1\U0001d4be\U0001d4b8\u212f",  # alice in script letters
    "a\u2028b\u2029c\x85d",
    "bom\ufeffdel\x7fc1\x9fnon\ufffechar",
]


@pytest.mark.parametrize("name", UNICODE_NAMES)
def test_any_unicode_name_renders_verbatim(name: str) -> None:
    reference = render_profile(all_optional())
    rendered = render_profile(all_optional(username=name, owner=name, groups=(name,)))
    assert [shape(o) for o in rendered.objects] == [shape(o) for o in reference.objects]
    assert rendered.profile["spec"]["owner"]["name"] == name
    assert rendered.profile["metadata"]["name"] == namespace_for(name)


def test_a_value_that_is_not_unicode_is_named_as_the_cause() -> None:
    with pytest.raises(TemplateError) as info:
        render_profile(context(owner="lone\ud800surrogate"))
    message = str(info.value)
    assert "not valid Unicode" in message and "lone\\ud800surrogate" in message
    assert "Insert values as" not in message  # not the template author's fault


def test_an_override_added_later_is_used(tmp_path: Path) -> None:
    # compiled templates are cached per directory set: a file of a default's name that
    # appears later in an earlier directory (a ConfigMap update) must still win
    before = render_profile(context(), [tmp_path])
    assert "PodDefault" in [o["kind"] for o in before.objects]
    (tmp_path / "10-poddefault-ml-pipeline.yaml.j2").write_text("")
    after = render_profile(context(), [tmp_path])
    assert "PodDefault" not in [o["kind"] for o in after.objects]
    (tmp_path / "10-poddefault-ml-pipeline.yaml.j2").unlink()
    assert render_profile(context(), [tmp_path]).digest == before.digest


def _egress_except(ctx: ProfileContext, name: str = "dna-hub-notebook-ingress") -> list[str]:
    (policy,) = [
        o
        for o in render_profile(ctx).namespaced
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == name
    ]
    (egress,) = policy["spec"]["egress"]
    (block,) = [p["ipBlock"] for p in egress["to"] if "ipBlock" in p]
    return block["except"]


def test_no_pod_of_the_profile_reaches_cloud_metadata() -> None:
    """Not only the notebook: every pod default-editor or a pipeline step starts there."""
    (policy,) = [
        o
        for o in render_profile(context()).namespaced
        if o["metadata"]["name"] == "dna-hub-metadata-egress"
    ]
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["podSelector"] == {}  # every pod of the namespace
    assert policy["spec"]["policyTypes"] == ["Egress"]  # ingress left as it is
    assert _egress_except(context(), "dna-hub-metadata-egress") == _egress_except(context())
    custom = ("169.254.0.0/16", "192.0.2.10/32")
    assert _egress_except(context(blocked_egress_cidrs=custom), "dna-hub-metadata-egress") == [
        *custom
    ]


async def test_blocked_egress_covers_every_metadata_address_and_is_configurable() -> None:
    import ipaddress

    from dna_hub.hub.settings import NotebookServer
    from tests.unit.test_owner_fallback import spawner

    blocked = [ipaddress.ip_network(c) for c in _egress_except(context())]
    for metadata in ("169.254.169.254", "169.254.169.252", "169.254.170.2", "100.100.100.200"):
        assert any(ipaddress.ip_address(metadata) in net for net in blocked), metadata
    custom = ("169.254.0.0/16", "192.0.2.10/32")
    assert _egress_except(context(blocked_egress_cidrs=custom)) == list(custom)
    hub_spawner = spawner(True, {})

    def spawner_context() -> Any:
        return hub_spawner.profile_context(
            username="x", namespace="kubeflow-x", owner="x", groups=(), server=NotebookServer()
        )

    assert spawner_context().blocked_egress_cidrs == (
        "169.254.0.0/16",
        "100.100.100.200/32",
    )
    hub_spawner.notebook_egress_blocked_cidrs = ["10.0.0.0/8"]
    assert spawner_context().blocked_egress_cidrs == ("10.0.0.0/8",)
    with pytest.raises(ValueError, match="not an IPv4 CIDR"):
        hub_spawner.notebook_egress_blocked_cidrs = ["fd00:ec2::254/128"]


@pytest.mark.parametrize("owner", ["alice@example.com", 'Eve "x" <e@x>\n  - "*"'])
def test_legacy_envoy_filter_comes_with_a_deny_for_forged_userids(owner: str) -> None:
    """default-editor can start an unlabelled pod the EnvoyFilter does not rewrite: a DENY
    at ml-pipeline refuses any kubeflow-userid from this namespace but the owner's."""
    ctx = context(owner=owner, legacy_envoy_filter=True)
    (deny,) = [
        o
        for o in render_profile(ctx).namespaced
        if o["kind"] == "AuthorizationPolicy" and o["spec"]["action"] == "DENY"
    ]
    assert deny["metadata"] == {
        "name": "dna-hub-userid-kubeflow-alice",
        "namespace": "kubeflow",
        "labels": deny["metadata"]["labels"],
    }
    spec = deny["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "ml-pipeline"}}
    (rule,) = spec["rules"]
    assert rule["from"] == [{"source": {"namespaces": ["kubeflow-alice"]}}]
    assert rule["when"] == [
        {"key": "request.headers[kubeflow-userid]", "values": ["*"], "notValues": [owner]}
    ]
    # without the EnvoyFilter there is no header identity to protect: nothing in kubeflow
    plain = render_profile(context(owner=owner)).namespaced
    assert all(o["metadata"]["namespace"] == "kubeflow-alice" for o in plain)
