"""What Kubernetes says about a starting notebook server, in people's words.

A notebook pod that cannot start leaves events (``FailedScheduling``, ``Failed``,
``BackOff``, ``FailedCreate``, ...) whose messages are written for cluster operators:
"0/3 nodes are available: 3 Insufficient nvidia.com/gpu". :data:`PROGRESS_MESSAGES` maps
them — by the event's reason and a pattern of its message, first match wins — to a short
message that says what is wrong and what to do. The spawner shows it on the progress page
(the raw event stays with it, for operators) and, when the spawn ends without the pod
running, ends the spawn with it instead of a timeout.

Pure: strings in, strings out; the table is data (docs/progress-messages.md lists it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PROGRESS_MESSAGES", "ProgressMessage", "ProgressRule", "explain_event"]


@dataclass(frozen=True)
class ProgressRule:
    """One row of the table: events whose reason and message match get ``message``."""

    #: A short fixed label (logs, tests, docs).
    cause: str
    #: The event reasons this row is for (empty: any reason).
    reasons: tuple[str, ...]
    #: A regular expression searched in the event's message (case-insensitive).
    pattern: str
    #: What people read: what is wrong, and what to do.
    message: str
    #: What people read when the spawn ends for this cause (default: ``message``).
    final: str = ""


@dataclass(frozen=True)
class ProgressMessage:
    """An event, explained: the row's cause and message, and the raw reason and message."""

    cause: str
    message: str
    raw_reason: str
    raw_message: str
    final_message: str = ""

    def __post_init__(self) -> None:
        if not self.final_message:
            object.__setattr__(self, "final_message", self.message)

    @property
    def operator_detail(self) -> str:
        """The event as Kubernetes wrote it (for the hub log and operators)."""
        return f"{self.raw_reason}: {self.raw_message}"


_SCHEDULING = ("FailedScheduling",)
_PULLING = ("Failed", "BackOff", "ErrImagePull", "ImagePullBackOff", "InspectFailed")
_CREATING = ("FailedCreate", "Forbidden")

#: The table, first match wins: the more specific rows come first.
PROGRESS_MESSAGES: tuple[ProgressRule, ...] = (
    ProgressRule(
        cause="gpu-quota",
        reasons=(*_CREATING, *_SCHEDULING),
        pattern=r"exceeded quota.*nvidia\.com/gpu",
        message="Your Kubeflow profile's GPU quota is used by your other notebook servers or "
        "workloads. Stop one that uses a GPU, or choose a server without a GPU, then try again.",
    ),
    ProgressRule(
        cause="quota",
        reasons=(*_CREATING, *_SCHEDULING),
        pattern=r"exceeded quota",
        message="Your Kubeflow profile's resource quota is used up. Stop another notebook "
        "server or workload in your profile, or ask your platform administrator for a larger "
        "quota, then try again.",
    ),
    ProgressRule(
        cause="profile-not-ready",
        reasons=(*_CREATING, "FailedMount"),
        pattern=r'serviceaccounts? "default-editor" not found|namespaces? "[^"]+" not found',
        message="Waiting for your Kubeflow profile to be created (its namespace and service "
        "account). This takes a few seconds for a new profile; if it lasts, contact your "
        "platform administrator.",
    ),
    ProgressRule(
        cause="no-gpu",
        reasons=_SCHEDULING,
        pattern=r"Insufficient nvidia\.com/gpu",
        message="No GPU is free in the cluster right now. Wait for one (this page keeps "
        "trying), or stop and choose a server without a GPU.",
        final="Your server did not start: no GPU was free in the cluster. Try again later, "
        "or choose a server without a GPU.",
    ),
    ProgressRule(
        cause="no-room",
        reasons=_SCHEDULING,
        pattern=r"Insufficient (cpu|memory|ephemeral-storage|pods)",
        message="The cluster has no room for a server of this size right now. Wait (this page "
        "keeps trying), or stop and choose a smaller server.",
        final="Your server did not start: the cluster had no room for a server of this size. "
        "Try again later, or choose a smaller server.",
    ),
    ProgressRule(
        cause="no-matching-node",
        reasons=_SCHEDULING,
        pattern=r"node affinity|node selector|untolerated taint|didn't match",
        message="No node of the cluster offers what this server option asks for. Choose "
        "another server option, or contact your platform administrator.",
    ),
    ProgressRule(
        cause="image-pull",
        reasons=_PULLING,
        pattern=r"ErrImagePull|ImagePullBackOff|Failed to pull image|pull access denied|"
        r"manifest unknown|InvalidImageName|Back-off pulling image",
        message="The notebook image cannot be downloaded (it may not exist, or the cluster "
        "may not be allowed to pull it). Choose another server option, or contact your "
        "platform administrator.",
    ),
)


def explain_event(
    reason: str | None,
    message: str | None,
    rules: Sequence[ProgressRule] = PROGRESS_MESSAGES,
) -> ProgressMessage | None:
    """The first row of ``rules`` matching an event's reason and message; None if none does."""
    reason, message = reason or "", message or ""
    for rule in rules:
        if rule.reasons and reason not in rule.reasons:
            continue
        if re.search(rule.pattern, message, flags=re.IGNORECASE | re.DOTALL):
            return ProgressMessage(rule.cause, rule.message, reason, message, rule.final)
    return None
