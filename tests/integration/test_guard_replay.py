"""The admission guards, proven by a real API server (issue 22, item 4).

tests/unit/test_hub_guard.py evaluates the guards' CEL with cel-python: a fast check, but
not the API server's CEL. Here every case it evaluates (what dna_hub really writes, and
what a compromised hub would write) is collected from a run of that module
(``DNA_HUB_GUARD_CASES``), both guard files are applied to the test control plane
(Kubernetes 1.37), and each case is sent THROUGH THE API SERVER as the identity it names —
the hub's ServiceAccount with exactly helm-values/hub-rbac.yaml, or cluster-admin for a
case about someone else — as a dry run (``dryRun=All``: admission, including
ValidatingAdmissionPolicy, runs; nothing is stored):

* CREATE is a POST; UPDATE a merge PATCH (the hub's verb) of the object cluster-admin
  created for real as ``old``; DELETE a DELETE of that object;
* a case cel-python admits must be admitted (200/201) — an RBAC 403, Pod Security or
  schema refusal of something dna_hub really writes is a finding, not noise;
* a case cel-python refuses must be refused BY A GUARD: the server's message names
  ``ValidatingAdmissionPolicy`` and a policy, with a message, that cel-python refused too.
  Two layers the API server runs BEFORE the guards can refuse first: Pod Security (profile
  namespaces enforce "restricted") and RBAC's escalation prevention (a Role or RoleBinding
  granting more than the hub holds). Those refusals are counted, and the case is then
  sent again where that layer is open (Pod Security "privileged"; the hub holds
  ``escalate``/``bind`` in that one namespace): the guard must refuse on its own. So is
  RBAC itself: a write the identity's RBAC does not grant (a DaemonSet, a Profile deletion)
  is sent again with exactly that one permission granted for the case — the guards must
  hold even where RBAC is wider than shipped.

Cases act as the hub, the sync job (``jupyterhub:dna-hub-sync`` with exactly
helm-values/dna-hub-sync.yaml's RBAC) or cluster-admin.

Profile namespaces are fresh per variant and carry the devstack profile controller's
labels (upstream's kubeflow-pss overlay, enforce: restricted); ``kubeflow-alice`` in the
cases is rewritten to them (and to a fresh name per Profile case: Profiles are
cluster-scoped). ``kubeflow`` and ``istio-system`` are the real namespaces: the guards name
``kubeflow``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.controlplane import ControlPlane, load_manifests, resource_for
from devstack.paths import REPO_ROOT
from devstack.standins.profile_controller import DEFAULT_NAMESPACE_LABELS

pytestmark = pytest.mark.controlplane

HUB = "system:serviceaccount:jupyterhub:hub"
SYNC = "system:serviceaccount:jupyterhub:dna-hub-sync"
TEAM_OWNER_PREFIX = "dna-hub-team:"
VERBS = {"CREATE": "create", "UPDATE": "patch", "DELETE": "delete"}
CASE_NS = "kubeflow-alice"
PART_OF = "app.kubernetes.io/part-of"
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
GUARD_FILES = ("hub-object-guard.yaml", "hub-namespace-guard.yaml")
VAP_GROUP = "/apis/admissionregistration.k8s.io/v1"
TIMEOUT = 30
#: After the guards are applied the API server's admission plugin loads them from its own
#: informer; until then a refused case may still be admitted. Only within this window is a
#: wrongly admitted case sent again; after it, every verdict is final.
LOAD_WINDOW = 30.0
GUARD_REFUSAL = re.compile(
    r"ValidatingAdmissionPolicy '([^']+)' with binding '[^']+' denied request: (.*)$", re.S
)


# --- the cases ------------------------------------------------------------------------------


def collect_cases(directory: Path) -> list[dict[str, Any]]:
    """Every case test_hub_guard.py evaluates, from a run of it (which must pass)."""
    cases_file = directory / "guard-cases.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["DNA_HUB_GUARD_CASES"] = str(cases_file)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/unit/test_hub_guard.py",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cases = [json.loads(line) for line in cases_file.read_text().splitlines() if line]
    assert cases, "test_hub_guard.py recorded no case"
    return cases


def case_id(case: dict[str, Any], index: int) -> str:
    subject = case["obj"] or case["old"]
    name = subject["metadata"]["name"]
    return f"#{index} {case['test']} {case['operation']} {subject['kind']}/{name}"


def rewrite(value: Any, old: str, new: str) -> Any:
    return json.loads(json.dumps(value).replace(old, new))


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new``."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    patch: dict[str, Any] = {key: None for key in old.keys() - new.keys()}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


# --- talking to the API server --------------------------------------------------------------


@dataclass
class Outcome:
    status: int
    message: str = ""

    @property
    def admitted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def guard(self) -> tuple[str, str] | None:
        """(policy, message) when a ValidatingAdmissionPolicy refused the request."""
        match = GUARD_REFUSAL.search(self.message)
        return (match[1], match[2].strip()) if match and not self.admitted else None

    @property
    def pod_security(self) -> bool:
        return not self.admitted and "violates PodSecurity" in self.message

    @property
    def rbac(self) -> bool:
        """Refused by RBAC authorization (before any admission)."""
        return (
            self.status == 403
            and " cannot " in self.message
            and "ValidatingAdmissionPolicy" not in self.message
            and not self.escalation
        )

    @property
    def escalation(self) -> bool:
        """RBAC's escalation prevention, which runs before validating admission."""
        return self.status == 403 and (
            "attempting to grant RBAC permissions not currently held" in self.message
            or "not allowed to bind" in self.message
        )

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


async def call(
    api: ApiClient,
    method: str,
    path: str,
    body: Any = None,
    *,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
) -> Outcome:
    try:
        await api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=TIMEOUT,
        )
    except ApiException as exc:
        try:
            message = json.loads(exc.body).get("message", exc.body)
        except (TypeError, ValueError):
            message = str(exc.body or exc.reason)
        return Outcome(exc.status, message)
    return Outcome(200)


async def path_of(api: ApiClient, obj: dict[str, Any], *, named: bool) -> str:
    api_version = obj["apiVersion"]
    plural, namespaced = await resource_for(api, api_version, obj["kind"])
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespaced:
        base += f"/namespaces/{obj['metadata']['namespace']}"
    base += f"/{plural}"
    return f"{base}/{obj['metadata']['name']}" if named else base


async def must(outcome: Awaitable[Outcome], what: str) -> None:
    result = await outcome
    assert result.admitted or result.status == 409, f"{what}: {result}"


# --- namespaces -----------------------------------------------------------------------------


@dataclass
class Namespaces:
    """The namespaces the cases need, made on first use (cluster-admin) and cleaned up."""

    admin: ApiClient
    unique_name: Callable[..., str]
    service_accounts: set[str]
    #: what dna_hub has applied in a profile namespace before the cases' writes
    roles: list[dict[str, Any]]
    made: dict[tuple[str, frozenset[str]], str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    created_accounts: list[tuple[str, str]] = field(default_factory=list)

    async def profile(self, *features: str) -> str:
        """A profile namespace as the profile controller labels it, with ``features``:
        ``team``: a team's namespace (owner annotation: the team's own identity);
        ``kale-role``: dna_hub's Kale Role is there (dna_hub applies it before the binding);
        ``psa-open``: Pod Security "privileged"; ``psa-<level>``/``psa-none``: that level
        or no enforce label (a namespace dna_hub must refuse to write into);
        ``escalation-open``: the hub may escalate and bind here."""
        key = ("profile", frozenset(features))
        if key in self.made:
            return self.made[key]
        name = self.unique_name("kubeflow")
        labels = {**DEFAULT_NAMESPACE_LABELS, "istio-injection": "enabled"}
        for feature in features:
            if feature == "psa-open":
                labels[PSA_ENFORCE] = "privileged"
            elif feature == "psa-none":
                del labels[PSA_ENFORCE]
            elif feature.startswith("psa-"):
                labels[PSA_ENFORCE] = feature.removeprefix("psa-")
        body = namespace(name, labels)
        if "team" in features:
            body["metadata"]["annotations"] = {"owner": TEAM_OWNER_PREFIX + name}
        await must(call(self.admin, "POST", "/api/v1/namespaces", body), name)
        self.created.append(name)
        await self.accounts(name)
        rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/" + name
        for role in self.roles if "kale-role" in features else ():
            role = rewrite(role, CASE_NS, name)
            role["metadata"]["namespace"] = name
            await must(call(self.admin, "POST", f"{rbac}/roles", role), "the Kale Role")
        if "escalation-open" in features:
            role = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "replay-escalate-bind", "namespace": name},
                "rules": [
                    {
                        "apiGroups": ["rbac.authorization.k8s.io"],
                        "resources": ["roles", "clusterroles"],
                        "verbs": ["escalate", "bind"],
                    }
                ],
            }
            await must(call(self.admin, "POST", f"{rbac}/roles", role), "escalate")
            binding = role_binding("replay-escalate-bind", name, "Role", "replay-escalate-bind")
            await must(call(self.admin, "POST", f"{rbac}/rolebindings", binding), "escalate")
        self.made[key] = name
        return name

    async def existing(self, name: str, labels: dict[str, str]) -> str:
        """A namespace the guards name (``kubeflow``) or a system one, by its real name;
        made if absent and kept (as tests/integration/test_hub_rbac.py does)."""
        key = (name, frozenset())
        if key not in self.made:
            await must(call(self.admin, "POST", "/api/v1/namespaces", namespace(name, {})), name)
            await self.accounts(name, remember=True)
            self.made[key] = name
        ns = await self.read(name)
        actual = ns["metadata"].get("labels") or {}
        assert actual.get(PART_OF) == labels.get(PART_OF), (name, actual, labels)
        assert all(actual.get(k) == v for k, v in labels.items()), (name, actual, labels)
        return name

    async def read(self, name: str) -> dict[str, Any]:
        return await self.admin.call_api(
            f"/api/v1/namespaces/{name}",
            "GET",
            header_params={"Accept": "application/json"},
            response_types_map={200: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=TIMEOUT,
        )

    async def accounts(self, name: str, *, remember: bool = False) -> None:
        """The ServiceAccounts the pod cases name: without them the ServiceAccount
        admission plugin, not a guard, would refuse the pod."""
        for account in sorted(self.service_accounts):
            body = {"metadata": {"name": account, "namespace": name}}
            outcome = await call(
                self.admin, "POST", f"/api/v1/namespaces/{name}/serviceaccounts", body
            )
            assert outcome.admitted or outcome.status == 409, outcome
            if remember and outcome.admitted:
                self.created_accounts.append((name, account))

    async def cleanup(self) -> None:
        for ns, account in self.created_accounts:
            await call(self.admin, "DELETE", f"/api/v1/namespaces/{ns}/serviceaccounts/{account}")
        for name in self.created:
            await call(self.admin, "DELETE", f"/api/v1/namespaces/{name}")


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def role_binding(name: str, ns: str, kind: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
            for user in (HUB, SYNC)
        ],
    }


# --- the guards -----------------------------------------------------------------------------


def guard_objects() -> list[dict[str, Any]]:
    return [o for f in GUARD_FILES for o in load_manifests(REPO_ROOT / "helm-values" / f)]


def guard_path(obj: dict[str, Any]) -> str:
    plural = {
        "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
    }[obj["kind"]]
    return f"{VAP_GROUP}/{plural}/{obj['metadata']['name']}"


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return collect_cases(tmp_path_factory.mktemp("guard-cases"))


async def test_every_guard_type_checks(guards: float, admin_api: ApiClient) -> None:
    """The API server type-checks each policy's CEL against the real schemas (built-in
    kinds and the CRDs): no expression warning, no failing condition."""
    names = [o["metadata"]["name"] for o in guard_objects() if o["kind"].endswith("Policy")]
    assert len(names) == 9
    problems = []
    for name in names:
        deadline = time.monotonic() + TIMEOUT
        while True:
            policy = await admin_api.call_api(
                f"{VAP_GROUP}/validatingadmissionpolicies/{name}",
                "GET",
                header_params={"Accept": "application/json"},
                response_types_map={200: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=TIMEOUT,
            )
            status = policy.get("status") or {}
            checked = status.get("observedGeneration") == policy["metadata"]["generation"]
            if checked and "typeChecking" in status:
                break
            assert time.monotonic() < deadline, f"{name}: no status.typeChecking: {status}"
            await asyncio.sleep(0.2)
        warnings = status["typeChecking"].get("expressionWarnings") or []
        problems += [f"{name}: {w['fieldRef']}: {w['warning']}" for w in warnings]
        problems += [
            f"{name}: condition {c}"
            for c in status.get("conditions") or []
            if c["status"] != "True"
        ]
    assert not problems, "\n".join(problems)


# --- the replay -----------------------------------------------------------------------------


@dataclass
class Verdict:
    case: dict[str, Any]
    ident: str
    outcome: Outcome
    #: layers that refused before admission got to the guards (then opened, sent again)
    earlier: list[str] = field(default_factory=list)

    @property
    def expected_refused(self) -> bool:
        return bool(self.case["refused"])

    def problem(self) -> str | None:
        outcome = self.outcome
        if not self.expected_refused:
            if outcome.admitted:
                return None
            return f"{self.ident}: cel-python admits, the API server refused: {outcome}"
        if outcome.admitted:
            return (
                f"{self.ident}: cel-python refuses {self.case['refused']}, the API server admitted"
            )
        guard = outcome.guard
        if guard is None:
            return f"{self.ident}: refused, but not by a guard: {outcome}"
        if (
            "Pod Security" in self.earlier
            and guard[0].endswith("-allowlist")
            and "Pod Security 'restricted'" in guard[1]
        ):
            # Pod Security refused it; where Pod Security is opened, the allow-list refuses
            # every write into that namespace before the object guards are asked (both
            # layers hold; the object guard's own verdict is cel-python's)
            return None
        if f"{guard[0]}: {guard[1]}" not in self.case["refused"]:
            return (
                f"{self.ident}: the API server refused with {guard}, "
                f"cel-python only with {self.case['refused']}"
            )
        return None


@dataclass
class Replayer:
    admin: ApiClient
    hub: ApiClient
    sync: ApiClient
    spaces: Namespaces
    unique_name: Callable[..., str]
    loaded_by: float

    async def replay(self, case: dict[str, Any], ident: str) -> Verdict:
        opened: list[str] = []
        rbac_deadline = time.monotonic() + TIMEOUT
        try:
            return await self._replay(case, ident, opened, rbac_deadline)
        finally:
            if "RBAC" in opened:
                await self.revoke()

    async def grant(self, case: dict[str, Any]) -> None:
        """Exactly the one permission the case needs, cluster-wide, to the case's identity."""
        subject = case["obj"] or case["old"]
        plural, _ = await resource_for(self.admin, subject["apiVersion"], subject["kind"])
        group = subject["apiVersion"].rpartition("/")[0]
        rule = {"apiGroups": [group], "resources": [plural], "verbs": [VERBS[case["operation"]]]}
        namespace, _, name = case["user"].removeprefix("system:serviceaccount:").partition(":")
        crbac = "/apis/rbac.authorization.k8s.io/v1"
        await must(
            call(
                self.admin,
                "POST",
                f"{crbac}/clusterroles",
                {"metadata": {"name": "replay-rbac-open"}, "rules": [rule]},
            ),
            "rbac-open role",
        )
        await must(
            call(
                self.admin,
                "POST",
                f"{crbac}/clusterrolebindings",
                {
                    "metadata": {"name": "replay-rbac-open"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "replay-rbac-open",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                },
            ),
            "rbac-open binding",
        )

    async def revoke(self) -> None:
        crbac = "/apis/rbac.authorization.k8s.io/v1"
        await call(self.admin, "DELETE", f"{crbac}/clusterrolebindings/replay-rbac-open")
        await call(self.admin, "DELETE", f"{crbac}/clusterroles/replay-rbac-open")

    async def _replay(
        self, case: dict[str, Any], ident: str, opened: list[str], rbac_deadline: float
    ) -> Verdict:
        while True:
            outcome = await self.send(case, opened)
            refused = bool(case["refused"])
            if refused and outcome.admitted and time.monotonic() < self.loaded_by:
                await asyncio.sleep(0.5)  # the admission plugin has not loaded a guard yet
                continue
            if refused and outcome.pod_security and "Pod Security" not in opened:
                opened.append("Pod Security")
                continue
            if refused and outcome.escalation and "RBAC escalation prevention" not in opened:
                opened.append("RBAC escalation prevention")
                continue
            if refused and outcome.rbac and "RBAC" not in opened:
                opened.append("RBAC")
                await self.grant(case)
                continue
            if refused and outcome.rbac and time.monotonic() < rbac_deadline:
                await asyncio.sleep(0.2)  # the granted permission is not in effect yet
                continue
            return Verdict(case, ident, outcome, opened)

    async def target(self, case: dict[str, Any], opened: list[str]) -> str:
        subject = case["obj"] or case["old"]
        if subject["kind"] == "Profile":
            return self.unique_name("kubeflow")
        labels = case["namespace_labels"]
        if case["namespace"] != CASE_NS:
            return await self.spaces.existing(case["namespace"], labels)
        assert labels.get(PART_OF) == "kubeflow-profile", case
        enforce = labels.get(PSA_ENFORCE)
        assert all(
            DEFAULT_NAMESPACE_LABELS.get(k) == v for k, v in labels.items() if k != PSA_ENFORCE
        ), case
        binding = subject["kind"] == "RoleBinding"
        owner = (case.get("namespace_annotations") or {}).get("owner", "")
        psa = (
            [] if enforce == DEFAULT_NAMESPACE_LABELS[PSA_ENFORCE] else [f"psa-{enforce or 'none'}"]
        )
        return await self.spaces.profile(
            *(["team"] if owner.startswith(TEAM_OWNER_PREFIX) else []),
            *(["kale-role"] if binding else []),
            *(["psa-open"] if "Pod Security" in opened else psa),
            *(["escalation-open"] if "RBAC escalation prevention" in opened else []),
        )

    async def send(self, case: dict[str, Any], opened: list[str]) -> Outcome:
        target = await self.target(case, opened)
        subject = case["obj"] or case["old"]
        if subject["kind"] == "Profile" or case["namespace"] == CASE_NS:
            rename = target
        else:  # e.g. the KFP namespace's per-profile policies name a profile namespace
            rename = await self.spaces.profile()
        obj, old = (rewrite(case[k], CASE_NS, rename) for k in ("obj", "old"))
        for o in (obj, old):
            if o is not None and subject["kind"] != "Profile":
                o["metadata"]["namespace"] = target
        actor = {HUB: self.hub, SYNC: self.sync}.get(case["user"], self.admin)
        dry_run = [("dryRun", "All")]
        if case["operation"] == "CREATE":
            return await call(
                actor, "POST", await path_of(actor, obj, named=False), obj, query=dry_run
            )
        made = await call(self.admin, "POST", await path_of(self.admin, old, named=False), old)
        assert made.admitted, f"creating the old object: {made}"
        path = await path_of(self.admin, old, named=True)
        try:
            if case["operation"] == "UPDATE":
                return await call(
                    actor,
                    "PATCH",
                    path,
                    merge_patch(old, obj),
                    query=dry_run,
                    content_type="application/merge-patch+json",
                )
            assert case["operation"] == "DELETE", case
            return await call(actor, "DELETE", path, query=dry_run)
        finally:
            await call(self.admin, "DELETE", path)


async def test_every_case_replayed_through_the_api_server(
    guards: float,
    cases: list[dict[str, Any]],
    admin_api: ApiClient,
    hub_api: ApiClient,
    control_plane: ControlPlane,
    unique_name: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    accounts = {
        c["obj"]["spec"].get("serviceAccountName", "default")
        for c in cases
        if c["obj"] and c["obj"]["kind"] == "Pod"
    }
    # dna_hub applies the Kale Role before its RoleBinding: without it RBAC's escalation
    # check of the binding is a 404, before admission
    roles = [c["obj"] for c in cases if (c["obj"] or {}).get("kind") == "Role" and not c["refused"]]
    spaces = Namespaces(admin_api, unique_name, accounts, roles)
    sync_api = control_plane.sync_client()
    replayer = Replayer(admin_api, hub_api, sync_api, spaces, unique_name, guards + LOAD_WINDOW)
    try:
        # the forbidden cases first: once each guard has refused one, the guards are loaded
        # and an admitted case is admitted by them, not before them
        order = sorted(enumerate(cases, 1), key=lambda ic: not ic[1]["refused"])
        verdicts = [await replayer.replay(case, case_id(case, i)) for i, case in order]
    finally:
        await spaces.cleanup()
        await sync_api.close()

    allowed = [v for v in verdicts if not v.expected_refused]
    forbidden = [v for v in verdicts if v.expected_refused]
    earlier = Counter(layer for v in verdicts for layer in v.earlier)
    by_guard = Counter(v.outcome.guard[0] for v in verdicts if v.outcome.guard)
    summary = (
        f"guard replay: {len(verdicts)} cases ({sum(c['user'] == HUB for c in cases)} as the hub, "
        f"{sum(c['user'] == SYNC for c in cases)} as the sync job); "
        f"cel-python: {len(allowed)} allowed / {len(forbidden)} forbidden; API server: "
        f"{sum(v.outcome.admitted for v in verdicts)} admitted / "
        f"{sum(not v.outcome.admitted for v in verdicts)} refused "
        f"({sum(v.outcome.guard is not None for v in verdicts)} by a guard; refused first "
        f"by an earlier layer, then by a guard: "
        + (", ".join(f"{n} by {layer}" for layer, n in sorted(earlier.items())) or "none")
        + "); refusals by guard: "
        + ", ".join(f"{name} {n}" for name, n in sorted(by_guard.items()))
    )
    with capsys.disabled():
        print("\n" + summary)
        for v in verdicts:
            if v.earlier:
                print(f"  {v.ident}: refused first by {', '.join(v.earlier)}")
    problems = [p for v in verdicts if (p := v.problem())]
    assert not problems, summary + "\n" + "\n".join(problems)
    assert forbidden and allowed, summary
    # every guard refused something through the server: all of them were loaded and match
    # the requests the cases make
    policies = {o["metadata"]["name"] for o in guard_objects() if o["kind"].endswith("Policy")}
    assert set(by_guard) == policies, summary
