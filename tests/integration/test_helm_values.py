"""helm-values/values.yaml: valid for the Zero to JupyterHub chart, and secure.

Helm validates the chart's defaults deep-merged with the user's values against the chart's
JSON schema, so the test does the same with the chart reference in ../shared. The security
properties are checked by small functions that return the problems they find; each is run on
our values (no problems) and on deliberately broken copies (the problem is reported), so
every check is shown to be able to fail.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import tomllib
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft7Validator

from devstack.paths import REPO_ROOT, shared_path, unavailable

VALUES_FILE = REPO_ROOT / "helm-values" / "values.yaml"

PROFILE_NAMESPACES = {"app.kubernetes.io/part-of": "kubeflow-profile"}
NOTEBOOK_PORT = 8888
HUB_PORT = 8081
PRIVATE_RANGES = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}
CLOUD_METADATA = "169.254.169.254/32"
#: Kubernetes version the NetworkPolicy rules are checked against (chart 4.4 needs >= 1.32).
KUBERNETES_VERSION = "1.32.0"


# --- Helm's merge ------------------------------------------------------------------------


def helm_merge(defaults: Any, overrides: Any) -> Any:
    """Merge values the way Helm merges a values file over a chart's defaults.

    Maps merge key by key, recursively; anything else (lists included) is replaced; a null in
    the values file removes the chart's key.
    """
    if not (isinstance(defaults, dict) and isinstance(overrides, dict)):
        return copy.deepcopy(overrides)
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def test_helm_merge_replaces_lists_merges_maps_and_drops_nulls():
    defaults = {"a": {"x": 1, "y": [1, 2]}, "b": 1, "c": {"k": 1}}
    merged = helm_merge(defaults, {"a": {"y": [3]}, "b": None, "c": {"j": 2}})
    assert merged == {"a": {"x": 1, "y": [3]}, "c": {"k": 1, "j": 2}}
    assert defaults["a"]["y"] == [1, 2], "the defaults must not be modified"


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(shared_path("schemas", "z2jh-values.schema.json").read_text())


@pytest.fixture(scope="module")
def chart_defaults() -> dict:
    return yaml.safe_load(shared_path("schemas", "z2jh-values.defaults.yaml").read_text())


@pytest.fixture(scope="module")
def values() -> dict:
    loaded = yaml.safe_load(VALUES_FILE.read_text())
    assert isinstance(loaded, dict), f"{VALUES_FILE} must be a YAML mapping"
    return loaded


@pytest.fixture
def merged(chart_defaults: dict, values: dict) -> dict:
    """Fresh per test, so tests may break their copy."""
    return helm_merge(chart_defaults, values)


def schema_errors(schema: dict, merged_values: dict) -> list[str]:
    validator = Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(merged_values), key=lambda e: e.json_path)
    ]


def dig(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def plant(tree: dict, dotted: str, value: Any) -> dict:
    """Set a dotted path in a copy's tree (creating maps on the way); returns the tree."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return tree


# --- the chart's schema ------------------------------------------------------------------


def test_merged_values_satisfy_the_chart_schema(schema, merged):
    assert Draft7Validator.check_schema(schema) is None
    assert schema_errors(schema, merged) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("hubb", {}),  # misspelt top-level key
        ("hub.image", {"name": "registry.example.com/dna-hub/hub"}),  # tag missing
        ("proxy.service.type", "Public"),
        ("singleuser.uid", "1000"),
        ("hub.config.dnaSpawner", {"kfp_endpoint": "x"}),  # hub.config keys are class names
        ("hub.networkPolicy.egressAllowRules.privateIP", False),  # misspelt flag
    ],
)
def test_schema_rejects_a_broken_copy(schema, merged, path, value):
    assert schema_errors(schema, plant(merged, path, value)), f"{path}={value!r} was accepted"


# --- no secret values --------------------------------------------------------------------

#: Keys whose value is a secret wherever they appear (chart options and traitlets).
SECRET_KEYS = {
    "secretToken",
    "cookieSecret",
    "cookie_secret",
    "clientSecret",
    "client_secret",
    "password",
    "apiToken",
    "api_token",
    "auth_token",
    "proxy_auth_token",
    "secretKey",
    "secret_key",
    "crypt_key",
}
SECRET_ENV_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|KEY", re.IGNORECASE)
#: A pasted `openssl rand -hex 32` or a long base64 blob.
SECRET_LOOKING = re.compile(r"^(?:[0-9a-fA-F]{32,}|[A-Za-z0-9+/_-]{40,}={0,2})$")
EXTRA_ENV_PATHS = ("hub.extraEnv", "singleuser.extraEnv", "proxy.chp.extraEnv")


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Yield (path, key, value) for every mapping entry in a tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            yield here, key, value
            yield from walk(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk(item, f"{path}[{index}]")


def env_entries(extra_env: Any) -> Iterator[tuple[str, Any]]:
    """(name, entry) of a chart extraEnv, which may be a map or a list of EnvVars."""
    if isinstance(extra_env, dict):
        for key, entry in extra_env.items():
            if isinstance(entry, dict):
                yield entry.get("name", key), entry
            else:
                yield key, {"value": entry}
    elif isinstance(extra_env, list):
        for entry in extra_env:
            yield entry.get("name", "?"), entry


def inline_secrets(tree: dict) -> list[str]:
    problems = [
        f"{path} holds a secret value"
        for path, key, value in walk(tree)
        if key in SECRET_KEYS and value not in (None, "")
    ]
    problems += [
        f"{path} looks like a secret value"
        for path, _key, value in walk(tree)
        if isinstance(value, str) and SECRET_LOOKING.match(value)
    ]
    crypt_keeper = tree.get("hub", {}).get("config", {}).get("CryptKeeper")
    if crypt_keeper:
        problems.append("hub.config.CryptKeeper sets the auth_state key inline")
    for env_path in EXTRA_ENV_PATHS:
        try:
            extra_env = dig(tree, env_path)
        except (KeyError, TypeError):
            continue
        for name, entry in env_entries(extra_env):
            if SECRET_ENV_NAME.search(name) and entry.get("value") not in (None, ""):
                problems.append(f"{env_path}.{name} has an inline value, not valueFrom")
    return problems


def test_values_hold_no_secret_values(values, merged):
    assert inline_secrets(values) == []
    assert inline_secrets(merged) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("proxy.secretToken", "x"),
        ("hub.cookieSecret", "x"),
        ("hub.db.password", "x"),
        ("imagePullSecret.password", "x"),
        ("hub.config.DnaOIDCAuthenticator.client_secret", "x"),
        ("hub.config.GenericOAuthenticator.client_secret", "x"),
        ("hub.config.CryptKeeper.keys", ["x"]),
        ("hub.services.kale.api_token", "x"),
        ("hub.extraEnv.OAUTH_CLIENT_SECRET", "x"),
        ("hub.extraEnv.OAUTH_CLIENT_SECRET", {"value": "x"}),
        ("singleuser.extraEnv.AWS_SECRET_ACCESS_KEY", "x"),
        ("hub.config.DnaSpawner.profile_template_variables", {"token": "0123456789abcdef" * 4}),
    ],
)
def test_an_inline_secret_is_caught(merged, path, value):
    assert inline_secrets(plant(merged, path, value)), f"{path}={value!r} was not caught"


def test_oidc_client_secret_comes_from_an_existing_secret(merged):
    env = dict(env_entries(merged["hub"]["extraEnv"]))
    entry = env["OAUTH_CLIENT_SECRET"]  # the variable OAuthenticator reads client_secret from
    assert "value" not in entry
    ref = entry["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    assert ref.get("optional", False) is False, "a missing Secret must stop the hub, not blank it"


# --- authentication and class selection --------------------------------------------------


def test_auth_state_is_encrypted_with_a_chart_managed_key(merged):
    config = merged["hub"]["config"]
    assert config["Authenticator"]["enable_auth_state"] is True
    # The chart generates CryptKeeper.keys and keeps it in its hub Secret; setting
    # hub.config.CryptKeeper would put the key into the values.
    assert "CryptKeeper" not in config


def entry_points(group: str) -> dict[str, str]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return pyproject["project"]["entry-points"][group]


def test_our_classes_are_selected_through_hub_config(values, merged):
    config = merged["hub"]["config"]["JupyterHub"]
    assert entry_points("jupyterhub.spawners")[config["spawner_class"]] == "dna_hub:DnaSpawner"
    assert (
        entry_points("jupyterhub.authenticators")[config["authenticator_class"]]
        == "dna_hub:DnaOIDCAuthenticator"
    )
    # Configuration is declarative: no Python blobs that could hide secrets or drift.
    assert merged["hub"]["extraConfig"] == {}
    # Admins do not get into every user's server (and Kubeflow identity): nobody is made a
    # JupyterHub admin, whose built-in role can (admin_access has been ignored since
    # JupyterHub 2.0, so the chart's admin_access: true is moot); operators get
    # hub.loadRoles (tests/integration/test_hub_admin_roles.py checks their effective scopes).
    assert "admin_access" not in values["hub"]["config"]["JupyterHub"]
    authenticator = merged["hub"]["config"]["DnaOIDCAuthenticator"]
    assert "admin_groups" not in authenticator and "admin_users" not in authenticator
    assert "admin_users" not in merged["hub"]["config"].get("Authenticator", {})


def unknown_traits(tree: dict, class_path: str, import_name: str) -> set[str]:
    """Options under hub.config.<Class> that the class does not have as config traits."""
    import dna_hub

    try:
        cls = getattr(dna_hub, import_name)
    except ImportError as error:  # the class's module is not written yet
        unavailable(f"dna_hub.{import_name} cannot be imported yet ({error})")
    return set(dig(tree, class_path)) - set(cls.class_traits(config=True))


TRAIT_BLOCKS = [
    ("hub.config.DnaSpawner", "DnaSpawner"),
    ("hub.config.DnaOIDCAuthenticator", "DnaOIDCAuthenticator"),
]


@pytest.mark.parametrize(("class_path", "import_name"), TRAIT_BLOCKS)
def test_every_configured_trait_exists(values, class_path, import_name):
    """traitlets only warns about an unknown option, so a renamed trait would be ignored."""
    assert unknown_traits(values, class_path, import_name) == set()


@pytest.mark.parametrize(("class_path", "import_name"), TRAIT_BLOCKS)
def test_a_misspelt_trait_is_caught(values, class_path, import_name):
    broken = plant(copy.deepcopy(values), f"{class_path}.namespace_templte", "x")
    assert unknown_traits(broken, class_path, import_name) == {"namespace_templte"}


# --- the single-user server --------------------------------------------------------------


def singleuser_problems(merged_values: dict) -> list[str]:
    singleuser = merged_values["singleuser"]
    problems = []
    if not isinstance(singleuser.get("uid"), int) or singleuser["uid"] <= 0:
        problems.append(f"singleuser.uid {singleuser.get('uid')!r} is not a non-root uid")
    if not isinstance(singleuser.get("fsGid"), int) or singleuser["fsGid"] <= 0:
        problems.append(f"singleuser.fsGid {singleuser.get('fsGid')!r} is not a non-root gid")
    if singleuser.get("allowPrivilegeEscalation") is not False:
        problems.append("singleuser.allowPrivilegeEscalation is not false")
    if singleuser.get("serviceAccountName") != "default-editor":
        problems.append("notebooks must run as their profile's default-editor")
    if singleuser.get("defaultUrl") != "/lab":
        problems.append("singleuser.defaultUrl is not /lab")
    if singleuser.get("cmd") not in (["jupyterhub-singleuser"], "jupyterhub-singleuser"):
        problems.append("singleuser.cmd does not start jupyterhub-singleuser")
    hub_container = merged_values["hub"]["containerSecurityContext"]
    if hub_container.get("runAsUser") in (None, 0):
        problems.append("the hub container may run as root")
    if merged_values["hub"]["podSecurityContext"].get("runAsNonRoot") is not True:
        problems.append("hub.podSecurityContext.runAsNonRoot is not true")
    return problems


def test_singleuser_server_runs_unprivileged(merged):
    assert singleuser_problems(merged) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("singleuser.uid", 0),
        ("singleuser.uid", None),
        ("singleuser.fsGid", 0),
        ("singleuser.allowPrivilegeEscalation", True),
        ("singleuser.serviceAccountName", "default"),
        ("hub.containerSecurityContext.runAsUser", 0),
        ("hub.podSecurityContext.runAsNonRoot", False),
    ],
)
def test_a_privileged_singleuser_or_hub_is_caught(merged, path, value):
    assert singleuser_problems(plant(merged, path, value))


# --- network policies --------------------------------------------------------------------


def ports_of(rule: dict) -> set[tuple[str, int]]:
    return {(port.get("protocol", "TCP"), port.get("port")) for port in rule.get("ports") or []}


def reaches_profile_notebooks(rules: list[dict]) -> bool:
    return any(
        ("TCP", NOTEBOOK_PORT) in ports_of(rule)
        and any(
            peer.get("namespaceSelector", {}).get("matchLabels") == PROFILE_NAMESPACES
            for peer in rule.get("to", [])
        )
        for rule in rules
    )


def egress_rule_problems(where: str, rules: list[dict]) -> list[str]:
    """A custom egress rule must name both its peers and its ports; a rule to the whole
    internet must keep private ranges and the cloud metadata server closed."""
    problems = []
    for index, rule in enumerate(rules):
        label = f"{where}.egress[{index}]"
        if not rule.get("to") or not rule.get("ports"):
            problems.append(f"{label} opens all peers or all ports")
            continue
        for peer in rule["to"]:
            if peer == {} or (peer.get("namespaceSelector") == {} and "podSelector" not in peer):
                problems.append(f"{label} allows every namespace")
            block = peer.get("ipBlock", {})
            if block.get("cidr") == "0.0.0.0/0":
                missing = (PRIVATE_RANGES | {CLOUD_METADATA}) - set(block.get("except", []))
                if missing:
                    problems.append(f"{label} opens {sorted(missing)}")
    return problems


def network_policy_problems(merged_values: dict) -> list[str]:
    hub = merged_values["hub"]["networkPolicy"]
    chp = merged_values["proxy"]["chp"]["networkPolicy"]
    singleuser = merged_values["singleuser"]["networkPolicy"]
    problems = [
        f"{name} network policy is disabled"
        for name, policy in (("hub", hub), ("proxy.chp", chp), ("singleuser", singleuser))
        if policy.get("enabled") is not True
    ]
    for name, policy in (("hub", hub), ("proxy.chp", chp)):
        allow = policy.get("egressAllowRules", {})
        problems += [
            f"{name}.networkPolicy.egressAllowRules.{flag} is open"
            for flag in ("nonPrivateIPs", "privateIPs", "cloudMetadataServer")
            if allow.get(flag) is not False
        ]
        if not reaches_profile_notebooks(policy.get("egress") or []):
            problems.append(f"{name} cannot reach notebooks in profile namespaces on 8888")
        problems += egress_rule_problems(name, policy.get("egress") or [])
    hub_ports = [ports_of(rule) for rule in hub.get("egress") or []]
    if not any({("TCP", 443), ("TCP", 6443)} <= ports for ports in hub_ports):
        problems.append("hub has no egress rule for the Kubernetes API (443/6443)")
    if not any(
        ("TCP", 443) in ports_of(rule)
        and any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for peer in rule["to"])
        for rule in hub.get("egress") or []
        if rule.get("to")
    ):
        problems.append("hub has no egress rule for the OIDC issuer (HTTPS)")
    if not any(
        ("TCP", HUB_PORT) in ports_of(rule)
        and any(
            peer.get("namespaceSelector", {}).get("matchLabels") == PROFILE_NAMESPACES
            for peer in rule.get("from", [])
        )
        for rule in hub.get("ingress") or []
    ):
        problems.append("notebooks in profile namespaces cannot reach the hub API on 8081")
    return problems


def test_network_policies_open_only_the_profile_namespaces(merged):
    assert network_policy_problems(merged) == []


def _drop_profile_egress(tree: dict) -> None:
    egress = tree["proxy"]["chp"]["networkPolicy"]["egress"]
    egress[:] = [rule for rule in egress if not reaches_profile_notebooks([rule])]


def _open_all_ports(tree: dict) -> None:
    del tree["hub"]["networkPolicy"]["egress"][0]["ports"]


def _open_private_ranges(tree: dict) -> None:
    for rule in tree["hub"]["networkPolicy"]["egress"]:
        for peer in rule["to"]:
            peer.get("ipBlock", {}).pop("except", None)


def _allow_every_namespace(tree: dict) -> None:
    tree["proxy"]["chp"]["networkPolicy"]["egress"].append(
        {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 8888}]}
    )


@pytest.mark.parametrize(
    "breakage",
    [
        lambda t: plant(t, "hub.networkPolicy.enabled", False),
        lambda t: plant(t, "proxy.chp.networkPolicy.enabled", False),
        lambda t: plant(t, "singleuser.networkPolicy.enabled", False),
        lambda t: plant(t, "hub.networkPolicy.egressAllowRules.nonPrivateIPs", True),
        lambda t: plant(t, "proxy.chp.networkPolicy.egressAllowRules.privateIPs", True),
        lambda t: plant(t, "hub.networkPolicy.egressAllowRules.cloudMetadataServer", True),
        lambda t: plant(t, "hub.networkPolicy.egress", []),
        lambda t: plant(t, "hub.networkPolicy.ingress", []),
        _drop_profile_egress,
        _open_all_ports,
        _open_private_ranges,
        _allow_every_namespace,
    ],
)
def test_a_widened_network_policy_is_caught(merged, breakage: Callable[[dict], Any]):
    breakage(merged)
    assert network_policy_problems(merged)


@pytest.mark.parametrize(("name", "path"), [("hub", "hub"), ("proxy", "proxy.chp")])
def test_network_policy_rules_are_valid_kubernetes(merged, name, path):
    """The chart's schema accepts any list here; the API server would not."""
    policy = dig(merged, path)["networkPolicy"]
    network_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "jupyterhub"},
        "spec": {
            "podSelector": {"matchLabels": {"component": name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": policy.get("ingress") or [],
            "egress": policy.get("egress") or [],
        },
    }
    kubernetes_validate.validate(network_policy, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(network_policy)
    peer = broken["spec"]["egress"][0]["to"][0]
    peer["namespaceSelectors"] = peer.pop("namespaceSelector")  # a typo the chart would pass
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# --- images ------------------------------------------------------------------------------

#: Placeholder tag in the chart's source; chartpress replaces it when the chart is released.
CHARTPRESS_PLACEHOLDER = "set-by-chartpress"


def images(tree: dict) -> Iterator[tuple[str, dict]]:
    for path, key, value in walk(tree):
        if key == "image" and isinstance(value, dict) and "name" in value:
            yield path, value


def unpinned_images(tree: dict, *, allow_chartpress: bool) -> list[str]:
    problems = []
    for path, image in images(tree):
        tag = str(image.get("tag") or "")
        if "@sha256:" in image["name"] or tag.startswith("sha256:"):
            continue
        if allow_chartpress and tag == CHARTPRESS_PLACEHOLDER:
            continue
        if not tag or tag == "latest" or tag.endswith("-latest"):
            problems.append(f"{path} {image['name']}:{tag or '<none>'} is not pinned")
    return problems


def test_images_are_pinned(values, merged):
    ours = dict(images(values))
    assert {"hub.image", "singleuser.image"} <= set(ours), "our images must be set explicitly"
    assert unpinned_images(values, allow_chartpress=False) == []
    assert unpinned_images(merged, allow_chartpress=True) == []


@pytest.mark.parametrize(
    ("path", "tag"),
    [("hub.image.tag", "latest"), ("singleuser.image.tag", ""), ("hub.image.tag", None)],
)
def test_an_unpinned_image_is_caught(values, path, tag):
    assert unpinned_images(plant(copy.deepcopy(values), path, tag), allow_chartpress=False)


def test_removals_at_the_provider_are_enforced_and_teams_need_per_user_origins(merged):
    """Issue 25.1/25.3: the chart re-checks every user with the provider and removes team
    access without a login; team profiles come only with JupyterHub.subdomain_host."""
    from dna_hub.hub.team_login import sync_teams_at_recheck

    authenticator = merged["hub"]["config"]["DnaOIDCAuthenticator"]
    assert 0 < authenticator["reconcile_interval"] <= 600
    module, _, name = authenticator["team_access_hook"].partition(":")
    assert getattr(importlib.import_module(module), name) is sync_teams_at_recheck
    spawner = merged["hub"]["config"]["DnaSpawner"]
    if spawner.get("team_profiles"):
        assert merged["hub"]["config"]["JupyterHub"].get("subdomain_host")
        assert not spawner.get("team_shared_origin_risk_accepted")
