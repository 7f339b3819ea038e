"""pytest plugin: the stand-ins (profile controller, PodDefault webhook, scheduler+kubelet).

Fixtures:

* ``standins`` (session): :class:`StandIns` — one ``python -m devstack.standins``
  process against the session's ``control_plane``, with the profile controller (no
  delay), the PodDefault webhook (registered as
  ``admission-webhook-mutating-webhook-configuration``) and the kubelet stand-in (node
  ``standin-node``). Started once, stopped (SIGTERM) at session end.
* ``standins_factory`` (function): ``standins_factory(*args)`` starts *another* stand-in
  process with extra command-line arguments (e.g. ``"--no-webhook", "--no-kubelet",
  "--profile-delay", "5"``), stopped when the test ends. Never run a component twice
  against the same cluster: two profile controllers fight over the same Profiles, two
  webhooks replace each other's (same-named) configuration, two kubelets race to bind
  pods. So pass ``--no-…`` for what the session's ``standins`` already runs — and for a
  slow profile controller prefer the per-Profile annotations of
  :mod:`devstack.standins.profile_controller`:
  ``dna-hub.test/controller-delay-seconds``, ``dna-hub.test/controller-step-delay-seconds``,
  ``dna-hub.test/controller-paused``.
* ``standins_kube``: a :class:`~devstack.standins.Kube` (dict-based REST client) as
  cluster-admin, for test setup and inspection.

Why a separate process: the hub under test runs in the test's event loop; the stand-ins
must neither be slowed down by its stalls nor slow it down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devstack import paths
from devstack.standins import READY_MARKER

READY_TIMEOUT = float(os.environ.get("DNA_HUB_STANDINS_READY_TIMEOUT", "90"))


@dataclass
class StandIns:
    """A running stand-in process and what it reported when it became ready."""

    process: subprocess.Popen[bytes]
    state_dir: Path
    log_file: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def node_name(self) -> str | None:
        return self.info.get("node_name")

    @property
    def webhook_url(self) -> str | None:
        return self.info.get("webhook_url")

    @property
    def pod_log_dir(self) -> Path | None:
        value = self.info.get("pod_log_dir")
        return Path(value) if value else None

    def pod_log_path(self, namespace: str, name: str) -> Path | None:
        """The stdout+stderr file of the newest pod ``namespace/name`` run by the kubelet."""
        if self.pod_log_dir is None:
            return None
        matches = sorted(
            self.pod_log_dir.glob(f"{namespace}_{name}_*.log"), key=lambda p: p.stat().st_mtime
        )
        return matches[-1] if matches else None

    def pod_log(self, namespace: str, name: str) -> str:
        path = self.pod_log_path(namespace, name)
        return path.read_text(errors="replace") if path else ""

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"stand-ins exited with {code}; log tail:\n{self.log_tail()}")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (clean shutdown), SIGKILL to the whole group if it does not exit."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_standins(
    kubeconfig: Path, state_dir: Path, *extra_args: str, timeout: float = READY_TIMEOUT
) -> StandIns:
    """Start the stand-in process and block until it prints its READY line."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_file = state_dir / "standins.log"
    argv = [
        sys.executable,
        "-m",
        "devstack.standins",
        "--kubeconfig",
        str(kubeconfig),
        "--state-dir",
        str(state_dir),
        *extra_args,
    ]
    # setpriv ties the process to ours (PR_SET_PDEATHSIG) when started from the main thread.
    if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
        argv = ["setpriv", "--pdeathsig", "TERM", "--", *argv]
    with log_file.open("ab") as stderr:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=paths.REPO_ROOT,
            start_new_session=True,
        )
    standins = StandIns(process, state_dir, log_file)
    ready: dict[str, Any] = {}

    def read_stdout() -> None:
        # Keep draining stdout for the process's whole life so it never blocks on a pipe.
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith(READY_MARKER) and not ready:
                ready.update(json.loads(line[len(READY_MARKER) :]))

    threading.Thread(target=read_stdout, name="standins-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready:
        if process.poll() is not None:
            raise RuntimeError(
                f"stand-ins exited with {process.returncode} before READY; log tail:\n"
                f"{standins.log_tail()}"
            )
        if time.monotonic() > deadline:
            standins.stop()
            raise RuntimeError(
                f"stand-ins not ready after {timeout}s; log tail:\n{standins.log_tail()}"
            )
        time.sleep(0.05)
    standins.info = ready
    return standins


@contextlib.contextmanager
def running_standins(kubeconfig: Path, state_dir: Path, *args: str) -> Iterator[StandIns]:
    """A stand-ins process for a fixture (``args`` as :func:`start_standins` takes them):
    a start failure fails the test with its reason; stopped afterwards."""
    try:
        running = start_standins(kubeconfig, state_dir, *args)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield running
    finally:
        running.stop()
