"""The image's Python layer, for real: Kale compiles non-root steps, clients carry the token.

Runs kubeflow-kale 2.x and kfp 2.x from the image's lock file (see
``tests/support/singleuser_fixtures.py``) under the environment
``dna_hub.policy.notebook_env.notebook_environment`` produces, against a local stand-in of the
KFP API (``devstack/kfp_standin.py``).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.kfp_standin import KfpStandIn, security_contexts
from dna_hub.policy.notebook_env import NotebookEnvSettings, notebook_environment
from tests.support.singleuser_fixtures import KALE_CONFIG, NotebookPod

pytestmark = pytest.mark.slow

SAMPLE_STEPS = {"load", "summarize", "report"}


def _settings(**overrides: Any) -> NotebookEnvSettings:
    # The image's Kale config file, at its repository path instead of its image path.
    return NotebookEnvSettings(kale_config_path=str(KALE_CONFIG), **overrides)


def _kale(pod: NotebookPod, notebook: Path, env: dict[str, str], *extra: str) -> Path:
    """Run Kale's CLI on the notebook; returns the compiled pipeline package."""
    pod.run(
        [
            str(pod.python),
            "-m",
            "kale.cli",
            "--nb",
            str(notebook),
            # Kale's CLI defaults override the notebook metadata, so name them explicitly.
            "--pipeline_name",
            "dna-hub-sample",
            "--experiment_name",
            "dna-hub-sample",
            *extra,
        ],
        env,
        cwd=notebook.parent,
    )
    package = notebook.parent / ".kale" / "dna-hub-sample.pipeline.yaml"
    assert package.is_file(), f"Kale wrote no pipeline package at {package}"
    return package


def _assert_non_root(context: dict[str, Any], uid: int, gid: int) -> None:
    # protobuf's JSON form writes int64 fields as strings.
    assert int(context["runAsUser"]) == uid, context
    assert int(context["runAsGroup"]) == gid, context
    assert context["runAsNonRoot"] is True, context


@pytest.mark.parametrize(("uid", "gid"), [(8737, 8737), (12345, 23456)])
def test_kale_compiles_every_step_non_root(
    notebook_pod: NotebookPod, kale_notebook: Path, uid: int, gid: int
) -> None:
    env = notebook_environment(_settings(pipeline_uid=uid, pipeline_gid=gid))

    package = _kale(notebook_pod, kale_notebook, env)

    pipeline_spec, *rest = yaml.safe_load_all(package.read_text())
    executors = set(pipeline_spec["deploymentSpec"]["executors"])
    assert executors == {f"exec-{step}-step" for step in SAMPLE_STEPS}
    assert len(rest) == 1, "expected one Kubernetes platform-spec document"
    platform_executors = rest[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(platform_executors) == executors, "a step has no Kubernetes config"
    for name in executors:
        _assert_non_root(platform_executors[name]["securityContext"], uid, gid)

    # The generated DSL states it for every task too (what a user reads and may edit).
    dsl = (kale_notebook.parent / ".kale" / "dna-hub-sample.kale.py").read_text()
    for step in SAMPLE_STEPS:
        assert (
            f"task={step}_task,\n        run_as_user={uid},\n        run_as_group={gid},\n"
            "        run_as_non_root=True" in dsl
        ), f"step {step} lacks the security context in the generated DSL"


def _assert_all_bearer(standin: KfpStandIn, token: str) -> None:
    assert standin.requests, "the client made no request to the stand-in"
    for request in standin.requests:
        assert request.headers.get("authorization") == f"Bearer {token}", (
            f"{request.method} {request.path} carried {request.headers.get('authorization')!r}"
        )


def test_kale_client_uploads_and_runs_with_the_token(
    notebook_pod: NotebookPod, kale_notebook: Path, kfp_standin: KfpStandIn
) -> None:
    env = notebook_environment(_settings(kfp_endpoint=kfp_standin.url))

    _kale(notebook_pod, kale_notebook, env, "--upload_pipeline", "--run_pipeline")

    token = notebook_pod.token_file.read_text()
    _assert_all_bearer(kfp_standin, token)
    calls = {(r.method, r.path) for r in kfp_standin.requests}
    assert ("POST", "/apis/v2beta1/pipelines/upload") in calls
    assert ("POST", "/apis/v2beta1/runs") in calls
    # The submitted run still carries the non-root security context of every step.
    [run] = kfp_standin.store.runs.values()
    contexts = list(security_contexts(run))
    assert len(contexts) == len(SAMPLE_STEPS), run
    for context in contexts:
        _assert_non_root(context, 8737, 8737)


BARE_CLIENT = textwrap.dedent(
    """
    import json, os, sys, warnings
    warnings.simplefilter("ignore", FutureWarning)
    import kfp
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11")
    def hello() -> None:
        print("hello")

    @dsl.pipeline(name="bare-client")
    def pipeline() -> None:
        hello()

    package = os.path.join(os.getcwd(), "bare.yaml")
    compiler.Compiler().compile(pipeline, package)

    client = kfp.Client()  # no arguments: exactly what a user types
    client.list_pipelines()
    client.list_experiments()
    print("ROTATE", flush=True)
    if len(sys.argv) > 1:
        # The kubelet rewrites the projected token in place before it expires.
        with open(os.environ["KF_PIPELINES_SA_TOKEN_PATH"], "w") as f:
            f.write(sys.argv[1])
        result = client.create_run_from_pipeline_package(
            package, arguments={}, run_name="bare", experiment_name="dna-hub-bare"
        )
        print(json.dumps({"run_id": result.run_id}))
    """
)


def _script(directory: Path) -> str:
    # A file, not ``-c``: kfp reads a component's source with inspect.getsource.
    path = directory / "bare_client.py"
    path.write_text(BARE_CLIENT)
    return str(path)


def test_bare_kfp_client_sends_the_rotating_token(
    notebook_pod: NotebookPod, kfp_standin: KfpStandIn, tmp_path: Path
) -> None:
    env = notebook_environment(_settings(kfp_endpoint=kfp_standin.url))
    first = notebook_pod.token_file.read_text()
    rotated = first + "-rotated"

    result = notebook_pod.run(
        [str(notebook_pod.python), _script(tmp_path), rotated], env, cwd=tmp_path
    )

    assert json.loads(result.stdout.splitlines()[-1])["run_id"]
    headers = [r.headers.get("authorization") for r in kfp_standin.requests]
    # healthz (in the constructor), list pipelines, list experiments: the first token.
    assert headers[:3] == [f"Bearer {first}"] * 3, headers
    # Everything after the rotation: the new token, read from the file again.
    assert headers[3:] and set(headers[3:]) == {f"Bearer {rotated}"}, headers
    assert ("POST", "/apis/v2beta1/runs") in {(r.method, r.path) for r in kfp_standin.requests}


def test_without_the_hook_kfp_sends_no_credentials(
    notebook_pod: NotebookPod, kfp_standin: KfpStandIn, tmp_path: Path
) -> None:
    """Control: the hook, not kfp itself, is what authenticates a bare ``kfp.Client()``."""
    env = notebook_environment(_settings(kfp_endpoint=kfp_standin.url, kfp_default_auth=False))

    notebook_pod.run([str(notebook_pod.python), _script(tmp_path)], env, cwd=tmp_path)

    assert kfp_standin.requests
    assert all("authorization" not in r.headers for r in kfp_standin.requests)


def test_lab_extension_is_prebuilt(notebook_pod: NotebookPod, tmp_path: Path) -> None:
    """Kale's lab extension ships built in the wheel: nothing to build at start."""
    package = (
        notebook_pod.venv / "share/jupyter/labextensions/jupyterlab-kubeflow-kale/package.json"
    )
    assert package.is_file(), "kubeflow-kale installed no prebuilt lab extension"
    result = notebook_pod.run(
        [str(notebook_pod.python), "-m", "jupyter", "labextension", "list"], {}, cwd=tmp_path
    )
    listing = result.stdout + result.stderr
    assert any(
        "jupyterlab-kubeflow-kale" in line and "enabled" in line and "OK" in line
        for line in listing.splitlines()
    ), listing


HOOK_CASES = textwrap.dedent(
    """
    import os, sys, warnings
    warnings.simplefilter("ignore", FutureWarning)
    case = sys.argv[1]
    if case == "missing-token-file":
        os.environ["KF_PIPELINES_SA_TOKEN_PATH"] = "/nonexistent/token"
    if case == "spawner-token-path":
        # No PodDefault variable: the spawner's DNA_HUB_KFP_TOKEN_PATH is the fallback.
        del os.environ["KF_PIPELINES_SA_TOKEN_PATH"]
    import kfp
    endpoint = os.environ["KF_PIPELINES_ENDPOINT"]
    if case == "explicit-token":
        kfp.Client(existing_token="explicit-token").list_pipelines()
    elif case == "same-host":
        kfp.Client(host=endpoint + "/").list_pipelines()
    elif case == "third-party-host":
        # the same stand-in under another name: to the hook, somebody else's server
        kfp.Client(host=endpoint.replace("127.0.0.1", "localhost")).list_pipelines()
    else:
        kfp.Client().list_pipelines()
    """
)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("explicit-token", "Bearer explicit-token"),  # a caller's own choice wins
        ("missing-token-file", None),  # outside a pod: kfp's behaviour, unchanged
        ("spawner-token-path", "Bearer {token}"),
        ("same-host", "Bearer {token}"),  # host= the configured endpoint
        ("third-party-host", None),  # the user's token never leaves for another host
    ],
)
def test_hook_precedence(
    notebook_pod: NotebookPod,
    kfp_standin: KfpStandIn,
    tmp_path: Path,
    case: str,
    expected: str | None,
) -> None:
    settings = _settings(kfp_endpoint=kfp_standin.url, token_path=str(notebook_pod.token_file))
    script = tmp_path / "hook_cases.py"
    script.write_text(HOOK_CASES)

    notebook_pod.run(
        [str(notebook_pod.python), str(script), case], notebook_environment(settings), cwd=tmp_path
    )

    token = notebook_pod.token_file.read_text()
    wanted = expected.format(token=token) if expected else None
    assert kfp_standin.requests
    assert [r.headers.get("authorization") for r in kfp_standin.requests] == [wanted] * len(
        kfp_standin.requests
    )
