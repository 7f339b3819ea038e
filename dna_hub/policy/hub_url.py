"""The hub API URL as a notebook in another namespace must write it.

z2jh sets ``JupyterHub.hub_connect_url`` to ``http://hub:8081``: a bare Service name, which
cluster DNS only resolves inside the hub's own namespace. DnaSpawner runs every notebook in
its owner's profile namespace, where ``hub`` does not exist, so ``jupyterhub-singleuser``
could never reach the hub API. :func:`qualify_service_url` adds the hub's namespace and
``svc`` (``hub.jupyterhub.svc``), which resolves from any namespace through the search path
a kubelet writes (``... svc.cluster.local cluster.local``) whatever the cluster domain.

Pure function, no I/O.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

__all__ = ["HUB_URL_VARIABLES", "qualify_service_url"]

#: Environment variables JupyterHub derives from the hub's connect URL.
HUB_URL_VARIABLES = ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL")


def _is_short_service_name(host: str) -> bool:
    if not host or "." in host or host == "localhost":
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def qualify_service_url(url: str, namespace: str) -> str:
    """``url`` with a bare Service host name made ``<name>.<namespace>.svc``.

    Anything else (a dotted name, an IP address, localhost, no host) is returned unchanged.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not _is_short_service_name(host):
        return url
    netloc = f"{host}.{namespace}.svc"
    if parts.port is not None:
        netloc += f":{parts.port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urlunsplit(parts._replace(netloc=netloc))
