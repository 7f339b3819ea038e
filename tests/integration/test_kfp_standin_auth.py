"""The KFP API stand-in authenticates with TokenReview and authorizes with SubjectAccessReview.

Real ServiceAccount tokens from the TokenRequest API, real RBAC (Kubeflow's aggregated
roles): an editor may do what ``kubeflow-edit`` allows in its own namespace only, a viewer
only reads, another audience or no token is 401, and a ``kubeflow-userid`` header counts
for nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devstack.kfp_standin import KFP_AUDIENCE, KfpStandIn, KubeAuth
from devstack.standins import Kube

API = "/apis/v2beta1"


async def _token(kube: Kube, ns: str, sa: str, audience: str = KFP_AUDIENCE) -> str:
    answer = await kube.create(
        f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": 600},
        },
    )
    return answer["status"]["token"]


async def _bind(kube: Kube, ns: str, sa: str, role: str) -> None:
    await kube.create(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": sa}})
    await kube.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
        {
            "metadata": {"name": f"{sa}-{role}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        },
    )


async def _aggregated(kube: Kube) -> None:
    """Wait until the controller manager aggregated the pipelines rules into kubeflow-edit."""
    deadline = time.monotonic() + 60
    while True:
        role = await kube.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/kubeflow-edit")
        groups = {g for rule in role.get("rules") or [] for g in rule.get("apiGroups", [])}
        if "pipelines.kubeflow.org" in groups:
            return
        if time.monotonic() > deadline:
            pytest.fail("kubeflow-edit never aggregated the Kubeflow Pipelines rules")
        await asyncio.sleep(0.3)


def _call(
    kfp: KfpStandIn, method: str, path: str, token: str | None, **kwargs: Any
) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.request(method, kfp.url + API + path, headers=headers, timeout=30, **kwargs)


@pytest.mark.controlplane
async def test_kfp_standin_checks_token_and_rbac(
    kfp_auth: KubeAuth, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    kube = standins_kube
    mine, other = unique_name("kfa"), unique_name("kfb")
    for ns in (mine, other):
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    try:
        await _aggregated(kube)
        await _bind(kube, mine, "default-editor", "kubeflow-edit")
        await _bind(kube, mine, "default-viewer", "kubeflow-view")
        await _bind(kube, other, "default-editor", "kubeflow-edit")
        editor = await _token(kube, mine, "default-editor")
        viewer = await _token(kube, mine, "default-viewer")
        wrong_audience = await _token(kube, mine, "default-editor", audience="other.example")
        me = f"system:serviceaccount:{mine}:default-editor"

        with KfpStandIn(auth=kfp_auth) as kfp:
            call = asyncio.to_thread
            # The editor works in its namespace: list, create experiment, run, pipeline.
            listed = await call(
                _call, kfp, "GET", "/experiments", editor, params={"namespace": mine}
            )
            assert listed.status_code == 200, listed.text
            created = await call(
                _call,
                kfp,
                "POST",
                "/experiments",
                editor,
                json={"display_name": "e", "namespace": mine},
            )
            assert created.status_code == 200, created.text
            experiment = created.json()["experiment_id"]
            run = await call(
                _call,
                kfp,
                "POST",
                "/runs",
                editor,
                json={"display_name": "r", "experiment_id": experiment},
            )
            assert run.status_code == 200, run.text
            upload = await call(
                _call,
                kfp,
                "POST",
                "/pipelines/upload",
                editor,
                params={"name": "p", "namespace": mine},
                files={"uploadfile": ("p.yaml", b"pipelineInfo: {name: p}\n")},
            )
            assert upload.status_code == 200, upload.text
            decided = {(r.verb, r.resource, r.namespace, r.user, r.allowed) for r in kfp.reviews}
            assert decided == {
                ("list", "experiments", mine, me, True),
                ("create", "experiments", mine, me, True),
                ("create", "runs", mine, me, True),
                ("create", "pipelines", mine, me, True),
            }

            # Another namespace: 403 with KFP's error body, whatever header is sent.
            denied = await call(
                _call,
                kfp,
                "GET",
                "/experiments",
                editor,
                params={"namespace": other},
                headers={"kubeflow-userid": f"system:serviceaccount:{other}:default-editor"},
            )
            assert denied.status_code == 403
            body = denied.json()
            assert body["code"] == 7 and "PermissionDenied" in body["message"]
            assert f"Namespace:{other}" in body["message"]
            assert me in body["message"]
            # The viewer reads but cannot create.
            assert (
                await call(_call, kfp, "GET", "/experiments", viewer, params={"namespace": mine})
            ).status_code == 200
            refused = await call(
                _call,
                kfp,
                "POST",
                "/runs",
                viewer,
                json={"display_name": "r", "experiment_id": experiment},
            )
            assert refused.status_code == 403
            # Not authenticated: wrong audience, no token, only the identity header.
            for token, headers in (
                (wrong_audience, {}),
                (None, {}),
                (None, {"kubeflow-userid": me}),
                ("not-a-token", {}),
            ):
                answer = await call(
                    _call,
                    kfp,
                    "GET",
                    "/experiments",
                    token,
                    params={"namespace": mine},
                    headers=headers,
                )
                assert answer.status_code == 401, (token, headers, answer.text)
                assert answer.json()["code"] == 16
            # Health needs no token (as upstream).
            assert (await call(_call, kfp, "GET", "/healthz", None)).status_code == 200
    finally:
        for ns in (mine, other):
            await kube.delete(f"/api/v1/namespaces/{ns}")
