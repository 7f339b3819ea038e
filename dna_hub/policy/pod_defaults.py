"""Secure resource and image defaults for notebook pods and profile namespaces (pure data).

* The notebook image is the single-user image this repository builds (``images/singleuser``),
  by name and version — never a ``latest`` tag, which would make what runs depend on when a
  node last pulled. ``tests/integration/test_pod_defaults.py`` holds these equal to the Dockerfile's
  ``org.opencontainers.image.version`` label and to ``helm-values/values.yaml``.
* Every notebook gets a memory request and limit and a CPU request. **No CPU limit, by
  design**: CPU is compressible. Under contention the kernel already shares CPU in proportion
  to the requests; a limit (a CFS quota) would only throttle a notebook while the node's CPU
  sits idle, which makes interactive work stall for no one's benefit. Memory is not
  compressible — a pod over its share cannot be slowed down, only killed — so it is limited.
* Every profile namespace gets a ``LimitRange`` with the same policy for containers that do
  not set their own (pipeline steps Kale or KFP start, anything a user runs there), so a
  namespace quota on requests never rejects them and no container runs unbounded in memory.
"""

from __future__ import annotations

from typing import Any

#: Name and version of the image built from images/singleuser (REPLACE the registry in
#: your deployment, as helm-values/values.yaml says).
SINGLEUSER_IMAGE_NAME = "registry.example.com/dna-hub/notebook"
SINGLEUSER_IMAGE_VERSION = "0.1.0"
SINGLEUSER_IMAGE = f"{SINGLEUSER_IMAGE_NAME}:{SINGLEUSER_IMAGE_VERSION}"

#: KubeSpawner byte specifications (``1G`` = 1 GiB): request what a notebook needs idle,
#: limit what one user may take from a node before the kernel kills their server.
MEMORY_REQUEST = "1G"
MEMORY_LIMIT = "4G"
#: Half a core guaranteed (the scheduler reserves it); no limit — see the module docstring.
CPU_REQUEST = 0.5

#: LimitRangeSpec for every profile namespace: defaults for containers without their own.
DEFAULT_LIMIT_RANGE: dict[str, Any] = {
    "limits": [
        {
            "type": "Container",
            "defaultRequest": {"cpu": "100m", "memory": "256Mi"},
            "default": {"memory": "2Gi"},
        }
    ]
}
