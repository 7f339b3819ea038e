"""The table that puts a starting server's Kubernetes events in people's words (issue 27,
item 1): each row on the messages Kubernetes 1.37 really writes, first match wins, and the
raw event kept for operators. The same causes end a refused pod creation (spawn_errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dna_hub.hub.spawn_errors import refusal
from dna_hub.policy.spawn_progress import PROGRESS_MESSAGES, ProgressRule, explain_event
from tests.unit.test_spawn_errors import api_error

POD = 'pods "jupyter-alice" is forbidden: '


@pytest.mark.parametrize(
    ("reason", "message", "cause", "words"),
    [
        # kube-scheduler, a GPU no node has (tests/integration/test_spawn_progress.py sees it)
        ("FailedScheduling", "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. "
         "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming "
         "pod.", "no-gpu", "No GPU is free"),
        ("FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu, 3 Insufficient "
         "memory.", "no-room", "smaller server"),
        ("FailedScheduling", "0/2 nodes are available: 2 node(s) didn't match Pod's node "
         "affinity/selector.", "no-matching-node", "another server option"),
        ("FailedScheduling", "0/2 nodes are available: 2 node(s) had untolerated taint "
         "{nvidia.com/gpu: present}.", "no-matching-node", "another server option"),
        # the kubelet
        ("Failed", 'Failed to pull image "example.org/nope:1": rpc error: code = NotFound '
         "desc = failed to pull and unpack image: not found", "image-pull",
         "image cannot be downloaded"),
        ("Failed", "Error: ErrImagePull", "image-pull", "image cannot be downloaded"),
        ("BackOff", 'Back-off pulling image "example.org/nope:1"', "image-pull",
         "image cannot be downloaded"),
        ("Failed", "Error: ImagePullBackOff", "image-pull", "image cannot be downloaded"),
        # the API server's quota admission (an owner's FailedCreate event, or a refusal)
        ("FailedCreate", POD + "exceeded quota: kf-resource-quota, requested: "
         "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=1, limited: "
         "requests.nvidia.com/gpu=1", "gpu-quota", "used by your other notebook servers"),
        ("FailedCreate", POD + "exceeded quota: kf-resource-quota, requested: cpu=2, used: "
         "cpu=8, limited: cpu=8", "quota", "resource quota is used up"),
        ("FailedCreate", POD + "error looking up service account kubeflow-alice/default-"
         'editor: serviceaccount "default-editor" not found', "profile-not-ready",
         "Waiting for your Kubeflow profile to be created"),
    ],
)  # fmt: skip
def test_each_cause_in_peoples_words(reason: str, message: str, cause: str, words: str) -> None:
    explained = explain_event(reason, message)
    assert explained is not None
    assert (explained.cause, explained.raw_reason, explained.raw_message) == (
        cause,
        reason,
        message,
    )
    assert words in explained.message
    # the words a spawn that ends for it ends with: the row's, else the progress message
    rule = next(r for r in PROGRESS_MESSAGES if r.cause == cause)
    assert explained.final_message == (rule.final or rule.message)
    assert "this page keeps trying" not in explained.final_message
    # operators keep what Kubernetes said
    assert explained.operator_detail == f"{reason}: {message}"
    # people never read the raw event's jargon
    for jargon in ("nodes are available", "preemption", "ErrImagePull", "kf-resource-quota"):
        assert jargon not in explained.message


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("Scheduled", "Successfully assigned kubeflow-alice/jupyter-alice to node-1"),
        ("Pulled", 'Container image "dna-hub/singleuser:1" already present on machine'),
        ("Started", "Started container notebook"),
        # a reason the row is not for: an image row does not explain a scheduling event
        ("Created", "Error: ErrImagePull"),
        # a failure that is not the image's download
        ("Failed", 'Error: exec: "jupyterhub-singleuser": executable file not found in $PATH'),
        ("", ""),
        (None, None),
    ],
)
def test_other_events_are_left_as_they_are(reason: str | None, message: str | None) -> None:
    assert explain_event(reason, message) is None


def test_first_match_wins_and_rows_are_data() -> None:
    assert len({rule.cause for rule in PROGRESS_MESSAGES}) == len(PROGRESS_MESSAGES)
    rows = (
        ProgressRule("a", ("R",), "x", "first"),
        ProgressRule("b", (), "x", "second"),
    )
    assert explain_event("R", "xx", rows).message == "first"  # type: ignore[union-attr]
    assert explain_event("Q", "xx", rows).message == "second"  # type: ignore[union-attr]
    assert explain_event("Q", "y", rows) is None


def test_a_gpu_quota_refusal_of_the_pod_says_the_other_servers_hold_it() -> None:
    refused = refusal(
        api_error(403, "Forbidden", POD + "exceeded quota: kf-resource-quota, requested: "
                  "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=1, limited: "
                  "requests.nvidia.com/gpu=1", name="jupyter-alice", kind="pods"),
        namespace="kubeflow-alice",
    )  # fmt: skip
    assert refused is not None and refused.reason == "quota"
    assert "GPU quota is used by your other notebook servers" in refused.jupyterhub_message
    assert "requests.nvidia.com/gpu=1" in str(refused)  # the operator's detail


def test_a_pod_refused_before_the_profile_is_ready_says_so() -> None:
    refused = refusal(
        api_error(403, "Forbidden", POD + "error looking up service account kubeflow-alice/"
                  'default-editor: serviceaccount "default-editor" not found',
                  name="jupyter-alice", kind="pods"),
        namespace="kubeflow-alice",
    )  # fmt: skip
    assert refused is not None and refused.reason == "missing"
    assert "Waiting for your Kubeflow profile to be created" in refused.jupyterhub_message
    assert "not allowed" not in refused.jupyterhub_message


def test_the_docs_list_every_row() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "progress-messages.md").read_text()
    for rule in PROGRESS_MESSAGES:
        assert f"| `{rule.cause}` |" in docs
        assert rule.message in docs
        assert rule.final in docs
