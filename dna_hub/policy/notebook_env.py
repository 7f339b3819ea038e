"""The environment the spawner injects into every single-user notebook container.

Pure functions, no I/O: the spawner turns its traits into a :class:`NotebookEnvSettings`
and merges :func:`notebook_environment` into the pod's ``env``.

What each variable is for (the contract with ``images/singleuser``):

``KF_PIPELINES_ENDPOINT`` / ``KF_PIPELINES_UI_ENDPOINT``
    Read by ``kfp.Client()`` (kfp 2.x) as its API host and UI host when none is given.

``KALE_SECURITY_CONTEXT_ENABLED`` / ``_RUN_AS_USER`` / ``_RUN_AS_GROUP`` / ``_RUN_AS_NON_ROOT``
    Read by kubeflow-kale 2.x (``kale.common.utils.get_security_context_from_env``) when it
    compiles a notebook: every generated step gets
    ``kfp.kubernetes.security_context.set_security_context(run_as_user=..., run_as_group=...,
    run_as_non_root=True)``. Kale's own default is UID 65534 / GID 0; we default to 8737,
    the UID Argo's workflow controller runs as on this platform. A notebook's own Kale
    metadata (``kubeflow_notebook.security_context``) still takes precedence in Kale, so the
    cluster's Pod Security admission remains the enforcement point; this makes the
    compliant setting the default.

``KALE_CONFIG_PATH``
    Kale's KFP connection config. The image ships one at the default path with
    ``auth_type: kubernetes_service_account_token`` and no ``host``, so Kale's client uses
    ``KF_PIPELINES_ENDPOINT`` and the projected token.

``KALE_UPLOAD_LINK`` / ``KALE_RUN_LINK``
    Link patterns the Kale panel shows after an upload / a run (placeholders
    ``{pipeline_id}``, ``{version_id}``, ``{run_id}``, ``{namespace}``, substituted by the
    Kale lab extension).

``KALE_KFP_NAMESPACE`` (only when a namespace is configured)
    The namespace Kale's client creates experiments and runs in: the user's profile.

``DNA_HUB_KFP_DEFAULT_AUTH`` / ``DNA_HUB_KFP_TOKEN_PATH``
    Read by the image's ``dna_hub_kfp_auth`` start-up hook
    (``images/singleuser/site-packages/``). kfp 2.x attaches no credentials when a host is
    known (argument or ``KF_PIPELINES_ENDPOINT``): it only reads the pipelines token in its
    in-cluster, no-host branch. The hook gives a bare ``kfp.Client()`` a
    ``ServiceAccountTokenVolumeCredentials`` that re-reads the token file on every request
    (the kubelet rotates it). Token file precedence: ``KF_PIPELINES_SA_TOKEN_PATH`` (set by
    the PodDefault) > ``DNA_HUB_KFP_TOKEN_PATH`` > kfp's default path.

Deliberately absent: ``KF_PIPELINES_SA_TOKEN_PATH``. The Kubeflow PodDefault
``access-ml-pipeline`` defines it together with the projected token volume, and the
PodDefault admission webhook rejects a pod whose container already defines that variable
with another value. Defining it here would therefore break spawning; the hook and Kale
read it from the PodDefault.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_KALE_CONFIG_PATH",
    "DEFAULT_KFP_ENDPOINT",
    "DEFAULT_KFP_UI_ENDPOINT",
    "DEFAULT_PIPELINE_GID",
    "DEFAULT_PIPELINE_UID",
    "DEFAULT_TOKEN_PATH",
    "RESERVED_ENV_NAMES",
    "NotebookEnvSettings",
    "notebook_environment",
]

DEFAULT_KFP_ENDPOINT = "http://ml-pipeline.kubeflow:8888"
DEFAULT_KFP_UI_ENDPOINT = "http://ml-pipeline-ui.kubeflow:80"
#: Matches the UID/GID Argo's workflow controller runs pipeline pods as on this platform.
DEFAULT_PIPELINE_UID = 8737
DEFAULT_PIPELINE_GID = 8737
#: Where the PodDefault ``access-ml-pipeline`` mounts the projected token (audience
#: ``pipelines.kubeflow.org``); also kfp's built-in default.
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"  # noqa: S105 (a path)
#: Baked into the image by ``images/singleuser/Dockerfile``.
DEFAULT_KALE_CONFIG_PATH = "/etc/dna-hub/kale/kfp_server_config.json"

#: Names this module must never emit: the PodDefault owns them (see the module docstring).
RESERVED_ENV_NAMES = frozenset({"KF_PIPELINES_SA_TOKEN_PATH"})

# Linux IDs are unsigned 32-bit; Kubernetes caps runAsUser/runAsGroup at int32 max.
_MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class NotebookEnvSettings:
    """Spawner-side settings (one trait each) that shape the notebook's environment.

    Validated on construction, so a misconfiguration fails when the hub loads its config
    rather than when a user's pipeline is rejected by admission.
    """

    #: KFP API the notebook's clients talk to (in-cluster service URL).
    kfp_endpoint: str = DEFAULT_KFP_ENDPOINT
    #: KFP UI host ``kfp.Client`` reports (``KF_PIPELINES_UI_ENDPOINT``).
    kfp_ui_endpoint: str = DEFAULT_KFP_UI_ENDPOINT
    #: UID every Kale-generated pipeline step runs as. Never 0.
    pipeline_uid: int = DEFAULT_PIPELINE_UID
    #: GID every Kale-generated pipeline step runs as. Never 0 (root group).
    pipeline_gid: int = DEFAULT_PIPELINE_GID
    #: Fallback token path for the image's kfp hook when the PodDefault's
    #: ``KF_PIPELINES_SA_TOKEN_PATH`` is absent. Kale itself only honours that variable.
    token_path: str = DEFAULT_TOKEN_PATH
    #: Kale KFP connection config inside the image.
    kale_config_path: str = DEFAULT_KALE_CONFIG_PATH
    #: Browser-facing KFP UI base for the Kale panel's links (e.g.
    #: ``https://kubeflow.example.org/pipeline``). ``None``: use ``kfp_ui_endpoint``, which
    #: is only right when users' browsers can reach that address.
    kfp_ui_link_base: str | None = None
    #: The user's profile namespace for Kale's runs and experiments; ``None`` leaves Kale's
    #: own resolution (its config file, then ``kubeflow``).
    kfp_namespace: str | None = None
    #: Whether the image's hook authenticates a bare ``kfp.Client()`` with the token.
    kfp_default_auth: bool = True

    def __post_init__(self) -> None:
        for name in ("kfp_endpoint", "kfp_ui_endpoint", "kfp_ui_link_base"):
            value = getattr(self, name)
            if value is not None:
                _check_http_url(name, value)
        _check_id("pipeline_uid", self.pipeline_uid, "run pipeline steps as root")
        _check_id("pipeline_gid", self.pipeline_gid, "put pipeline steps in the root group")
        for name in ("token_path", "kale_config_path"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.startswith("/"):
                raise ValueError(f"{name} must be an absolute path inside the container: {value!r}")
        if self.kfp_namespace is not None and not self.kfp_namespace:
            raise ValueError("kfp_namespace must be a non-empty namespace name or None")


def notebook_environment(settings: NotebookEnvSettings) -> dict[str, str]:
    """Environment variables (all values strings) for the single-user notebook container.

    Never contains ``KF_PIPELINES_SA_TOKEN_PATH``: the PodDefault ``access-ml-pipeline``
    defines it and its webhook rejects a pod that defines it differently.
    """
    kfp_endpoint = settings.kfp_endpoint.rstrip("/")
    kfp_ui = settings.kfp_ui_endpoint.rstrip("/")
    link_base = (settings.kfp_ui_link_base or kfp_ui).rstrip("/")
    env = {
        "KF_PIPELINES_ENDPOINT": kfp_endpoint,
        "KF_PIPELINES_UI_ENDPOINT": kfp_ui,
        "KALE_SECURITY_CONTEXT_ENABLED": "true",
        "KALE_SECURITY_CONTEXT_RUN_AS_USER": str(settings.pipeline_uid),
        "KALE_SECURITY_CONTEXT_RUN_AS_GROUP": str(settings.pipeline_gid),
        "KALE_SECURITY_CONTEXT_RUN_AS_NON_ROOT": "true",
        "KALE_CONFIG_PATH": settings.kale_config_path,
        # Same shape as the lab extension's built-in links (``?ns=`` before the hash route)
        # so the KFP UI opens in the user's namespace.
        "KALE_UPLOAD_LINK": (
            f"{link_base}/?ns={{namespace}}#/pipelines/details/{{pipeline_id}}"
            "/version/{version_id}"
        ),
        "KALE_RUN_LINK": f"{link_base}/?ns={{namespace}}#/runs/details/{{run_id}}",
        "DNA_HUB_KFP_DEFAULT_AUTH": "1" if settings.kfp_default_auth else "0",
        "DNA_HUB_KFP_TOKEN_PATH": settings.token_path,
    }
    if settings.kfp_namespace is not None:
        env["KALE_KFP_NAMESPACE"] = settings.kfp_namespace
    # A guard for future edits: emitting a PodDefault-owned name makes every spawn fail.
    if clash := RESERVED_ENV_NAMES & env.keys():
        raise RuntimeError(f"notebook_environment must not define {sorted(clash)}")
    return env


def _check_http_url(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string URL, got {type(value).__name__}")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"{name} must be an http:// or https:// URL with a host: {value!r}")


def _check_id(name: str, value: object, what_zero_means: str) -> None:
    # bool is an int subclass; True would silently become UID 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value == 0:
        raise ValueError(
            f"{name} must not be 0: that would {what_zero_means}, which the platform forbids "
            f"(default {DEFAULT_PIPELINE_UID})"
        )
    if not 0 < value <= _MAX_ID:
        raise ValueError(f"{name} must be between 1 and {_MAX_ID}, got {value}")
