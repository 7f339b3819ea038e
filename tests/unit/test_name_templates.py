"""Name-bearing templates are checked when the spawner is made, for hard usernames (issue #29).

A template such as ``home-{unescaped_username}`` gives ``home-carol@example.com``, which
Kubernetes refuses (422) at carol's spawn. DnaSpawner refuses such a configuration when it
is constructed (at hub start for running servers, else the first spawn), with one error that
names the setting, the username and the invalid result; ``dna-hub render`` and
``dna-hub doctor`` say the same. No cluster is needed.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from jupyterhub.auth import Authenticator
from jupyterhub.slugs import is_valid_safe_slug
from traitlets.config import Config, PyFileConfigLoader

from dna_hub import DnaSpawner
from dna_hub.errors import ConfigurationError
from dna_hub.hub import name_check
from dna_hub.hub.spawn_errors import NameTemplateRefused
from dna_hub.policy.name_templates import (
    DNS_1035_LABEL,
    DNS_1123_LABEL,
    DNS_1123_SUBDOMAIN,
    DNS_NAME,
    HARD_SERVERNAMES,
    HARD_USERNAMES,
    LABEL_VALUE,
    check_name_templates,
    describe_problems,
    name_templates,
)
from tests.unit.test_cli_render import render

EMAIL = "carol@example.com"  # the demo's carol: no preferred_username, the email is her name


def spawner_for(username: str = "alice", config: Config | None = None, **traits: Any) -> DnaSpawner:
    user = SimpleNamespace(name=username, id=1, url=f"/user/{username}/", settings={}, groups=[])
    hub = SimpleNamespace(api_url="http://hub:8081/hub/api", public_host="", url="/hub/",
                          base_url="/hub/")  # fmt: skip
    with mock.patch("kubespawner.spawner.load_config"):  # no cluster credentials needed
        return DnaSpawner(user=user, hub=hub, _mock=True, config=config or Config(), **traits)


# --- the pure policy ------------------------------------------------------------------------


@pytest.mark.parametrize("username", HARD_USERNAMES)
def test_the_corpus_holds_only_names_jupyterhub_accepts(username: str) -> None:
    assert Authenticator().validate_username(username)


@pytest.mark.parametrize("servername", [s for s in HARD_SERVERNAMES if s])
def test_the_server_names_are_ones_jupyterhub_creates(servername: str) -> None:
    assert is_valid_safe_slug(servername)


def test_the_corpus_is_hard() -> None:
    assert any("@" in u for u in HARD_USERNAMES)
    assert any("+" in u for u in HARD_USERNAMES)
    assert any(u != u.lower() for u in HARD_USERNAMES)
    assert any(not u.isascii() for u in HARD_USERNAMES)
    assert any(len(u) > 63 for u in HARD_USERNAMES)
    assert "" in HARD_SERVERNAMES and any(HARD_SERVERNAMES)


@pytest.mark.parametrize(
    ("rule", "valid", "invalid"),
    [
        (DNS_1123_SUBDOMAIN, ["a", "home-alice", "a.b-c", "x" * 253],
         ["", "Home", "home-carol@example.com", "-a", "a-", "a..b", "x" * 254, "zoë"]),
        (DNS_1123_LABEL, ["a", "1a", "x" * 63], ["", "a.b", "A", "x" * 64, "a_b"]),
        (DNS_1035_LABEL, ["a1", "x" * 63], ["1a", "123456", "a.b"]),
        (DNS_NAME, ["a.b.svc", "x" * 63 + ".ns"], ["x" * 64 + ".ns", "a..b"]),
        (LABEL_VALUE, ["", "Alice.Smith", "a_b", "x" * 63],
         ["carol@example.com", "-a", "a.", "x" * 64, "a b"]),
    ],
)  # fmt: skip
def test_rules(rule: Any, valid: list[str], invalid: list[str]) -> None:
    assert all(rule.valid(v) for v in valid), [v for v in valid if not rule.valid(v)]
    assert not any(rule.valid(v) for v in invalid), [v for v in invalid if rule.valid(v)]


def test_the_name_bearing_settings_are_found_with_their_rules() -> None:
    settings = {
        "pod_name_template": "jupyter-{user_server}",
        "pvc_name_template": "claim-{user_server}",
        "secret_name_template": "{pod_name}",
        "dns_name_template": "{name}.{namespace}.svc.cluster.local",
        "pod_connect_ip": "{username}.pods.example.org",
        "service_account": "default-editor",
        "volumes": {
            "home": {"name": "volume-{user_server}",
                     "persistentVolumeClaim": {"claimName": "{pvc_name}"}},
            "cfg": {"name": "cfg", "configMap": {"name": "cfg-{username}"}},
            "sec": {"name": "sec", "secret": {"secretName": "sec-{username}"}},
            "prj": {"name": "prj", "projected": {"sources": [{"secret": {"name": "p"}}]}},
        },
        "volume_mounts": [{"name": "volume-{user_server}", "mountPath": "/home/jovyan",
                           "subPath": "{unescaped_username}"}],
        "init_containers": [{"name": "init", "image": "x"}],
        "extra_containers": [{"name": "side", "image": "x"}],
        "extra_pod_config": {"hostname": "{username}", "restartPolicy": "Never"},
        "extra_labels": {"team": "{username}", "n": 1},
        "storage_extra_labels": {"owner": "{username}"},
        "storage_selector": {"matchLabels": {"owner": "{username}"},
                             "matchExpressions": [{"key": "k", "operator": "In",
                                                   "values": ["{username}"]}]},
        "storage_pvc_ensure": True,
        "services_enabled": True,
        "internal_ssl": True,
    }  # fmt: skip
    found = {(t.setting, t.rule.name, t.expansion) for t in name_templates(settings)}
    assert found == {
        ("pod_name_template", "RFC 1123 subdomain", "kubespawner"),
        ("pod_name_template", "RFC 1035 label", "kubespawner"),
        ("dns_name_template", "DNS name", "dns_name"),
        ("pvc_name_template", "RFC 1123 subdomain", "kubespawner"),
        ("secret_name_template", "RFC 1123 subdomain", "kubespawner"),
        ("pod_connect_ip", "DNS name", "kubespawner"),
        ("service_account", "RFC 1123 subdomain", "kubespawner"),
        ("volumes['cfg'].name", "RFC 1123 label", "kubespawner"),
        ("volumes['cfg'].configMap.name", "RFC 1123 subdomain", "kubespawner"),
        ("volumes['home'].name", "RFC 1123 label", "kubespawner"),
        ("volumes['home'].persistentVolumeClaim.claimName", "RFC 1123 subdomain", "kubespawner"),
        ("volumes['prj'].name", "RFC 1123 label", "kubespawner"),
        ("volumes['prj'].projected.sources[0].secret.name", "RFC 1123 subdomain", "kubespawner"),
        ("volumes['sec'].name", "RFC 1123 label", "kubespawner"),
        ("volumes['sec'].secret.secretName", "RFC 1123 subdomain", "kubespawner"),
        ("volume_mounts[0].name", "RFC 1123 label", "kubespawner"),
        ("init_containers[0].name", "RFC 1123 label", "kubespawner"),
        ("extra_containers[0].name", "RFC 1123 label", "kubespawner"),
        ("extra_pod_config.hostname", "RFC 1123 label", "kubespawner"),
        ("extra_labels['team']", "label value", "kubespawner"),
        ("storage_extra_labels['owner']", "label value", "kubespawner"),
        ("storage_selector.matchLabels['owner']", "label value", "kubespawner"),
        ("storage_selector.matchExpressions[0].values[0]", "label value", "kubespawner"),
    }
    # Used only with their feature: not checked without it.
    quiet = {**settings, "services_enabled": False, "internal_ssl": False,
             "storage_pvc_ensure": False}  # fmt: skip
    settings_of = {t.setting for t in name_templates(quiet)}
    assert not settings_of & {"dns_name_template", "secret_name_template"}
    assert not any(s.startswith("storage_selector") for s in settings_of)
    assert "pod_name_template" in settings_of


def test_the_first_invalid_result_of_each_template_is_reported() -> None:
    def expand(template: str, username: str, servername: str) -> str:
        return template.format(raw=username, server=servername)

    templates = name_templates(
        {"pvc_name_template": "home-{raw}", "extra_labels": {"ok": "fixed", "bad": "{raw}"},
         "service_account": "sa-{nope}"}
    )  # fmt: skip
    problems = check_name_templates(templates, {"kubespawner": expand})
    by_setting = {p.template.setting: p for p in problems}
    assert set(by_setting) == {"pvc_name_template", "extra_labels['bad']", "service_account"}
    claim = by_setting["pvc_name_template"]
    assert (claim.username, claim.servername, claim.result) == (
        EMAIL,
        "",
        "home-carol@example.com",
    )
    assert "cannot be expanded" in str(by_setting["service_account"])
    assert "'nope'" in str(by_setting["service_account"])
    message = describe_problems(problems)
    assert message.startswith("3 name-bearing settings")
    assert "DnaSpawner.pvc_name_template = 'home-{raw}' gives 'home-carol@example.com'" in message
    assert describe_problems([]) == ""


# --- the spawner refuses a configuration that breaks a name ---------------------------------

U = "{unescaped_username}"

#: (trait settings, the setting the error must name, the invalid result it must show)
BROKEN = {
    "pod_name_template": (
        {"pod_name_template": f"jupyter-{U}"}, "pod_name_template", "jupyter-carol@example.com"
    ),
    "pvc_name_template": (
        {"pvc_name_template": f"claim-{U}"}, "pvc_name_template", "claim-carol@example.com"
    ),
    "volumes claimName": (
        {"volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": f"home-{U}"}}]},
        "volumes[0].persistentVolumeClaim.claimName",
        "home-carol@example.com",
    ),
    "volumes name": (
        {"volumes": [{"name": f"v-{U}", "emptyDir": {}}]}, "volumes[0].name",
        "v-carol@example.com",
    ),
    "volumes secretName": (
        {"volumes": [{"name": "s", "secret": {"secretName": f"s-{U}"}}]},
        "volumes[0].secret.secretName",
        "s-carol@example.com",
    ),
    "volumes configMap": (
        {"volumes": {"c": {"name": "c", "configMap": {"name": f"c-{U}"}}}},
        "volumes['c'].configMap.name",
        "c-carol@example.com",
    ),
    "volume_mounts": (
        {"volume_mounts": [{"name": f"v-{U}", "mountPath": "/data"}]}, "volume_mounts[0].name",
        "v-carol@example.com",
    ),
    "extra_labels": (
        {"extra_labels": {"owner": U}}, "extra_labels['owner']", EMAIL
    ),
    "storage_extra_labels": (
        {"storage_extra_labels": {"owner": U}}, "storage_extra_labels['owner']", EMAIL
    ),
    "storage_selector": (
        {"storage_pvc_ensure": True, "storage_selector": {"matchLabels": {"owner": U}}},
        "storage_selector.matchLabels['owner']",
        EMAIL,
    ),
    "service_account": (
        {"service_account": f"sa-{U}"}, "service_account", "sa-carol@example.com"
    ),
    "init_containers": (
        {"init_containers": [{"name": f"init-{U}", "image": "busybox"}]},
        "init_containers[0].name",
        "init-carol@example.com",
    ),
    "extra_containers": (
        {"extra_containers": [{"name": f"side-{U}", "image": "busybox"}]},
        "extra_containers[0].name",
        "side-carol@example.com",
    ),
    "extra_pod_config": (
        {"extra_pod_config": {"hostname": U}}, "extra_pod_config.hostname", EMAIL
    ),
    "pod_connect_ip": (
        {"pod_connect_ip": f"{U}.pods.example.org"}, "pod_connect_ip",
        "carol@example.com.pods.example.org",
    ),
    "secret_name_template": (
        {"internal_ssl": True, "secret_name_template": f"tls-{U}"}, "secret_name_template",
        "tls-carol@example.com",
    ),
    # dns_name_template only knows {name} and {namespace}: the first label overflows.
    "dns_name_template": (
        {"services_enabled": True,
         "dns_name_template": "{name}-and-a-suffix-long-enough-to-overflow.{namespace}.svc"},
        "dns_name_template",
        "jupyter-carol-example-com---",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_a_template_that_breaks_for_an_email_refuses_the_spawner(case: str) -> None:
    traits, setting, result = BROKEN[case]
    with pytest.raises(NameTemplateRefused) as refused:
        spawner_for("alice", **traits)  # any user: the configuration is what is refused
    error = refused.value
    assert isinstance(error, ConfigurationError)
    assert f"DnaSpawner.{setting} = " in error.detail, error.detail
    assert f"for user {EMAIL!r}" in error.detail, error.detail
    assert f"gives {result!r}"[:-1] in error.detail, error.detail  # (a prefix of) the result
    assert "contact your platform administrator" in error.jupyterhub_message
    assert EMAIL not in error.jupyterhub_message  # a user is not shown other users' names


async def test_a_service_name_must_be_an_rfc_1035_label() -> None:
    with pytest.raises(NameTemplateRefused) as refused:
        # KubeSpawner's legacy 'escape' scheme keeps a name of digits as it is
        spawner_for(services_enabled=True, slug_scheme="escape", pod_name_template="{username}")
    assert "not a valid Service name (services_enabled) (must be an RFC 1035 label" in (
        refused.value.detail
    )


async def test_the_api_token_secret_named_after_the_pod_must_fit() -> None:
    # A pod name of 249 characters is valid; its Secret (+ "-api-token-<8 hex>") is not.
    with pytest.raises(NameTemplateRefused) as refused:
        spawner_for(pod_name_template="p" * 200 + "-{user_server}")
    assert "API-token Secret" in refused.value.detail
    assert "shorten the fixed text" in refused.value.detail


async def test_every_broken_setting_is_in_one_error() -> None:
    with pytest.raises(NameTemplateRefused) as refused:
        spawner_for(pvc_name_template=f"claim-{U}", extra_labels={"owner": U})
    assert refused.value.detail.startswith("2 name-bearing settings")
    assert "pvc_name_template" in refused.value.detail
    assert "extra_labels['owner']" in refused.value.detail


@pytest.mark.parametrize(
    "traits",
    [
        {},  # DnaSpawner's defaults
        # what z2jh's chart sets (singleuser.storage dynamic, extraLabels)
        {"pvc_name_template": "claim-{user_server}",
         "volumes": {"volume-{user_server}": {
             "name": "volume-{user_server}", "persistentVolumeClaim": {"claimName": "{pvc_name}"}
         }},
         "volume_mounts": {"volume-{user_server}": {"name": "volume-{user_server}",
                                                    "mountPath": "/home/jovyan"}},
         "extra_labels": {"hub.jupyter.org/network-access-hub": "true"},
         "storage_extra_labels": {"owner": "{username}"},
         "storage_pvc_ensure": True},
        {"services_enabled": True, "pod_name_template": "jupyter-{user_server}"},
        # the legacy scheme: escaped names are long but valid here
        {"slug_scheme": "escape", "pvc_name_template": "claim-{username}{servername}"},
    ],
)  # fmt: skip
async def test_safe_configurations_pass(traits: dict[str, Any]) -> None:
    spawner = spawner_for(EMAIL, **traits)
    assert DNS_1123_SUBDOMAIN.valid(spawner.pvc_name)


async def test_the_check_runs_once_per_configuration() -> None:
    with mock.patch.object(
        name_check, "check_name_templates", wraps=name_check.check_name_templates
    ) as checked:
        traits = {"extra_labels": {"once": "{username}-a"}}
        for name in ("alice", "bob", EMAIL):
            spawner_for(name, **traits)
        assert checked.call_count == 1
        spawner_for("alice", extra_labels={"once": "{username}-b"})
        assert checked.call_count == 2
    # A refused configuration stays refused, for every spawner made with it.
    for name in ("alice", "bob"):
        with pytest.raises(NameTemplateRefused):
            spawner_for(name, pvc_name_template=f"again-{U}")


async def test_a_profile_list_override_is_checked_at_the_spawn() -> None:
    spawner = spawner_for(
        "alice",
        profile_list=[{"display_name": "Big", "slug": "big", "default": True,
                       "kubespawner_override": {"pvc_name_template": f"big-{U}"}}],
    )  # fmt: skip
    spawner.user_options = {"profile": "big"}
    with pytest.raises(NameTemplateRefused) as refused:
        await spawner.load_user_options()
    assert "big-carol@example.com" in refused.value.detail


# --- the demo's configuration ---------------------------------------------------------------


def demo_config(tmp_path: Path) -> Config:
    """The demo's hub configuration (devstack/demo.py + devstack/notebook_containers.py)."""
    from devstack.demo import DNA_SPAWNER_CONFIG
    from devstack.notebook_containers import container_spawner_config
    from devstack.pod_network import PodNetwork

    network = PodNetwork(name="dna-hub-test", subnet="10.99.0.0/24", gateway="10.99.0.1")
    text = (
        'c.JupyterHub.load_roles = [{"name": "admin-service", "scopes": []}]\n'
        + DNA_SPAWNER_CONFIG
        + container_spawner_config(
            "dna-hub/singleuser:test", network, "http://10.99.0.1:8888", tmp_path / "admin.conf"
        )
    )
    (tmp_path / "jupyterhub_config.py").write_text(text)
    return PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()


@pytest.mark.parametrize("username", ["alice", "bob", EMAIL])
async def test_the_demo_names_each_login_home_claim_validly(username: str, tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    spawner = spawner_for(username, config=config)
    spawner.api_token = "token"
    spawner.oauth_client_id = "jupyterhub-user-test"
    pod = await spawner.get_pod_manifest()
    volumes = spawner.api.api_client.sanitize_for_serialization(pod)["spec"]["volumes"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in volumes
              if "persistentVolumeClaim" in v]  # fmt: skip
    assert claims == [spawner.pvc_name]
    assert DNS_1123_SUBDOMAIN.valid(spawner.pvc_name), spawner.pvc_name
    assert spawner.pvc_name.startswith("home-")

    # The demo's stand-in for the storage admin creates the claim by that same name.
    created: list[Any] = []

    class CoreV1:
        def __init__(self, api: Any) -> None:
            pass

        async def create_namespaced_persistent_volume_claim(self, namespace, claim, **kw):
            created.append((namespace, claim.metadata.name))

    class Client:
        async def close(self) -> None:
            pass

    async def new_client(**kw: Any) -> Client:
        return Client()

    with (
        mock.patch("kubernetes_asyncio.config.new_client_from_config", new_client),
        mock.patch("kubernetes_asyncio.client.CoreV1Api", CoreV1),
    ):
        assert await config.DnaSpawner.modify_pod_hook(spawner, pod) is pod
    assert created == [(spawner.namespace, spawner.pvc_name)]


# --- the admin's tools say the same -------------------------------------------------------


BAD_CONFIG = textwrap.dedent(f"""
    c.DnaSpawner.volumes = [
        {{"name": "home", "persistentVolumeClaim": {{"claimName": "home-{U}"}}}},
    ]
""")


def test_render_refuses_the_configuration_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(BAD_CONFIG)
    result = render("--config", str(tmp_path / "bad.py"), "--user", "alice", "--owner", "a@x.org")
    assert result.returncode == 2, result.stdout
    assert "DnaSpawner.volumes[0].persistentVolumeClaim.claimName" in result.stderr
    assert "'home-carol@example.com'" in result.stderr
    assert result.stdout == ""


def test_doctor_reports_the_same(tmp_path: Path) -> None:
    from dna_hub.cli.doctor import check_name_templates as doctor_check

    (tmp_path / "bad.py").write_text(BAD_CONFIG)
    bad = asyncio.run(doctor_check(str(tmp_path / "bad.py")))
    assert bad.failed
    assert "volumes[0].persistentVolumeClaim.claimName" in bad.detail
    assert "'home-carol@example.com'" in bad.detail
    good = asyncio.run(doctor_check(None))
    assert good.ok and not good.failed, good.detail
