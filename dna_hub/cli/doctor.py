"""``dna-hub doctor``: does the current kube context give dna_hub what it needs?

Run it as the hub (``kubectl exec deploy/hub -- dna-hub doctor``) or with the hub's
kubeconfig: every check is made with the caller's own identity, so the RBAC checks answer
"may *this* identity do it" (SelfSubjectAccessReview).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, AuthorizationV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.cli.context import in_cluster, load_client, load_hub_config, settings_from
from dna_hub.cli.guard_check import check_guards
from dna_hub.cli.manifests import platform_values
from dna_hub.cli.versions_check import check_versions
from dna_hub.k8s.retry import describe
from dna_hub.policy.permissions import REQUIRED_KINDS, hub_permissions


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    #: Not decided here (e.g. an in-cluster name checked from outside): neither pass nor fail.
    skipped: bool = False

    @property
    def failed(self) -> bool:
        return not self.ok and not self.skipped

    #: Passed, with a caveat the operator should read (shown as "warn").
    warning: bool = False

    @property
    def result(self) -> str:
        if self.skipped:
            return "skip"
        if self.ok:
            return "warn" if self.warning else "pass"
        return "FAIL"


def spawner_setting(config: Any, name: str) -> Any:
    """One of dna_hub's settings as the hub with this config has it."""
    return getattr(settings_from(config), name)


async def check_api(api: ApiClient, seconds: float) -> Check:
    try:
        version = await api.call_api(
            "/version",
            "GET",
            response_types_map={200: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=seconds,
        )
    except (ApiException, OSError, TimeoutError) as e:
        return Check(
            "API server reachable",
            False,
            describe(e),
            "check the kube context / the hub's network policy egress to the API server",
        )
    return Check("API server reachable", True, f"Kubernetes {version.get('gitVersion', '?')}")


async def check_kind(api: ApiClient, kind: Any, seconds: float) -> Check:
    name = f"{kind.kind} ({kind.resource}.{kind.group}/{kind.version}) served"
    try:
        listing = await api.call_api(
            f"/apis/{kind.group}/{kind.version}",
            "GET",
            response_types_map={200: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=seconds,
        )
    except ApiException as e:
        if e.status == 404:
            return Check(name, False, "not served", f"install {kind.why} ({kind.kind})")
        return Check(name, False, describe(e), "check the API server")
    except (OSError, TimeoutError) as e:
        return Check(name, False, describe(e), "check the API server")
    served = {r.get("name") for r in listing.get("resources", [])}
    if kind.resource in served:
        return Check(name, True, "served")
    return Check(name, False, "not served", f"install {kind.why} ({kind.kind})")


async def check_permission(api: ApiClient, permission: Any, seconds: float) -> Check:
    group = permission.group or "core"
    names = permission.resource_names
    on = f" {'/'.join(names)}" if names else ""
    name = f"may {permission.verb} {permission.resource}.{group}{on} in all namespaces"
    attributes = {
        "group": permission.group,
        "resource": permission.resource,
        "verb": permission.verb,
    }
    if names:
        attributes["name"] = names[0]
    body: Any = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    try:
        review = await asyncio.wait_for(
            AuthorizationV1Api(api).create_self_subject_access_review(body), seconds
        )
    except (ApiException, OSError, TimeoutError) as e:
        return Check(name, False, describe(e), "check the API server")
    if review.status.allowed:
        return Check(name, True, permission.why)
    return Check(
        name,
        False,
        f"denied — needed because: {permission.why}",
        "dna-hub manifests --config <hub config> | kubectl apply -f - (ClusterRole dna-hub "
        "bound to the hub's ServiceAccount)",
    )


async def check_resolvable(label: str, url: str, seconds: float) -> Check:
    host = urlsplit(url).hostname or ""
    name = f"{label} host {host!r} resolves"
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM), seconds
        )
    except (OSError, TimeoutError) as e:
        if not in_cluster():
            # In-cluster service names resolve only inside the cluster: from here an
            # unresolvable name says nothing about the hub's setting.
            return Check(
                name,
                False,
                f"not checked: {type(e).__name__}: {e} (doctor runs outside the cluster)",
                "run doctor where the hub runs to check it: kubectl -n HUB_NAMESPACE exec "
                "deploy/hub -- dna-hub doctor",
                skipped=True,
            )
        return Check(
            name,
            False,
            f"{type(e).__name__}: {e}",
            f"set DnaSpawner.{label} to the in-cluster URL of Kubeflow Pipelines",
        )
    return Check(name, True, ", ".join(sorted({str(i[4][0]) for i in infos})))


async def check_name_templates(config_path: str | None) -> Check:
    """What the hub checks when it starts: the spawner's name-bearing templates give valid
    Kubernetes names for hard usernames (dna_hub/hub/name_check.py). No cluster needed.

    Asked of ``dna-hub render`` in a process of its own: building the spawner that check
    runs in loads a Kubernetes client configuration for the whole process, and doctor's own
    client must stay the caller's.
    """
    from dna_hub.policy.name_templates import HARD_USERNAMES

    name = "name templates give valid Kubernetes names"
    args = [sys.executable, "-m", "dna_hub.cli", "render", "--user", "dna-hub-doctor"]
    args += ["--owner", "dna-hub-doctor@example.invalid"]
    if config_path:
        args += ["--config", config_path]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    except TimeoutError:
        process.kill()
        return Check(name, False, "dna-hub render did not finish in 120 s", "")
    if process.returncode != 0:
        detail = stderr.decode(errors="replace").strip().removeprefix("dna-hub render: ")
        return Check(
            name,
            False,
            detail,
            "change the DnaSpawner settings named above (use {username}, {user_server}, "
            "{pvc_name}: KubeSpawner's safe names); the hub refuses to start with them",
        )
    return Check(name, True, f"checked for {len(HARD_USERNAMES)} usernames")


async def run_checks(args: argparse.Namespace) -> list[Check]:
    config = load_hub_config(args.config)
    names = await check_name_templates(args.config)
    checks: list[Check] = []
    api = await load_client(args)
    async with api:
        checks.append(await check_api(api, args.timeout))
        if not checks[0].ok:
            return [*checks, names]
        for kind in REQUIRED_KINDS:
            if kind.setting and not spawner_setting(config, kind.setting):
                continue
            checks.append(await check_kind(api, kind, args.timeout))
        settings = settings_from(config)
        permissions = hub_permissions(
            teams=bool(settings.team_profiles),
            legacy_envoy_filter=settings.legacy_envoy_filter,
            kueue=settings.kueue_enabled,
        )
        values = platform_values(settings, args.hub_service_account, None, "doctor")
        clients = await guard_clients(api, values, args.as_identity, args.timeout)
        try:
            if "hub" in clients or not args.as_identity:
                checks.extend(
                    await asyncio.gather(
                        *(
                            check_permission(clients.get("hub", api), p, args.timeout)
                            for p in permissions
                        )
                    )
                )
            checks.extend(
                Check(v.name, v.ok, v.detail, v.fix, skipped=v.skipped, warning=v.warning)
                for v in await check_guards(clients or {"caller": api}, values, args.timeout)
            )
        finally:
            for client in clients.values():
                if client is not api:
                    await client.close()
    for label in ("kfp_endpoint", "kfp_ui_endpoint"):
        checks.append(await check_resolvable(label, spawner_setting(config, label), args.timeout))
    checks.append(names)
    return checks


async def whoami(api: ApiClient, seconds: float) -> str | None:
    """The caller's username (SelfSubjectReview, Kubernetes >= 1.28), or None."""
    try:
        review = await api.call_api(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            "POST",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            response_types_map={200: "object", 201: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=seconds,
        )
    except (ApiException, OSError, TimeoutError):
        return None
    return str(((review or {}).get("status") or {}).get("userInfo", {}).get("username") or "")


async def guard_clients(
    api: ApiClient, values: Any, as_identities: list[str], seconds: float
) -> dict[str, ApiClient]:
    """An ApiClient per guarded identity doctor can act as: itself, if it is the hub or the
    sync job; each ``--as`` identity by impersonation (an operator's kube context)."""
    roles = {values.hub.username: "hub", values.sync.username: "sync"}
    clients: dict[str, ApiClient] = {}
    for identity in as_identities:
        if identity not in roles:
            raise SystemExit(
                f"dna-hub doctor: --as {identity}: not a guarded identity ({', '.join(roles)})"
            )
        clients[roles[identity]] = ApiClient(
            api.configuration, header_name="Impersonate-User", header_value=identity
        )
    if not clients:
        me = await whoami(api, seconds)
        if me in roles:
            clients[roles[me]] = api
    return clients


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'CHECK':<{width}}  RESULT  DETAIL / FIX"]
    for c in checks:
        detail = c.detail.replace("\n", "\n" + " " * (width + 10))  # a multi-line detail
        lines.append(f"{c.name:<{width}}  {c.result:<6}  {detail}")
        if not c.ok and c.fix:
            lines.append(f"{'':<{width}}          {'how' if c.skipped else 'fix'}: {c.fix}")
    failed = sum(c.failed for c in checks)
    skipped = sum(c.skipped for c in checks)
    lines.append(
        f"\n{len(checks) - failed - skipped} passed, {failed} failed"
        + (f", {skipped} not checked" if skipped else "")
    )
    return "\n".join(lines)


def run_doctor(args: argparse.Namespace) -> int:
    try:
        checks = asyncio.run(run_checks(args))
    except kube_config.ConfigException as e:
        print(f"dna-hub doctor: no usable kube context: {e}", file=sys.stderr)
        return 2
    checks += [Check(v.name, v.ok, v.detail, v.fix) for v in check_versions()]
    print(format_table(checks))
    return 1 if any(c.failed for c in checks) else 0
