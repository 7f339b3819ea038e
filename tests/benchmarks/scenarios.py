"""The benchmark scenarios. Each returns a JSON-able dict; :mod:`.report` turns them into tables."""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import load_kube_config

from dna_hub.errors import ProvisioningError
from dna_hub.k8s.api import KubeApi
from dna_hub.policy.rendering import RenderedProfile
from dna_hub.profiles.provisioning import ProfileProvisioner
from tests.benchmarks import oldmethod
from tests.benchmarks.harness import (
    HUB_REQUEST_TIMEOUT,
    Cluster,
    exists,
    rendered_for,
    summary,
    unique,
    verify,
)
from tests.support.faultproxy import FaultProxy

#: Progress messages DnaSpawner shows, in order, and the phase each one ends.
PHASES = (
    ("Provisioning your Kubeflow profile", "read"),
    ("Waiting for namespace", "write_profile"),
    ("Applying your profile's access policies", "wait_namespace"),
)
#: The phase from the last message to the end.
LAST_PHASE = "apply_objects_wait_service_account_record_digest"


class OldMethod:
    """The old platform's hook, with its kustomization written once per run."""

    def __init__(self, c: Cluster, root: Path) -> None:
        self.c = c
        self.root = root
        self.cache_dir = root / "home" / ".kube" / "cache"
        oldmethod.write_kustomization(root, c.cp.hub_namespace)

    async def spawn(self, rendered: RenderedProfile, timeout: float = 120) -> oldmethod.HookResult:
        profile = rendered.profile
        return await oldmethod.run_hook(
            self.root,
            self.c.cp.hub_kubeconfig,
            user=profile["metadata"]["annotations"]["dna-hub.io/hub-username"],
            profile=profile["metadata"]["name"],
            owner=profile["spec"]["owner"]["name"],
            cache_dir=self.cache_dir,
            timeout=timeout,
        )


class TimedProvisioner(ProfileProvisioner):
    """ProfileProvisioner that records when it waited for the profile controller and when
    it applied the namespaced objects, to tell dna_hub's own time from the controller's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waits: list[tuple[float, float]] = []
        self.applies: list[tuple[float, float]] = []

    async def _wait_for(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super()._wait_for(*args, **kwargs)
        finally:
            self.waits.append((started, time.perf_counter()))

    async def _apply_namespaced(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super()._apply_namespaced(*args, **kwargs)
        finally:
            self.applies.append((started, time.perf_counter()))

    def waiting_only(self) -> float:
        """Seconds in which dna_hub had nothing in flight but a wait for the controller."""
        busy = sorted(self.applies)
        total = 0.0
        for start, end in self.waits:
            # the part of this wait not overlapped by applying objects
            uncovered = end - start
            for a_start, a_end in busy:
                overlap = min(end, a_end) - max(start, a_start)
                if overlap > 0:
                    uncovered -= overlap
            total += max(0.0, uncovered)
        return total


async def dna_spawn(
    api_client: ApiClient, rendered: RenderedProfile, *, ready_timeout: float = 120
) -> tuple[Any, dict[str, float]]:
    """DnaSpawner.provision_profile's provisioning: a fresh KubeApi on the shared client.

    The phases include ``own``: the whole time minus the time dna_hub only waited for the
    profile controller (namespace, ``default-editor``) with nothing of its own in flight.
    """
    marks: list[tuple[str, float]] = []

    def progress(message: str) -> None:
        if message.startswith(tuple(m for m, _ in PHASES)):  # not the queueing notice
            marks.append((message, time.perf_counter()))

    started = time.perf_counter()
    provisioner = TimedProvisioner(
        KubeApi(api_client, request_timeout=HUB_REQUEST_TIMEOUT), ready_timeout=ready_timeout
    )
    result = await provisioner.ensure(rendered, progress=progress)
    ended = time.perf_counter()
    phases: dict[str, float] = {}
    previous = started
    names = [name for _, name in PHASES] + [LAST_PHASE]
    for (message, at), name in zip([*marks, ("end", ended)], names, strict=False):
        expected = dict((n, m) for m, n in PHASES).get(name)
        if message != "end" and expected and not message.startswith(expected):
            raise RuntimeError(f"progress message {message!r} is not the {name!r} phase's")
        phases[name] = at - previous
        previous = at
    phases["controller_wait"] = provisioner.waiting_only()
    phases["own"] = (ended - started) - phases["controller_wait"]
    return result, phases


# --------------------------------------------------------------------------- 1 + 2


async def first_and_repeat(c: Cluster, api_client: ApiClient, old: OldMethod, samples: int) -> dict:
    """Brand-new users, one at a time, the two methods interleaved; then repeat spawns."""
    # Warm up as a long-running hub is warm: connections, kubectl's discovery cache.
    await dna_spawn(api_client, rendered_for(unique("warm")))
    await old.spawn(rendered_for(unique("warmold")))

    dna_rows: list[dict[str, Any]] = []
    old_rows: list[dict[str, Any]] = []
    dna_users: list[RenderedProfile] = []
    old_users: list[RenderedProfile] = []
    for _ in range(samples):
        rendered = rendered_for(unique("first"))
        result, phases = await dna_spawn(api_client, rendered)
        dna_rows.append({"seconds": result.seconds, "requests": result.requests, "phases": phases})
        dna_users.append(rendered)

        rendered = rendered_for(unique("firstold"))
        hook = await old.spawn(rendered)
        old_rows.append(
            {
                "seconds": hook.seconds,
                "requests": hook.requests,
                "ok": hook.ok,
                "applies": [
                    {"rc": a.returncode, "seconds": a.seconds, "requests": a.requests}
                    for a in hook.applies
                ],
                "first_apply_error": hook.applies[0].error[:300],
            }
        )
        old_users.append(rendered)

    dna_missing = [m for m in await asyncio.gather(*(verify(c.admin, r) for r in dna_users)) if m]
    old_missing = [m for m in await asyncio.gather(*(exists(c.admin, r) for r in old_users)) if m]

    repeat_dna: list[dict[str, Any]] = []
    for rendered in dna_users:
        result, _ = await dna_spawn(api_client, rendered)
        repeat_dna.append(
            {
                "seconds": result.seconds,
                "requests": result.requests,
                "up_to_date": result.up_to_date,
            }
        )
    repeat_old: list[dict[str, Any]] = []
    for rendered in old_users:
        hook = await old.spawn(rendered)
        repeat_old.append({"seconds": hook.seconds, "requests": hook.requests, "ok": hook.ok})

    dna_s = summary([r["seconds"] for r in dna_rows])
    old_s = summary([r["seconds"] for r in old_rows])
    phase_names = list(dna_rows[0]["phases"]) if dna_rows else []
    return {
        "samples": samples,
        "dna": {
            "seconds": dna_s,
            "requests": summary([r["requests"] for r in dna_rows]),
            "phases_median": {
                name: summary([r["phases"].get(name, 0.0) for r in dna_rows])["median"]
                for name in phase_names
            },
            "missing_after": dna_missing,
        },
        "old": {
            "seconds": old_s,
            "requests": summary([r["requests"] for r in old_rows]),
            "apply_seconds_median": [
                summary([r["applies"][i]["seconds"] for r in old_rows])["median"] for i in (0, 1)
            ],
            "first_apply_failed": sum(r["applies"][0]["rc"] != 0 for r in old_rows),
            "second_apply_failed": sum(r["applies"][1]["rc"] != 0 for r in old_rows),
            "first_apply_error_example": next(
                (r["first_apply_error"] for r in old_rows if r["first_apply_error"]), ""
            ),
            "missing_after": old_missing,
        },
        "objects": len(dna_users[0].objects) if dna_users else 0,
        "own": summary([r["phases"]["own"] for r in dna_rows]),
        "own_ratio_median": (
            old_s["median"] / statistics.median([r["phases"]["own"] for r in dna_rows])
            if dna_rows
            else None
        ),
        "ratio_median": old_s["median"] / dna_s["median"] if dna_s.get("median") else None,
        "ratio_mean": old_s["mean"] / dna_s["mean"] if dna_s.get("mean") else None,
        "repeat": {
            "dna": {
                "seconds": summary([r["seconds"] for r in repeat_dna]),
                "requests": summary([r["requests"] for r in repeat_dna]),
                "all_up_to_date": all(r["up_to_date"] for r in repeat_dna),
            },
            "old": {
                "seconds": summary([r["seconds"] for r in repeat_old]),
                "requests": summary([r["requests"] for r in repeat_old]),
                "failed": sum(not r["ok"] for r in repeat_old),
            },
        },
    }


# --------------------------------------------------------------------------- 3


def render_cost(profiles: int = 500, runs: int = 3) -> dict[str, Any]:
    """CPU time of ``render_profile`` (default templates) per profile, distinct users.

    Measured on this thread's CPU clock, so a busy machine does not inflate it; the
    templates are compiled by a warm-up render first, as in a running hub.
    """
    rendered_for(unique("rwarm"))
    per_run = []
    for _ in range(runs):
        users = [unique("r") for _ in range(profiles)]
        started = time.thread_time()
        for username in users:
            rendered_for(username)
        per_run.append((time.thread_time() - started) / profiles * 1000)
    return {"profiles": profiles, "runs_ms": per_run, "ms_per_profile": statistics.median(per_run)}


# --------------------------------------------------------------------------- 4


def old_method_concurrency_limit(peak_child_kib: int) -> int:
    """How many kubectl processes fit in half of the available memory."""
    available = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1])
    return max(1, int(available * 0.5 // max(peak_child_kib, 1)))


def describe_error(error: BaseException | None) -> str:
    if error is None:
        return ""
    return f"{type(error).__name__}: {error}"


# --------------------------------------------------------------------------- 5


def _profile_template_dir(root: Path) -> Path:
    """The default Profile template plus the stand-in's delay annotations.

    A short controller delay makes the namespace list come back empty (so the watch is
    really used), and a step delay does the same for ``default-editor``.
    """
    source = (Path(__file__).parents[2] / "profile-templates" / "00-profile.yaml.j2").read_text()
    extra = (
        "    dna-hub.test/controller-delay-seconds: '0.3'\n"
        "    dna-hub.test/controller-step-delay-seconds: '0.3'\n"
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "00-profile.yaml.j2").write_text(
        source.replace("  annotations:\n", "  annotations:\n" + extra, 1)
    )
    return root


def fault_rows(rendered: RenderedProfile) -> list[tuple[str, str, str, int]]:
    """``(label, method, path regex, requests of that kind to let through first)``."""
    ns = re.escape(rendered.profile["metadata"]["name"])
    profile = rf"^/apis/kubeflow\.org/v1/profiles/{ns}$"
    rows = [
        ("GET Profile", "GET", profile, 0),
        ("LIST Namespace (owner check)", "GET", r"^/api/v1/namespaces$", 0),
        ("PATCH Profile (create, unforced)", "PATCH", profile, 0),
        ("PATCH Profile (record digest)", "PATCH", profile, 1),
        ("WATCH Namespace (from the owner check's list)", "GET", r"^/api/v1/namespaces$", 1),
        (
            "WATCH ServiceAccount (no resourceVersion)",
            "GET",
            rf"^/api/v1/namespaces/{ns}/serviceaccounts$",
            0,
        ),
    ]
    for obj in rendered.namespaced:
        plural = {
            "PodDefault": "poddefaults",
            "LimitRange": "limitranges",
            "AuthorizationPolicy": "authorizationpolicies",
            "NetworkPolicy": "networkpolicies",
            "Role": "roles",
            "RoleBinding": "rolebindings",
            "EnvoyFilter": "envoyfilters",
        }[obj["kind"]]
        name = re.escape(obj["metadata"]["name"])
        rows.append((f"PATCH {obj['kind']}", "PATCH", rf"/namespaces/{ns}/{plural}/{name}$", 0))
    return rows


FAULTS = ("409", "429", "500", "timeout")


async def fault_matrix(c: Cluster, workdir: Path, cell_timeout: float = 120) -> dict:
    template_dir = _profile_template_dir(workdir / "fault-templates")
    example = rendered_for(unique("fx"), template_dir)
    labels = [label for label, *_ in fault_rows(example)]
    cells: list[dict[str, Any]] = []
    with FaultProxy.for_kubeconfig(c.cp.hub_kubeconfig, c.cp.ca_file) as proxy:
        kubeconfig = proxy.write_kubeconfig(c.cp.hub_kubeconfig, workdir / "fault.kubeconfig")
        configuration = Configuration()
        await load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        async with ApiClient(configuration) as api_client:
            for index, label in enumerate(labels):
                for fault in FAULTS:
                    rendered = rendered_for(unique("f"), template_dir)
                    _, method, path, skip = fault_rows(rendered)[index]
                    proxy.clear_rules()
                    if skip:
                        proxy.add_rule(method, path, action="delay", hold_seconds=0, times=skip)
                    if fault == "timeout":
                        rule = proxy.add_rule(
                            method,
                            path,
                            action="timeout",
                            hold_seconds=HUB_REQUEST_TIMEOUT + 2,
                            times=1,
                        )
                    else:
                        rule = proxy.add_rule(method, path, status=int(fault), times=1)
                    cells.append(
                        await _fault_cell(c, api_client, proxy, rendered, label, fault, rule,
                                          cell_timeout)
                    )  # fmt: skip
    return {
        "rows": labels,
        "faults": list(FAULTS),
        "cells": cells,
        "retry_policy": "RetryPolicy() defaults: 5 attempts, 0.2 s base, 5 s cap",
        "request_timeout": HUB_REQUEST_TIMEOUT,
    }


async def _fault_cell(
    c: Cluster,
    api_client: ApiClient,
    proxy: FaultProxy,
    rendered: RenderedProfile,
    label: str,
    fault: str,
    rule: Any,
    cell_timeout: float,
) -> dict:
    cell: dict[str, Any] = {"request": label, "fault": fault}
    api = KubeApi(api_client, request_timeout=HUB_REQUEST_TIMEOUT)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(cell_timeout):
            result = await ProfileProvisioner(api, ready_timeout=60).ensure(rendered)
        cell["outcome"] = "success"
        cell["requests"] = result.requests
    except ProvisioningError as e:
        cell["outcome"] = "error"
        cell["clear"] = True
        cell["user_message"] = e.user_message
        cell["detail"] = e.detail
    except Exception as e:
        cell["outcome"] = "error"
        cell["clear"] = False
        cell["detail"] = describe_error(e)
    cell["seconds"] = time.perf_counter() - started
    cell["exercised"] = rule.hits > 0
    cell["hits"] = rule.hits
    proxy.clear_rules()
    # The next spawn: forced (DnaSpawner forces after a failed start), no faults.
    try:
        async with asyncio.timeout(cell_timeout):
            await ProfileProvisioner(
                KubeApi(api_client, request_timeout=HUB_REQUEST_TIMEOUT), ready_timeout=60
            ).ensure(rendered, force=True)
        missing = await verify(c.admin, rendered)
        cell["converged"] = missing is None
        if missing:
            cell["convergence_problem"] = missing
    except Exception as e:
        cell["converged"] = False
        cell["convergence_problem"] = describe_error(e)
    with contextlib.suppress(Exception):
        del api
    return cell
