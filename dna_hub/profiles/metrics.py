"""Prometheus metrics for profile provisioning.

They register in prometheus_client's default registry, which JupyterHub serves on
``/hub/metrics``, so they appear next to JupyterHub's own metrics with no extra wiring.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PROVISIONING_DURATION = Histogram(
    "dna_hub_provisioning_duration_seconds",
    "Time to make sure a user's Kubeflow profile is provisioned, by outcome and path "
    "(fast: already up to date; full: rendered objects applied)",
    ["outcome", "path"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)

PROVISIONING_FAILURES = Counter(
    "dna_hub_provisioning_failures_total",
    "Profile provisioning failures, by reason "
    "(ownership, timeout, api, forbidden, invalid, deleting, naming, template, config)",
    ["reason"],
)

PROVISIONING_REQUESTS = Counter(
    "dna_hub_provisioning_api_requests_total",
    "Kubernetes API requests sent while provisioning profiles, retries included",
)
