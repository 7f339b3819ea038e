"""Unit tests of dna_hub.policy.notebook_env: the notebook container's environment contract."""

from __future__ import annotations

import dataclasses

import pytest

from dna_hub.policy.notebook_env import (
    DEFAULT_KALE_CONFIG_PATH,
    RESERVED_ENV_NAMES,
    NotebookEnvSettings,
    notebook_environment,
)


def test_defaults() -> None:
    env = notebook_environment(NotebookEnvSettings())

    assert env == {
        "KF_PIPELINES_ENDPOINT": "http://ml-pipeline.kubeflow:8888",
        "KF_PIPELINES_UI_ENDPOINT": "http://ml-pipeline-ui.kubeflow:80",
        "KALE_SECURITY_CONTEXT_ENABLED": "true",
        "KALE_SECURITY_CONTEXT_RUN_AS_USER": "8737",
        "KALE_SECURITY_CONTEXT_RUN_AS_GROUP": "8737",
        "KALE_SECURITY_CONTEXT_RUN_AS_NON_ROOT": "true",
        "KALE_CONFIG_PATH": DEFAULT_KALE_CONFIG_PATH,
        "KALE_UPLOAD_LINK": (
            "http://ml-pipeline-ui.kubeflow:80/?ns={namespace}"
            "#/pipelines/details/{pipeline_id}/version/{version_id}"
        ),
        "KALE_RUN_LINK": "http://ml-pipeline-ui.kubeflow:80/?ns={namespace}#/runs/details/{run_id}",
        "DNA_HUB_KFP_DEFAULT_AUTH": "1",
        "DNA_HUB_KFP_TOKEN_PATH": "/var/run/secrets/kubeflow/pipelines/token",
    }


def test_custom_settings() -> None:
    settings = NotebookEnvSettings(
        kfp_endpoint="https://pipelines.example.org:8443/",
        kfp_ui_endpoint="http://ml-pipeline-ui.kubeflow",
        kfp_ui_link_base="https://kubeflow.example.org/pipeline/",
        pipeline_uid=12345,
        pipeline_gid=23456,
        token_path="/var/run/secrets/other/token",
        kale_config_path="/etc/kale/alt.json",
        kfp_namespace="kubeflow-user-alice",
        kfp_default_auth=False,
    )

    env = notebook_environment(settings)

    assert env["KF_PIPELINES_ENDPOINT"] == "https://pipelines.example.org:8443"
    assert env["KF_PIPELINES_UI_ENDPOINT"] == "http://ml-pipeline-ui.kubeflow"
    assert env["KALE_SECURITY_CONTEXT_RUN_AS_USER"] == "12345"
    assert env["KALE_SECURITY_CONTEXT_RUN_AS_GROUP"] == "23456"
    assert env["KALE_SECURITY_CONTEXT_RUN_AS_NON_ROOT"] == "true"
    assert env["KALE_CONFIG_PATH"] == "/etc/kale/alt.json"
    assert env["KALE_KFP_NAMESPACE"] == "kubeflow-user-alice"
    assert env["KALE_RUN_LINK"].startswith("https://kubeflow.example.org/pipeline/?ns=")
    assert env["KALE_UPLOAD_LINK"].startswith("https://kubeflow.example.org/pipeline/?ns=")
    assert env["DNA_HUB_KFP_DEFAULT_AUTH"] == "0"
    assert env["DNA_HUB_KFP_TOKEN_PATH"] == "/var/run/secrets/other/token"


@pytest.mark.parametrize(
    "settings",
    [NotebookEnvSettings(), NotebookEnvSettings(kfp_namespace="ns", pipeline_uid=4242)],
)
def test_values_are_strings_and_poddefault_names_are_left_alone(
    settings: NotebookEnvSettings,
) -> None:
    env = notebook_environment(settings)

    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    # The PodDefault access-ml-pipeline owns it; its webhook rejects a conflicting env.
    assert "KF_PIPELINES_SA_TOKEN_PATH" not in env
    assert not RESERVED_ENV_NAMES & env.keys()


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        NotebookEnvSettings().pipeline_uid = 1  # type: ignore[misc]


@pytest.mark.parametrize("field", ["pipeline_uid", "pipeline_gid"])
def test_rejects_root_ids(field: str) -> None:
    with pytest.raises(ValueError, match=rf"{field} must not be 0"):
        NotebookEnvSettings(**{field: 0})


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"pipeline_uid": -5}, ValueError),
        ({"pipeline_uid": 2**31}, ValueError),
        ({"pipeline_uid": True}, TypeError),
        ({"pipeline_gid": "8737"}, TypeError),
        ({"kfp_endpoint": "ml-pipeline.kubeflow:8888"}, ValueError),
        ({"kfp_ui_endpoint": "ftp://ui"}, ValueError),
        ({"kfp_ui_link_base": "kubeflow.example.org"}, ValueError),
        ({"token_path": "relative/token"}, ValueError),
        ({"kale_config_path": ""}, ValueError),
        ({"kfp_namespace": ""}, ValueError),
    ],
)
def test_rejects_invalid_settings(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        NotebookEnvSettings(**kwargs)  # type: ignore[arg-type]
