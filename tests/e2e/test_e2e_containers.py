"""End to end with the notebook as a container from the real single-user image.

Real OpenID login → real JupyterHub + proxy → DnaSpawner provisions ``kubeflow-alice``
(profile controller stand-in) → the PodDefault webhook stand-in injects the Kubeflow
Pipelines token volume → the kubelet stand-in runs the pod as a podman container from
``images/singleuser/Dockerfile`` under the pod's security context. The test then runs code
in alice's kernel as she would: through the proxy, Jupyter Server's kernel API, alice's
hub token. KFP is the authorizing stand-in (TokenReview + SubjectAccessReview).

The DnaSpawner configuration is the demo's (devstack/notebook_containers.py): there is
no storage provisioner here and the hub may not create PVCs (least privilege), so its
``modify_pod_hook`` creates the user's home claim as the cluster admin would have, just
before the pod is created.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from kubespawner.slugs import safe_slug

from devstack.controlplane import ControlPlane
from devstack.demo import DNA_SPAWNER_CONFIG, demo_logins
from devstack.kfp_standin import KfpStandIn, KubeAuth, security_contexts
from devstack.notebook_containers import container_spawner_config
from devstack.oidc_stack import HubProcess, OIDCProvider, start_hub
from devstack.pod_network import POD_ON_CONTAINERS, PodNetwork
from devstack.standins import Kube
from devstack.standins_process import StandIns
from dna_hub.policy.naming import namespace_for
from tests.support.jupyter_kernel import Kernel

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

SAMPLE = Path(__file__).parents[1] / "data" / "kale" / "pipeline.ipynb"
NS = "kubeflow-alice"

#: Test-only: the test's admin service issues alice a token (as she could on /hub/token).
TEST_CONFIG = """
c.JupyterHub.load_roles[0]["scopes"].append("tokens")
"""

#: In the notebook: the HTTP status a KFP client call ends with (200, or the error's).
STATUS_OF = """
def status_of(call):
    try:
        call()
        return 200
    except Exception as exc:
        return getattr(exc, "status", repr(exc))
"""

KERNEL_PROBE = (
    """
import json, os, warnings
warnings.simplefilter("ignore")
import kfp
from kfp import dsl

r = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
     "home": os.path.expanduser("~")}
try:
    open("/dna-hub-probe", "w")
    r["root_write"] = "allowed"
except OSError as exc:
    r["root_write"] = exc.strerror
marker = os.path.expanduser("~/dna-hub-persisted.txt")
r["persisted"] = open(marker).read() if os.path.exists(marker) else None
with open(marker, "w") as f:
    f.write("written in the first server")
r["mounts"] = sorted(
    (line.split()[4], line.split()[5].split(",")[0]) for line in open("/proc/self/mountinfo")
)

client = kfp.Client()
client.create_experiment("dna-hub-e2e", namespace="kubeflow-alice")
r["experiments"] = [e.display_name for e in
                    client.list_experiments(namespace="kubeflow-alice").experiments or []]

@dsl.component(base_image="python:3.11")
def hello() -> str:
    return "hello"

@dsl.pipeline(name="dna-hub-hello")
def hello_pipeline():
    hello()

run = client.create_run_from_pipeline_func(
    hello_pipeline, arguments={}, experiment_name="dna-hub-e2e", namespace="kubeflow-alice"
)
r["run_id"] = run.run_id

"""
    + STATUS_OF
    + """
r["bob"] = status_of(lambda: client.list_experiments(namespace="kubeflow-bob"))
r["other_audience"] = status_of(
    lambda: kfp.Client(existing_token=OTHER_AUDIENCE_TOKEN).list_experiments(
        namespace="kubeflow-alice"))
print("E2E-REPORT " + json.dumps(r))
"""
)

KALE = """
import subprocess, sys
done = subprocess.run(
    [sys.executable, "-m", "kale.cli", "--nb", "pipeline.ipynb",
     "--pipeline_name", "dna-hub-sample", "--experiment_name", "dna-hub-sample",
     "--upload_pipeline", "--run_pipeline"],
    cwd=os.path.expanduser("~/kale-sample"), capture_output=True, text=True, timeout=600)
print("KALE-EXIT", done.returncode)
print(done.stdout[-3000:], done.stderr[-3000:])
"""


VARIANT = (
    """
import json, os, warnings
warnings.simplefilter("ignore")
import kfp

"""
    + STATUS_OF
    + """
client = kfp.Client()
r = {"token_mounted": os.path.exists("/var/run/secrets/kubeflow/pipelines/token"),
     "list": status_of(lambda: client.list_experiments(namespace="kubeflow-alice")),
     "create": status_of(lambda: client.create_experiment("variant", namespace="kubeflow-alice"))}
print("VARIANT-REPORT " + json.dumps(r), flush=True)
"""
)


async def _variant(
    kube: Kube,
    standins: StandIns,
    image: str,
    kfp: KfpStandIn,
    name: str,
    sa: str,
    labels: dict[str, str],
) -> dict[str, Any]:
    """A bare kfp.Client() in a pod of kubeflow-alice that differs in one setting."""
    await kube.create(f"/api/v1/namespaces/{NS}/pods", {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            **POD_ON_CONTAINERS, "serviceAccountName": sa, "restartPolicy": "Never",
            # kubeflow-alice enforces Pod Security "restricted", as the notebook pod meets it
            "securityContext": {"runAsNonRoot": True, "fsGroup": 100,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": image, "command": ["python", "-c", VARIANT],
                "env": [{"name": "KF_PIPELINES_ENDPOINT", "value": kfp.url}],
                "securityContext": {"runAsUser": 1000, "runAsGroup": 100,
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    })  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pod = await kube.get(f"/api/v1/namespaces/{NS}/pods/{name}")
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            break
        await asyncio.sleep(0.5)
    log = standins.pod_log(NS, name)
    for line in log.splitlines():
        if "VARIANT-REPORT " in line:
            return json.loads(line.split("VARIANT-REPORT ", 1)[1])
    raise AssertionError(f"variant {name} reported nothing:\n{log[-3000:]}")


@pytest.fixture
def kfp_on_pod_network(kfp_auth: KubeAuth, pod_network: PodNetwork) -> Iterator[KfpStandIn]:
    with KfpStandIn(auth=kfp_auth, host=pod_network.gateway) as kfp:
        yield kfp


@pytest_asyncio.fixture(loop_scope="session")
async def container_hub(
    oidc_provider: OIDCProvider,
    oidc_node_modules: Path,
    standins: StandIns,
    container_standins: StandIns,
    pod_network: PodNetwork,
    singleuser_image: str,
    kfp_on_pod_network: KfpStandIn,
    control_plane: ControlPlane,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[HubProcess]:
    extra = (
        DNA_SPAWNER_CONFIG
        + container_spawner_config(
            singleuser_image,
            pod_network,
            kfp_on_pod_network.url,
            control_plane.admin_kubeconfig,
        )
        + TEST_CONFIG
    )
    hub = await start_hub(
        oidc_provider,
        oidc_node_modules,
        tmp_path_factory.mktemp("container-hub"),
        # The hub's API must be reachable from the notebook container: on the gateway.
        hub={"hub_ip": pod_network.gateway},
        extra_config=extra,
    )
    try:
        yield hub
    finally:
        hub.stop()


async def _server(hub: HubProcess, name: str, *, ready: bool, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = await hub.user_model(name)
        server = (model or {}).get("servers", {}).get("")
        if (bool(server and server["ready"])) == ready:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"{name}'s server ready={not ready} after {timeout}s:\n{hub.log()[-4000:]}"
    )


async def _start(hub: HubProcess, name: str) -> float:
    started = time.monotonic()
    async with hub.api() as api:
        answer = await api.post(f"/users/{name}/server")
        assert answer.status_code in (201, 202), answer.text
    await _server(hub, name, ready=True)
    return time.monotonic() - started


async def _stop(hub: HubProcess, name: str) -> None:
    async with hub.api() as api:
        answer = await api.delete(f"/users/{name}/server")
        assert answer.status_code in (202, 204), answer.text
    await _server(hub, name, ready=False)


def _report(output: str, marker: str) -> Any:
    for line in output.splitlines():
        if line.startswith(marker + " "):
            return json.loads(line[len(marker) + 1 :])
    raise AssertionError(f"no {marker} line in:\n{output}")


async def test_alice_notebook_container_kfp_and_kale(
    container_hub: HubProcess,
    kfp_on_pod_network: KfpStandIn,
    standins_kube: Kube,
    container_standins: StandIns,
) -> None:
    hub, kfp, kube = container_hub, kfp_on_pod_network, standins_kube
    async with httpx.AsyncClient(follow_redirects=True, timeout=60) as http:
        page = await hub.login(http, "alice")
        assert page.status_code == 200, page.text
    seconds = await _start(hub, "alice")
    pod = await kube.get(f"/api/v1/namespaces/{NS}/pods/jupyter-alice")
    assert pod["spec"]["nodeName"] == "standin-podman"
    mounts = [m["mountPath"] for m in pod["spec"]["containers"][0].get("volumeMounts", [])]
    assert "/var/run/secrets/kubeflow/pipelines" in mounts  # injected by the PodDefault

    async with hub.api() as api:
        answer = await api.post("/users/alice/tokens", json={"note": "e2e", "expires_in": 3600})
        assert answer.status_code == 201, answer.text
        token = answer.json()["token"]
    other = await kube.create(
        f"/api/v1/namespaces/{NS}/serviceaccounts/default-editor/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"audiences": ["other.example"], "expirationSeconds": 600}},
    )  # fmt: skip
    code = f"OTHER_AUDIENCE_TOKEN = {other['status']['token']!r}\n" + KERNEL_PROBE
    server = f"{hub.url}/user/alice"
    async with Kernel(server, token) as kernel:
        seen = _report((await kernel.run(code)).check().stdout, "E2E-REPORT")

    assert seen["uid"] == 1000 and seen["gid"] == 100
    assert 100 in seen["groups"]
    assert seen["root_write"] == "Read-only file system"
    assert seen["home"] == "/home/jovyan" and seen["persisted"] is None
    assert "dna-hub-e2e" in seen["experiments"]
    assert seen["bob"] == 403
    assert seen["other_audience"] == 401
    editor = f"system:serviceaccount:{NS}:default-editor"
    allowed = {(r.verb, r.resource, r.namespace) for r in kfp.reviews if r.allowed}
    assert {("create", "experiments", NS), ("list", "experiments", NS),
            ("create", "runs", NS)} <= allowed  # fmt: skip
    assert {r.user for r in kfp.reviews} == {editor}
    assert any(not r.allowed and r.namespace == "kubeflow-bob" for r in kfp.reviews)
    assert kfp.store.runs, "no run was created"

    # Kale compiles and uploads the sample notebook's pipeline, every step non-root.
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"token {token}"}) as http:
        await http.put(f"{server}/api/contents/kale-sample", json={"type": "directory"})
        put = await http.put(
            f"{server}/api/contents/kale-sample/pipeline.ipynb",
            json={"type": "notebook", "format": "json", "content": json.loads(SAMPLE.read_text())},
        )
        assert put.status_code in (200, 201), put.text
    runs_before = set(kfp.store.runs)
    async with Kernel(server, token) as kernel:
        out = (await kernel.run("import os\n" + KALE)).check().stdout
    assert "KALE-EXIT 0" in out, out
    assert any(r.path.endswith("/pipelines/upload") for r in kfp.requests)
    [kale_run] = [run for rid, run in kfp.store.runs.items() if rid not in runs_before]
    contexts = list(security_contexts(kale_run))
    assert contexts, kale_run
    for context in contexts:
        assert context["runAsNonRoot"] is True and int(context["runAsUser"]) != 0, context

    # Variants that break one setting see the refusal. Without the PodDefault label no
    # token is mounted: 401. A ServiceAccount bound to kubeflow-view only: reads, 403 on
    # create. The same pod as default-editor (control): both allowed.
    await kube.create(f"/api/v1/namespaces/{NS}/serviceaccounts", {"metadata": {"name": "viewer"}})
    await kube.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings",
        {"metadata": {"name": "viewer-kubeflow-view"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "kubeflow-view"},
         "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": NS}]},
    )  # fmt: skip
    # usable at once: since 1.24 no token Secret is made (nor wanted by the admission)
    label = {"access-ml-pipeline": "true"}
    image = pod["spec"]["containers"][0]["image"]
    unlabelled = await _variant(
        kube, container_standins, image, kfp, "no-label", "default-editor", {}
    )
    assert unlabelled == {"token_mounted": False, "list": 401, "create": 401}, unlabelled
    viewer = await _variant(kube, container_standins, image, kfp, "view-only", "viewer", label)
    assert viewer == {"token_mounted": True, "list": 200, "create": 403}, viewer
    control = await _variant(
        kube, container_standins, image, kfp, "control", "default-editor", label
    )
    assert control == {"token_mounted": True, "list": 200, "create": 200}, control

    # $HOME survives a stop and start of the server (the claim's directory is kept).
    await _stop(hub, "alice")
    await _start(hub, "alice")
    async with Kernel(server, token) as kernel:
        again = _report((await kernel.run(code)).check().stdout, "E2E-REPORT")
    assert again["persisted"] == "written in the first server"

    print(
        textwrap.dedent(f"""
        e2e: notebook ready in {seconds:.1f}s; uid={seen["uid"]} gid={seen["gid"]}
        groups={seen["groups"]} mounts={seen["mounts"]}
        """)
    )


async def test_every_login_the_demo_admits_gets_a_server(
    container_hub: HubProcess, standins_kube: Kube
) -> None:
    """Each login the demo's banner admits gets a notebook server with the demo's configuration:
    carol's hub name is her email, which once made the home claim "home-carol@example.com"
    and a 422 (issue #29)."""
    hub, kube = container_hub, standins_kube
    admitted = [line.split()[0] for line in demo_logins()[:-1] if "refused" not in line]
    assert sorted(admitted) == ["alice", "bob", "carol"]
    names = {}
    for login in admitted:
        before = set(await hub.user_names())
        async with httpx.AsyncClient(follow_redirects=True, timeout=60) as http:
            page = await hub.login(http, login)
            assert page.status_code == 200, (login, page.status_code, page.text)
        (names[login],) = set(await hub.user_names()) - before
    assert names["carol"] == "carol@example.com"
    for login, name in names.items():
        await _start(hub, name)
        model = await hub.user_model(name)
        assert model is not None and model["servers"][""]["ready"], (login, model)
        # KubeSpawner's pod_name_template 'jupyter-{user_server}', in the policy's namespace
        pod_name = "jupyter-" + safe_slug(name, max_length=48)
        pod = await kube.get(f"/api/v1/namespaces/{namespace_for(name)}/pods/{pod_name}")
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]  # fmt: skip
        assert claims == ["home-" + safe_slug(name, max_length=48)], claims
        await _stop(hub, name)


@contextlib.asynccontextmanager
async def jupyterlab_in_chromium(hub: HubProcess, login: str, lab_url: str) -> AsyncIterator[Any]:
    """Chromium logged in as ``login`` through the provider, at its JupyterLab (``lab_url``,
    a glob) with the main area drawn; yields the page, closes the browser after."""
    from playwright.async_api import async_playwright

    from tests.e2e.test_e2e_browser import CHROMIUM_ARGS, chromium_path, login_in_browser

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await login_in_browser(page, hub, login)
            await page.wait_for_url(lab_url, timeout=240_000)
            await page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
            yield page
        finally:
            await browser.close()


@pytest.mark.browser
async def test_browser_jupyterlab_from_the_image_shows_kale(
    container_hub: HubProcess, standins_kube: Kube, singleuser_image: str, tmp_path: Path
) -> None:
    """Chromium → OIDC → hub → DnaSpawner → JupyterLab of the single-user image, Kale's panel."""
    shot = tmp_path / "jupyterlab-kale.png"
    async with jupyterlab_in_chromium(container_hub, "alice", "**/user/alice/lab**") as page:
        # Kale's left-sidebar tab (its lab extension, prebuilt in the image).
        await page.locator("[title='Kubeflow Pipelines Deployment Panel']").first.click()
        panel = page.locator(".kale-panel")
        await panel.wait_for(state="visible", timeout=60_000)
        await page.wait_for_timeout(1000)  # let the panel paint before the picture
        await page.screenshot(path=str(shot))
        panel_text = await panel.inner_text()
        title = await page.title()
    print(f"screenshot: {shot}\nKale panel text: {panel_text!r}")
    assert "JupyterLab" in title
    # Kale's panel, connected to the (authorizing) KFP stand-in with alice's token.
    assert panel_text.startswith("Kale"), panel_text
    assert "KFP is reachable" in panel_text, panel_text
    pod = await standins_kube.get(f"/api/v1/namespaces/{NS}/pods/jupyter-alice")
    assert pod["spec"]["nodeName"] == "standin-podman"
    assert pod["spec"]["containers"][0]["image"] == singleuser_image
    statuses = pod["status"]["containerStatuses"]
    assert statuses[0]["containerID"].startswith("podman://")


@pytest.mark.browser
async def test_carol_opens_jupyterlab_in_chromium(
    container_hub: HubProcess, standins_kube: Kube, tmp_path: Path
) -> None:
    """The sequence of issue #29, as a person does it: carol (hub name carol@example.com, the
    demo banner's data scientist) logs in with Chromium and JupyterLab opens — before, the
    home claim 'home-carol@example.com' ended it in "500 : Unhandled error"."""
    shot = tmp_path / "jupyterlab-carol.png"
    async with jupyterlab_in_chromium(container_hub, "carol", "**/user/carol*/lab**") as page:
        await page.screenshot(path=str(shot))
        title, text = await page.title(), await page.locator("body").inner_text()
    print(f"screenshot: {shot}")
    assert "JupyterLab" in title
    assert "Unhandled error" not in text and "500" not in title
    name = "carol@example.com"
    pod_name = "jupyter-" + safe_slug(name, max_length=48)
    pod = await standins_kube.get(f"/api/v1/namespaces/{namespace_for(name)}/pods/{pod_name}")
    assert pod["status"]["phase"] == "Running"
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v]  # fmt: skip
    assert claims == ["home-" + safe_slug(name, max_length=48)], claims
    await _stop(container_hub, name)
