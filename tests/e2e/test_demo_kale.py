"""``./dev demo`` shows Kale: its notebook is a container of the single-user image.

The demo is started as ``./dev demo`` starts it (``python -m devstack.demo``, after
``./dev setup``), as a subprocess with its own control plane, stand-ins, provider and hub.
Chromium logs alice in; JupyterLab must come from the single-user image, with Kale's panel
finding Kubeflow Pipelines (the KFP API stand-in) reachable. Then Ctrl-C (SIGINT) must stop
it cleanly: exit 0, and no podman pod, container or network of the demo left behind.

The screenshot is saved as ``jupyterlab-kale.png`` in the test's temporary directory
(and, if ``DNA_HUB_SCREENSHOT_DIR`` is set, copied there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from devstack import images, paths
from devstack.oidc_stack import DEMO_PASSWORD
from devstack.pod_network import CONTAINER_NODE, remove_pod_network

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(900),
]

READY_TIMEOUT = 600  # a cold image build happens before, in pytest_collection_finish
STOP_TIMEOUT = 240


class DemoProcess:
    """``python -m devstack.demo`` with its output collected line by line."""

    def __init__(self, work: Path) -> None:
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack.demo", "--port", "0"],
            cwd=paths.REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TMPDIR": str(work)},
            start_new_session=True,  # SIGINT is sent to it alone, as a terminal's Ctrl-C would
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    def banner_value(self, key: str) -> str | None:
        for line in self.output:
            if line.strip().startswith(key + ":"):
                return line.split(":", 1)[1].strip()
        return None

    def wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.banner_value("stop") is None:
            if self.process.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"the demo exited {self.process.returncode}:\n{self.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the demo not up after {timeout}s:\n{self.text}")
            time.sleep(0.2)

    def interrupt(self, timeout: float) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            raise AssertionError(
                f"the demo did not stop on SIGINT in {timeout}s:\n{self.text}"
            ) from exc
        self._reader.join(10)
        return code


def _processes_in(work: Path) -> list[str]:
    """Processes whose command line or working directory is under ``work`` (the demo's TMPDIR)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
            if str(work) in cmdline or cwd.startswith(str(work)):
                found.append(f"{proc.name}: {cmdline}")
    return found


def _demo_networks(pid: int) -> list[str]:
    """The podman networks the demo process ``pid`` made (named dna-hub-PID-...)."""
    names = _podman_lines("network", "ls", "--format", "{{.Name}}")
    return [name for name in names if name.startswith(f"dna-hub-{pid}-")]


def _podman_lines(*args: str) -> list[str]:
    return images.podman(*args, check=False).stdout.split()


async def _log_in_with_chromium(page: Any, url: str, login: str) -> None:
    """The provider's login and consent pages, as a person goes through them."""
    await page.goto(f"{url}/hub/oauth_login?next=%2Fhub%2Fspawn")
    for _ in range(4):
        await page.wait_for_load_state()
        if page.url.startswith(url):
            return
        field = page.locator("input[name=login]")
        if await field.count():
            await field.fill(login)
            await page.locator("input[name=password]").fill(DEMO_PASSWORD)
        await page.locator("button[type=submit]").first.click()
    raise AssertionError(f"still at the provider after login: {page.url}")


async def test_demo_shows_kale_from_the_singleuser_image_and_stops_clean(
    singleuser_image: str, tmp_path: Path
) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import async_playwright

    from tests.e2e.test_e2e_browser import CHROMIUM_ARGS, chromium_path

    chromium = chromium_path()
    work = tmp_path / "demo-tmp"
    work.mkdir()
    demo = DemoProcess(work)
    network = None
    try:
        demo.wait_until_up(READY_TIMEOUT)
        url = (demo.banner_value("dna_hub demo is up") or "").rstrip("/")
        network = (demo.banner_value("podman network") or "").split(" ")[0]
        runs = demo.banner_value("notebooks run") or ""
        kubeconfig = (demo.banner_value("kubectl as admin") or "").split("KUBECONFIG=", 1)[1]
        assert url.startswith("http://127.0.0.1:"), demo.text
        # The banner says what is true: this image, the container kubelet, Kale.
        assert singleuser_image in runs and "Kale" in runs, runs
        assert network and _podman_lines("network", "ls", "--format", "{{.Name}}").count(network)

        shot = tmp_path / "jupyterlab-kale.png"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                logged_in = time.monotonic()
                await _log_in_with_chromium(page, url, "alice")
                await page.wait_for_url("**/user/alice/lab**", timeout=300_000)
                await page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
                await page.locator("[title='Kubeflow Pipelines Deployment Panel']").first.click()
                panel = page.locator(".kale-panel")
                await panel.wait_for(state="visible", timeout=60_000)
                # The panel asks KFP once it opens: wait for its answer (the assertion
                # below says what it showed if it never came).
                with contextlib.suppress(PlaywrightTimeout):
                    await page.locator(".kale-panel", has_text="KFP is reachable").wait_for(
                        timeout=60_000
                    )
                seconds = time.monotonic() - logged_in
                await page.screenshot(path=str(shot))
                panel_text = await panel.inner_text()
                title = await page.title()
            finally:
                await browser.close()
        if target := os.environ.get("DNA_HUB_SCREENSHOT_DIR"):
            shutil.copy(shot, Path(target) / shot.name)
        print(f"demo: Kale's panel {seconds:.1f}s after the login began")
        print(f"screenshot: {shot}\nKale panel text: {panel_text!r}")
        assert "JupyterLab" in title
        assert panel_text.startswith("Kale"), panel_text
        assert "KFP is reachable" in panel_text, panel_text

        # alice's server is a podman container of the single-user image on the container node.
        api = await config.new_client_from_config(config_file=kubeconfig)
        try:
            answer = await client.CoreV1Api(api).read_namespaced_pod(
                "jupyter-alice", "kubeflow-alice", _request_timeout=30
            )
            pod = api.sanitize_for_serialization(answer)
        finally:
            await api.close()
        assert pod["spec"]["nodeName"] == CONTAINER_NODE
        assert pod["spec"]["containers"][0]["image"] == singleuser_image
        assert pod["status"]["containerStatuses"][0]["containerID"].startswith("podman://")
        label = f"label=dna-hub.test/network={network}"
        pods = _podman_lines("pod", "ps", "--filter", label, "--quiet")
        running = [
            image
            for pod_id in pods
            for image in _podman_lines("ps", "--filter", f"pod={pod_id}", "--format", "{{.Image}}")
        ]
        assert singleuser_image in running, running

        # Ctrl-C: a clean stop, nothing of the demo left in podman.
        assert demo.interrupt(STOP_TIMEOUT) == 0, demo.text
        assert demo.output[-1] == "stopped.", demo.text
        assert "Traceback" not in demo.text, demo.text
        assert network not in _podman_lines("network", "ls", "--format", "{{.Name}}")
        assert _podman_lines("ps", "-a", "--filter", f"network={network}", "--quiet") == []
        assert _podman_lines("pod", "ps", "--filter", label, "--quiet") == []
        for pod_id in pods:
            assert _podman_lines("ps", "-a", "--filter", f"pod={pod_id}", "--quiet") == []
        assert _processes_in(work) == []  # stand-ins, provider, hub, proxy: all ended
    finally:
        if demo.process.poll() is None:
            with contextlib.suppress(AssertionError):
                demo.interrupt(STOP_TIMEOUT)
        if network:
            remove_pod_network(network)  # only if the demo failed to


async def test_demo_interrupted_while_starting_leaves_nothing(tmp_path: Path) -> None:
    """Ctrl-C while the notebook containers' side starts: the same clean stop, nothing left."""
    if missing := images.engine_missing():
        paths.unavailable(f"the container engine is not installed ({', '.join(missing)})")
    work = tmp_path / "demo-tmp"
    work.mkdir()
    demo = DemoProcess(work)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        # Once its podman network exists, the demo is creating it, or starting the container
        # kubelet in it: either way the network (and whatever runs in it) must go.
        while not _demo_networks(demo.process.pid):
            assert demo.process.poll() is None, demo.text
            assert time.monotonic() < deadline, demo.text
            time.sleep(0.1)
        code = demo.interrupt(STOP_TIMEOUT)
        assert code == 0, demo.text
        assert demo.output[-1] == "stopped.", demo.text
        assert "Traceback" not in demo.text, demo.text
        assert _demo_networks(demo.process.pid) == []
        assert _processes_in(work) == []
        print(demo.text)
    finally:
        if demo.process.poll() is None:
            with contextlib.suppress(AssertionError):
                demo.interrupt(STOP_TIMEOUT)
        for network in _demo_networks(demo.process.pid):
            remove_pod_network(network)


async def test_demo_whose_image_does_not_build_says_so_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed image build: one message naming the build logs, exit 1, nothing left running."""
    from devstack import demo

    if missing := images.engine_missing():
        paths.unavailable(f"the container engine is not installed ({', '.join(missing)})")

    def broken_build(name: str) -> images.BuiltImage:
        raise images.ImageBuildError(f"buildah bud of {name} exited 1 (test)")

    monkeypatch.setattr(images, "ensure_image", broken_build)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the demo's work directory
    monkeypatch.setenv("KUBECONFIG", os.environ.get("KUBECONFIG", ""))  # the demo sets it
    assert await demo.run(0) == 1
    out, err = capsys.readouterr()
    assert "the single-user image did not build" in err, out + err
    assert "buildah bud of singleuser exited 1 (test)" in err
    assert str(images.IMAGES_DIR) in err
    assert "Traceback" not in out + err
    assert out.rstrip().endswith("stopped."), out
    assert _processes_in(tmp_path) == []  # the stand-ins it had started were stopped
