"""Profile provisioning on the local control plane, as the hub's own identity (hub-rbac.yaml).

The profile controller is the stand-in (tests/support/standins); everything else is the
real API server with the real CRDs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import load_kube_config
from prometheus_client import REGISTRY

from devstack.controlplane import ControlPlane
from devstack.standins import Kube
from devstack.standins.profile_controller import DEFAULT_NAMESPACE_LABELS, PAUSED_ANNOTATION
from dna_hub.errors import ApiFailure, OwnershipConflict, ProfileNotReady
from dna_hub.k8s.api import NAMESPACE, PROFILE, SERVICE_ACCOUNT, Kind, KubeApi
from dna_hub.k8s.concurrency import LoopLimit
from dna_hub.k8s.retry import RetryPolicy
from dna_hub.policy.naming import namespace_for
from dna_hub.policy.rendering import ProfileContext, RenderedProfile, render_profile
from dna_hub.profiles.provisioning import DIGEST_ANNOTATION, ProfileProvisioner
from tests.support.faultproxy import FaultProxy
from tests.support.hooked_kube import HookedKubeApi

DURATION_COUNT = "dna_hub_provisioning_duration_seconds_count"

pytestmark = [pytest.mark.controlplane]

PROFILE_TEMPLATE = (
    Path(__file__).parents[2] / "profile-templates" / "00-profile.yaml.j2"
).read_text()


def profile_template_with(annotations: dict[str, str]) -> str:
    """The default Profile template plus test-only annotations for the controller stand-in."""
    extra = "".join(f"    {key}: {value!r}\n" for key, value in annotations.items())
    return PROFILE_TEMPLATE.replace("  annotations:\n", "  annotations:\n" + extra, 1)


def rendered_for(
    username: str, owner: str | None = None, template_dir: Path | None = None, **kw: Any
) -> RenderedProfile:
    context = ProfileContext(
        username=username,
        namespace=namespace_for(username),
        owner=owner or f"{username}@example.com",
        hub_namespace="jupyterhub",
        **kw,
    )
    return render_profile(context, [template_dir] if template_dir else [])


@pytest_asyncio.fixture(loop_scope="session")
async def hub_kube(hub_api: ApiClient, standins: Any) -> KubeApi:
    """KubeApi as the hub, with the stand-ins (profile controller, webhook) running."""
    return KubeApi(hub_api, request_timeout=10)


@pytest.fixture
def provisioner(hub_kube: KubeApi) -> Callable[..., ProfileProvisioner]:
    def make(**kw: Any) -> ProfileProvisioner:
        kw.setdefault("ready_timeout", 60)
        return ProfileProvisioner(hub_kube, **kw)

    return make


@pytest.fixture
def admin_kube(admin_api: ApiClient) -> KubeApi:
    return KubeApi(admin_api, request_timeout=10)


def resume_on_namespace_watch(
    standins_kube: Any, profile: str
) -> Callable[[Kind, str | None, str | None], Awaitable[None]]:
    """A HookedKubeApi hook: resumes the paused controller stand-in for ``profile`` when
    dna_hub starts to watch namespaces, so the watch path is taken whatever the timing."""

    async def resume(kind: Kind, namespace: str | None, selector: str | None) -> None:
        if kind.plural == "namespaces":
            await standins_kube.patch(
                f"/apis/kubeflow.org/v1/profiles/{profile}",
                {"metadata": {"annotations": {PAUSED_ANNOTATION: None}}},
            )

    return resume


async def assert_provisioned(admin: KubeApi, rendered: RenderedProfile) -> None:
    namespace = rendered.profile["metadata"]["name"]
    owner = rendered.profile["spec"]["owner"]["name"]
    profile = await admin.get(PROFILE, namespace)
    assert profile is not None
    assert profile["spec"]["owner"]["name"] == owner
    assert profile["metadata"]["annotations"][DIGEST_ANNOTATION] == rendered.digest
    ns = await admin.get(NAMESPACE, namespace)
    assert ns is not None and ns["metadata"]["annotations"]["owner"] == owner
    assert await admin.get(SERVICE_ACCOUNT, "default-editor", namespace) is not None
    for obj in rendered.namespaced:
        kind = await admin.kind_for(obj["apiVersion"], obj["kind"])
        live = await admin.get(kind, obj["metadata"]["name"], obj["metadata"]["namespace"])
        assert live is not None, obj["kind"]
        assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "dna-hub"
        managers = {m["manager"] for m in live["metadata"]["managedFields"]}
        assert "dna-hub" in managers


async def test_first_provisioning_creates_the_whole_profile(
    provisioner: Callable[..., ProfileProvisioner], admin_kube: KubeApi, unique_name: Callable
) -> None:
    rendered = rendered_for(unique_name("new"))
    messages: list[str] = []
    result = await provisioner().ensure(rendered, progress=messages.append)
    assert not result.up_to_date
    await assert_provisioned(admin_kube, rendered)
    namespace = rendered.profile["metadata"]["name"]
    assert messages[0] == "Provisioning your Kubeflow profile…"
    assert f"Waiting for namespace {namespace}…" in messages


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_repeat_provisioning_costs_one_request(
    provisioner: Callable[..., ProfileProvisioner], unique_name: Callable
) -> None:
    rendered = rendered_for(unique_name("again"))
    full_before = sample(DURATION_COUNT, outcome="success", path="full")
    fast_before = sample(DURATION_COUNT, outcome="success", path="fast")
    first = await provisioner().ensure(rendered)
    assert not first.up_to_date and first.requests > 1
    again = await provisioner().ensure(rendered)
    assert again.up_to_date
    assert again.requests == 2  # the Profile and its namespace (owner check), at once
    # what the hub's /metrics shows
    assert sample(DURATION_COUNT, outcome="success", path="full") == full_before + 1
    assert sample(DURATION_COUNT, outcome="success", path="fast") == fast_before + 1


async def test_changed_templates_are_applied_on_next_spawn(
    provisioner: Callable[..., ProfileProvisioner], admin_kube: KubeApi, unique_name: Callable
) -> None:
    username = unique_name("change")
    await provisioner().ensure(rendered_for(username))
    changed = rendered_for(username, resource_quota={"hard": {"cpu": "2"}})
    result = await provisioner().ensure(changed)
    assert not result.up_to_date
    await assert_provisioned(admin_kube, changed)
    profile = await admin_kube.get(PROFILE, changed.profile["metadata"]["name"])
    assert profile["spec"]["resourceQuotaSpec"] == {"hard": {"cpu": "2"}}


async def test_slow_profile_controller(
    provisioner: Callable[..., ProfileProvisioner],
    admin_kube: KubeApi,
    unique_name: Callable,
    tmp_path: Path,
) -> None:
    (tmp_path / "00-profile.yaml.j2").write_text(
        profile_template_with(
            {
                "dna-hub.test/controller-delay-seconds": "3",
                "dna-hub.test/controller-step-delay-seconds": "0.5",
            }
        )
    )
    rendered = rendered_for(unique_name("slow"), template_dir=tmp_path)
    result = await provisioner().ensure(rendered)
    assert result.seconds >= 3
    await assert_provisioned(admin_kube, rendered)


async def test_controller_that_never_answers_times_out_then_converges(
    provisioner: Callable[..., ProfileProvisioner],
    admin_kube: KubeApi,
    unique_name: Callable,
    tmp_path: Path,
) -> None:
    username = unique_name("paused")
    (tmp_path / "00-profile.yaml.j2").write_text(
        profile_template_with({"dna-hub.test/controller-paused": "true"})
    )
    paused = rendered_for(username, template_dir=tmp_path)
    with pytest.raises(ProfileNotReady) as info:
        await provisioner(ready_timeout=3).ensure(paused)
    namespace = paused.profile["metadata"]["name"]
    assert "not ready in time" in info.value.jupyterhub_message
    assert f"Namespace {namespace} did not appear within 3s" in str(info.value)
    profile = await admin_kube.get(PROFILE, namespace)
    assert profile["metadata"]["annotations"][DIGEST_ANNOTATION] == "pending"
    # the next spawn (templates without the pause) converges
    rendered = rendered_for(username)
    result = await provisioner().ensure(rendered)
    assert not result.up_to_date
    await assert_provisioned(admin_kube, rendered)


async def test_someone_elses_profile_is_refused_and_untouched(
    provisioner: Callable[..., ProfileProvisioner], admin_kube: KubeApi, unique_name: Callable
) -> None:
    username = unique_name("victim")
    namespace = namespace_for(username)
    foreign = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": namespace},
        "spec": {"owner": {"kind": "User", "name": "mallory@example.com"}},
    }
    created = await admin_kube.create(PROFILE, foreign, field_manager="someone")
    # wait until the controller has made the namespace, so we see a settled state
    for _ in range(100):
        if await admin_kube.get(NAMESPACE, namespace):
            break
        await asyncio.sleep(0.1)
    before = await admin_kube.get(PROFILE, namespace)
    rendered = rendered_for(username, owner=f"{username}@example.com")
    failures_before = sample("dna_hub_provisioning_failures_total", reason="ownership")
    with pytest.raises(OwnershipConflict) as info:
        await provisioner().ensure(rendered)
    assert sample("dna_hub_provisioning_failures_total", reason="ownership") == failures_before + 1
    assert "belongs to someone else" in info.value.jupyterhub_message
    assert "mallory@example.com" in str(info.value)  # the admin sees who owns it
    after = await admin_kube.get(PROFILE, namespace)
    # the controller stand-in may still be adding its finalizer or status; dna_hub wrote nothing
    assert after["metadata"]["uid"] == created["metadata"]["uid"]
    assert after["spec"] == before["spec"]
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert "dna-hub" not in {m["manager"] for m in after["metadata"]["managedFields"]}
    # nothing namespaced was written either
    kind = await admin_kube.kind_for("kubeflow.org/v1alpha1", "PodDefault")
    assert await admin_kube.get(kind, "access-ml-pipeline", namespace) is None


async def test_someone_elses_namespace_is_refused_and_no_profile_written(
    provisioner: Callable[..., ProfileProvisioner], admin_kube: KubeApi, unique_name: Callable
) -> None:
    username = unique_name("squat")
    namespace = namespace_for(username)
    await admin_kube.create(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "annotations": {"owner": "mallory@example.com"}},
        },
        field_manager="someone",
    )
    with pytest.raises(OwnershipConflict) as info:
        await provisioner().ensure(rendered_for(username))
    assert f"namespace {namespace} already exists" in info.value.jupyterhub_message
    assert await admin_kube.get(PROFILE, namespace) is None


async def test_concurrent_spawns_of_one_user(
    provisioner: Callable[..., ProfileProvisioner], admin_kube: KubeApi, unique_name: Callable
) -> None:
    rendered = rendered_for(unique_name("twice"))
    first, second = await asyncio.gather(
        provisioner().ensure(rendered), provisioner().ensure(rendered)
    )
    assert sorted([first.up_to_date, second.up_to_date]) == [False, True]
    await assert_provisioned(admin_kube, rendered)


async def test_fifty_users_at_once(
    provisioner: Callable[..., ProfileProvisioner], admin_kube: KubeApi, unique_name: Callable
) -> None:
    renders = [rendered_for(unique_name(f"u{i}")) for i in range(50)]
    results = await asyncio.gather(*(provisioner(ready_timeout=120).ensure(r) for r in renders))
    assert [r.namespace for r in results] == [r.profile["metadata"]["name"] for r in renders]
    await asyncio.gather(*(assert_provisioned(admin_kube, r) for r in renders))


@pytest.mark.parametrize(
    "username",
    [
        "Alice.Smith@Example.com",
        "new\nline: {{ x }}",
        "quote\"'s",
        "ünïcødé-用户",
        "x" * 200,
        "emoji😀user",  # beyond the basic plane (#14)
        "line\u2028separator\x85nel",  # YAML line breaks
    ],
)
async def test_hostile_usernames_are_accepted_by_the_api_server(
    provisioner: Callable[..., ProfileProvisioner],
    admin_kube: KubeApi,
    unique_name: Callable,
    username: str,
) -> None:
    username = f"{unique_name('h')}-{username}"
    rendered = rendered_for(username, owner=username)
    await provisioner().ensure(rendered)
    await assert_provisioned(admin_kube, rendered)
    profile = await admin_kube.get(PROFILE, namespace_for(username))
    assert profile["metadata"]["annotations"]["dna-hub.io/hub-username"] == username
    assert profile["spec"]["owner"]["name"] == username


# --- faults: a proxy in front of the real API server ---------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def faulty(
    control_plane: ControlPlane, standins: Any, tmp_path: Path
) -> AsyncIterator[tuple[FaultProxy, KubeApi]]:
    with FaultProxy.for_kubeconfig(control_plane.hub_kubeconfig, control_plane.ca_file) as proxy:
        kubeconfig = proxy.write_kubeconfig(control_plane.hub_kubeconfig, tmp_path / "kubeconfig")
        configuration = Configuration()
        await load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        async with ApiClient(configuration) as api_client:
            yield (
                proxy,
                KubeApi(
                    api_client,
                    # generous: an injected fault, not a loaded machine, must decide each call
                    request_timeout=10,
                    retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2),
                ),
            )


PROVISIONING_REQUESTS = [
    ("GET", r"/apis/kubeflow.org/v1/profiles/[^/?]+$"),
    ("PATCH", r"/apis/kubeflow.org/v1/profiles/[^/?]+$"),
    ("PATCH", r"/poddefaults/access-ml-pipeline$"),
    ("PATCH", r"/networkpolicies/dna-hub-notebook-ingress$"),
]


@pytest.mark.parametrize(("method", "path"), PROVISIONING_REQUESTS)
@pytest.mark.parametrize("status", [409, 429, 500])
async def test_transient_faults_are_retried(
    faulty: tuple[FaultProxy, KubeApi],
    admin_kube: KubeApi,
    unique_name: Callable,
    method: str,
    path: str,
    status: int,
) -> None:
    proxy, kube = faulty
    rule = proxy.add_rule(method, path, status=status, times=2)
    rendered = rendered_for(unique_name("flaky"))
    if (method, status) == ("PATCH", 409) and "profiles" in path:
        # The first write of a new Profile is an unforced apply: a 409 there is a field
        # conflict with another writer — an answer, not retried — and the spawn says so.
        with pytest.raises(ApiFailure, match="HTTP 409"):
            await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
        assert rule.hits == 1
    else:
        await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
        await assert_provisioned(admin_kube, rendered)
        assert rule.hits == 2
    # whatever happened, the next spawn converges
    proxy.clear_rules()
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered, force=True)
    await assert_provisioned(admin_kube, rendered)


@pytest.mark.parametrize(("method", "path"), PROVISIONING_REQUESTS)
async def test_persistent_faults_fail_clearly_and_next_spawn_converges(
    faulty: tuple[FaultProxy, KubeApi],
    admin_kube: KubeApi,
    unique_name: Callable,
    method: str,
    path: str,
) -> None:
    proxy, kube = faulty
    rule = proxy.add_rule(method, path, status=500, times=None)
    rendered = rendered_for(unique_name("down"))
    with pytest.raises(ApiFailure) as info:
        await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
    assert rule.hits == 3  # bounded: RetryPolicy(attempts=3)
    assert "try again" in info.value.jupyterhub_message
    assert "HTTP 500" in str(info.value)
    proxy.clear_rules()
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered, force=True)
    await assert_provisioned(admin_kube, rendered)


async def test_timeouts_are_retried_and_bounded(
    faulty: tuple[FaultProxy, KubeApi], admin_kube: KubeApi, unique_name: Callable
) -> None:
    proxy, faulty_kube = faulty
    # a request timeout shorter than the proxy's hold, so the held request times out
    kube = KubeApi(faulty_kube.api_client, request_timeout=2, retry=faulty_kube.retry)
    rule = proxy.add_rule(
        "PATCH", r"/poddefaults/access-ml-pipeline$", action="timeout", hold_seconds=5, times=1
    )
    rendered = rendered_for(unique_name("slowapi"))
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
    assert rule.hits == 1
    await assert_provisioned(admin_kube, rendered)

    rule = proxy.add_rule(
        "PATCH", r"/poddefaults/access-ml-pipeline$", action="timeout", hold_seconds=5, times=None
    )
    with pytest.raises(ApiFailure, match=r"timed out|did not answer"):
        await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered, force=True)
    assert rule.hits == 3
    proxy.clear_rules()
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered, force=True)
    await assert_provisioned(admin_kube, rendered)


async def test_a_first_profile_create_that_never_answers_fails_in_words(
    faulty: tuple[FaultProxy, KubeApi], admin_kube: KubeApi, unique_name: Callable
) -> None:
    """Issue 26 (500 new users at once): the new Profile's create timed out through every
    retry and the bare TimeoutError reached the user as "Spawn failed: " (nothing else)."""
    proxy, faulty_kube = faulty
    kube = KubeApi(faulty_kube.api_client, request_timeout=2, retry=faulty_kube.retry)
    rendered = rendered_for(unique_name("slowcreate"))
    rule = proxy.add_rule(
        "PATCH", r"/apis/kubeflow.org/v1/profiles/", action="timeout", hold_seconds=5, times=None
    )
    with pytest.raises(ApiFailure) as info:
        await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
    assert rule.hits == 3
    assert info.value.jupyterhub_message == (
        "The Kubernetes API did not answer while setting up your Kubeflow profile. "
        "Please try again in a moment."
    )
    assert f"create Profile {rendered.profile['metadata']['name']}: timed out" in str(info.value)
    proxy.clear_rules()
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
    await assert_provisioned(admin_kube, rendered)


async def test_forbidden_is_not_retried(
    faulty: tuple[FaultProxy, KubeApi], unique_name: Callable
) -> None:
    proxy, kube = faulty
    rule = proxy.add_rule("PATCH", r"/apis/kubeflow.org/v1/profiles/", status=403, times=None)
    with pytest.raises(ApiFailure) as info:
        await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered_for(unique_name("deny")))
    assert rule.hits == 1
    assert info.value.reason == "forbidden"
    assert "hub-rbac.yaml" in str(info.value)


@pytest.mark.parametrize(
    "watched",
    [
        r"^/api/v1/namespaces$",  # the watch from the owner-check list's resourceVersion
        r"/serviceaccounts$",  # default-editor's watch without a resourceVersion
    ],
)
@pytest.mark.parametrize("status", [409, 429, 500, 504])
async def test_a_failing_watch_is_listed_again(
    faulty: tuple[FaultProxy, KubeApi],
    admin_kube: KubeApi,
    standins_kube: Kube,
    unique_name: Callable,
    status: int,
    watched: str,
    tmp_path: Path,
) -> None:
    proxy, faulty_kube = faulty
    rule = proxy.add_rule("GET", watched, query="watch=true", status=status)
    # The controller is held until dna_hub watches, so its first list finds nothing and the
    # watch must run (whatever the speed of the controller stand-in).
    (tmp_path / "00-profile.yaml.j2").write_text(profile_template_with({PAUSED_ANNOTATION: "true"}))
    rendered = rendered_for(unique_name("watchfail"), template_dir=tmp_path)
    name = rendered.profile["metadata"]["name"]

    resume_controller = resume_on_namespace_watch(standins_kube, name)

    kube = HookedKubeApi(
        faulty_kube.api_client,
        request_timeout=faulty_kube.request_timeout,
        retry=faulty_kube.retry,
        on_watch=resume_controller,
    )
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
    await assert_provisioned(admin_kube, rendered)
    assert rule.hits == 1


async def test_without_free_watch_slots_provisioning_polls(
    faulty: tuple[FaultProxy, KubeApi],
    admin_kube: KubeApi,
    unique_name: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy, kube = faulty
    # every watch slot of this loop taken (as by many spawns waiting at once)
    monkeypatch.setattr(KubeApi, "watch_limit", LoopLimit())
    KubeApi.watch_limit.replace(asyncio.Semaphore(0))
    proxy.clear_records()
    rendered = rendered_for(unique_name("nowatch"))
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
    await assert_provisioned(admin_kube, rendered)
    lists = [r for r in proxy.records if r.path == "/api/v1/namespaces"]
    assert lists, "the namespace was never listed"
    assert not [r for r in proxy.records if "watch=true" in r.query]


async def test_provisionings_beyond_the_limit_wait_their_turn(
    provisioner: Callable[..., ProfileProvisioner],
    admin_kube: KubeApi,
    unique_name: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ProfileProvisioner, "provisioning_limit", LoopLimit())
    ProfileProvisioner.provisioning_limit.replace(asyncio.Semaphore(1))
    renders = [rendered_for(unique_name(f"q{i}")) for i in range(3)]
    messages: list[list[str]] = [[], [], []]
    await asyncio.gather(
        *(
            provisioner().ensure(r, progress=m.append)
            for r, m in zip(renders, messages, strict=True)
        )
    )
    waited = [m for m in messages if "Waiting for other users' profiles to be provisioned…" in m]
    assert len(waited) == 2  # one ran at once, the two others queued
    for rendered in renders:
        await assert_provisioned(admin_kube, rendered)


# --- what a first spawn costs: the requests, exactly ----------------------------------------


class AfterWatchOpens:
    """An ApiClient that awaits ``hook(path)`` once the API server has answered a watch
    request (its headers: the watch is established) and before any event is read."""

    def __init__(self, api_client: ApiClient, hook: Callable[[str], Awaitable[None]]) -> None:
        self._api_client = api_client
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api_client, name)

    async def call_api(self, path: str, method: str, *args: Any, **kw: Any) -> Any:
        response = await self._api_client.call_api(path, method, *args, **kw)
        if ("watch", "true") in kw.get("query_params", []):
            await self._hook(path)
        return response


def request_summary(records: Any) -> list[tuple[str, str, str]]:
    """(method, path, what) per request: 'watch from rv', 'watch', 'list' or ''."""
    summary = []
    for record in records:
        query = dict(
            part.split("=", 1) if "=" in part else (part, "")
            for part in record.query.split("&")
            if part
        )
        if query.get("watch") == "true":
            what = "watch from rv" if "resourceVersion" in query else "watch"
        elif record.method == "GET" and "fieldSelector" in query:
            what = "list"
        else:
            what = ""
        summary.append((record.method, record.path, what))
    return sorted(summary)


async def eventually_exists(kube: KubeApi, kind: Kind, name: str, namespace: str | None) -> None:
    """Wait (bounded) until the controller stand-in has made an object."""
    async with asyncio.timeout(60):
        while await kube.get(kind, name, namespace) is None:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("controller", ["before the watches", "after each watch opened"])
async def test_a_first_spawn_sends_thirteen_requests(
    faulty: tuple[FaultProxy, KubeApi],
    admin_kube: KubeApi,
    standins_kube: Kube,
    unique_name: Callable,
    tmp_path: Path,
    controller: str,
) -> None:
    """A brand-new user, 8 objects: read Profile ‖ list namespace, create Profile, watch
    namespace from that list, 7 namespaced objects ‖ watch default-editor (no list), record
    the digest. The profile controller stand-in is held and let go at a chosen moment, so
    each variant takes its path every time: namespace and default-editor made before the
    hub's watch requests are sent (default-editor then arrives as the watch's synthetic
    ADDED), or each made only once the hub's watch on it is open."""
    proxy, faulty_kube = faulty
    (tmp_path / "00-profile.yaml.j2").write_text(profile_template_with({PAUSED_ANNOTATION: "true"}))
    rendered = rendered_for(unique_name("count"), template_dir=tmp_path)
    name = rendered.profile["metadata"]["name"]
    owner = rendered.profile["spec"]["owner"]["name"]
    assert len(rendered.namespaced) == 7

    async def resume_controller() -> None:
        await standins_kube.patch(
            f"/apis/kubeflow.org/v1/profiles/{name}",
            {"metadata": {"annotations": {PAUSED_ANNOTATION: None}}},
        )

    async def before(kind: Kind, namespace: str | None, selector: str | None) -> None:
        if kind.plural == "namespaces":
            await resume_controller()
            await eventually_exists(admin_kube, SERVICE_ACCOUNT, "default-editor", name)

    async def after(path: str) -> None:
        if path == "/api/v1/namespaces":
            # made as the controller makes it (the held stand-in adopts it when resumed)
            await admin_kube.create(
                NAMESPACE,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": name,
                        "annotations": {"owner": owner},
                        "labels": dict(DEFAULT_NAMESPACE_LABELS),
                    },
                },
                field_manager="test",
            )
        elif path.endswith("/serviceaccounts"):
            assert await admin_kube.get(SERVICE_ACCOUNT, "default-editor", name) is None
            await resume_controller()

    if controller == "before the watches":
        kube: KubeApi = HookedKubeApi(
            faulty_kube.api_client, request_timeout=10, retry=faulty_kube.retry, on_watch=before
        )
    else:
        kube = KubeApi(
            AfterWatchOpens(faulty_kube.api_client, after),  # type: ignore[arg-type]
            request_timeout=10,
            retry=faulty_kube.retry,
        )
    proxy.clear_records()
    result = await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
    await assert_provisioned(admin_kube, rendered)
    profile = rf"/apis/kubeflow.org/v1/profiles/{name}"
    expected = [
        ("GET", profile, ""),
        ("GET", "/api/v1/namespaces", "list"),
        ("PATCH", profile, ""),
        ("GET", "/api/v1/namespaces", "watch from rv"),
        *[
            ("PATCH", (await admin_kube.kind_for(o["apiVersion"], o["kind"])).path(
                name, o["metadata"]["name"]), "")
            for o in rendered.namespaced
        ],
        ("GET", f"/api/v1/namespaces/{name}/serviceaccounts", "watch"),
        ("PATCH", profile, ""),
    ]  # fmt: skip
    assert request_summary(proxy.records) == sorted(expected)
    assert result.requests == len(expected) == 13 == len(rendered.namespaced) + 1 + 5


async def test_a_watch_without_resource_version_starts_with_what_exists(
    hub_kube: KubeApi, admin_kube: KubeApi, unique_name: Callable
) -> None:
    """Kubernetes API concepts, "Get State and Start at Most Recent", on this control plane
    (1.20): an existing object arrives first, as ADDED — so default-editor needs no list."""
    namespace = unique_name("rvless")
    await admin_kube.create(
        NAMESPACE,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        field_manager="test",
    )
    await admin_kube.create(
        SERVICE_ACCOUNT,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default-editor", "namespace": namespace},
        },
        field_manager="test",
    )
    events = []
    watch = hub_kube.watch(
        SERVICE_ACCOUNT,
        namespace,
        field_selector="metadata.name=default-editor",
        resource_version=None,
        timeout_seconds=5,
    )
    async with contextlib.aclosing(watch):
        async for event in watch:
            events.append(event)
            break
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "default-editor")
    ]


class GoneOnFirstNamespaceWatch(HookedKubeApi):
    """Answers the first namespace watch as the API server answers a watch from a
    resourceVersion its watch cache no longer holds: one ERROR event, 410 Gone (here
    without sending it: on a young control plane that window cannot be forced)."""

    gone = 0

    async def watch(  # type: ignore[override]
        self, kind: Kind, namespace: str | None, **kw: Any
    ) -> AsyncIterator[dict[str, Any]]:
        if kind.plural == "namespaces" and not self.gone:
            self.gone += 1
            await self.on_watch(kind, namespace, kw["field_selector"])
            yield {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": f"too old resource version: {kw['resource_version']}",
                    "reason": "Expired",
                    "code": 410,
                },
            }
            return
        async for event in super().watch(kind, namespace, **kw):
            yield event


async def test_a_gone_resource_version_is_listed_again(
    faulty: tuple[FaultProxy, KubeApi],
    admin_kube: KubeApi,
    standins_kube: Kube,
    unique_name: Callable,
    tmp_path: Path,
) -> None:
    proxy, faulty_kube = faulty
    (tmp_path / "00-profile.yaml.j2").write_text(profile_template_with({PAUSED_ANNOTATION: "true"}))
    rendered = rendered_for(unique_name("gone"), template_dir=tmp_path)
    name = rendered.profile["metadata"]["name"]

    resume_controller = resume_on_namespace_watch(standins_kube, name)

    kube = GoneOnFirstNamespaceWatch(
        faulty_kube.api_client,
        request_timeout=10,
        retry=faulty_kube.retry,
        on_watch=resume_controller,
    )
    proxy.clear_records()
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
    await assert_provisioned(admin_kube, rendered)
    assert kube.gone == 1
    namespace_requests = [
        r.query for r in proxy.records if r.path == "/api/v1/namespaces" and r.method == "GET"
    ]
    # the owner-check list; after the Gone watch (not sent), a list again
    assert len(namespace_requests) >= 2
    assert not [q for q in namespace_requests[:2] if "watch=true" in q]
