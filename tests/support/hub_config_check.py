"""Load the chart's own jupyterhub_config.py as the hub pod does, and report what it configures.

Runs INSIDE the hub-image environment (devstack/hub_image_env.py), in a private mount
namespace where the rendered ConfigMap/Secret files are at /usr/local/etc/jupyterhub
(tests/support/hub_runner.py): so it may import only what the hub image has (jupyterhub,
traitlets, kubespawner, dna_hub), nothing from tests/.

    python hub_config_check.py REPORT.json

Writes a JSON report: the classes selected, every configuration problem found (a section
that is no class the hub configures, a key that is no configurable trait of its class —
traitlets itself only warns and ignores both — or a class that refuses its configuration),
and what a spawner for user ``alice`` would create. Exit status 0 even with problems: the
report says what they are; a crash of the chart's config file itself exits non-zero.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from types import SimpleNamespace
from typing import Any

CONFIG_FILE = "/usr/local/etc/jupyterhub/jupyterhub_config.py"


def _classes(app: Any, spawner_cls: type, auth_cls: type) -> dict[str, type]:
    from jupyterhub.crypto import CryptKeeper
    from jupyterhub.proxy import ConfigurableHTTPProxy

    known: dict[str, type] = {}
    roots = [type(app), spawner_cls, auth_cls, CryptKeeper, ConfigurableHTTPProxy]
    roots += list(getattr(app, "classes", []))
    for root in roots:
        for cls in root.__mro__:
            if hasattr(cls, "class_trait_names"):
                known.setdefault(cls.__name__, cls)
    return known


def config_problems(app: Any, known: dict[str, type]) -> list[str]:
    problems = []
    for section, settings in app.config.items():
        cls = known.get(section)
        if cls is None:
            problems.append(
                f"hub.config.{section}: no class the hub configures is named {section!r}"
            )
            continue
        if not hasattr(settings, "items"):
            continue
        traits = set(cls.class_trait_names(config=True))
        for key in settings:
            if key not in traits:
                problems.append(
                    f"{section}.{key}: not a configurable trait of {cls.__module__}.{cls.__name__}"
                )
    return problems


async def spawner_report(app: Any, spawner_cls: type) -> dict[str, Any]:
    from jupyterhub import orm
    from jupyterhub.objects import Server

    class User(SimpleNamespace):
        async def get_auth_state(self) -> dict[str, Any]:
            return {"kubeflow_userid": "alice@example.com"}

    user = User(name="alice", escaped_name="alice", id=1, url="/user/alice/", groups=[])
    spawner = spawner_cls(
        parent=app,
        config=app.config,
        user=user,
        hub=app.hub,
        orm_spawner=SimpleNamespace(name="", display_name="", server=None, last_activity=None),
        api_token="not-a-real-token",
        oauth_client_id="jupyterhub-user-alice",
        _mock=True,
    )
    spawner.server = Server(
        orm_server=orm.Server(proto="http", ip="", port=0, base_url="/user/alice/", cookie_name="")
    )
    pod = await spawner.get_pod_manifest()
    env = spawner.get_env()
    return {
        "class": f"{spawner_cls.__module__}.{spawner_cls.__name__}",
        "namespace": spawner.namespace,
        "pod_labels": dict(pod.metadata.labels),
        "scheduler_name": pod.spec.scheduler_name,
        "service_account": pod.spec.service_account_name,
        "image": pod.spec.containers[0].image,
        "env": {k: env[k] for k in ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL") if k in env},
        "storage_pvc_ensure": spawner.storage_pvc_ensure,
        "pvc_name": spawner.pvc_name if spawner.storage_pvc_ensure else None,
        "delete_pvc": spawner.delete_pvc,
    }


def main(report_path: str) -> int:
    import jupyterhub
    from jupyterhub.app import JupyterHub

    report: dict[str, Any] = {"jupyterhub": jupyterhub.__version__, "problems": []}
    app = JupyterHub()
    app.load_config_file(CONFIG_FILE)
    spawner_cls = app.spawner_class
    auth_cls = app.authenticator_class
    report["spawner_class"] = f"{spawner_cls.__module__}.{spawner_cls.__name__}"
    report["authenticator_class"] = f"{auth_cls.__module__}.{auth_cls.__name__}"
    report["hub_connect_url"] = app.hub_connect_url
    report["problems"] += config_problems(app, _classes(app, spawner_cls, auth_cls))
    try:
        authenticator = auth_cls(parent=app, config=app.config)
        report["authenticator"] = {
            "manage_groups": authenticator.manage_groups,
            "allowed_groups": sorted(authenticator.allowed_groups),
            "admin_groups": sorted(authenticator.admin_groups),
            "enable_auth_state": authenticator.enable_auth_state,
        }
    except Exception as e:
        report["problems"].append(f"{auth_cls.__name__} refuses its configuration: {e}")
    try:
        app.init_hub()
        report["spawner"] = asyncio.run(spawner_report(app, spawner_cls))
    except Exception as e:
        report["problems"].append(f"{spawner_cls.__name__} fails: {e!r}")
        report["spawner_traceback"] = traceback.format_exc()
    with open(report_path, "w") as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
