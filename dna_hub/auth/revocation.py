"""End every kind of access a removed user still has to the hub, at once.

JupyterHub glue, called by `DnaOIDCAuthenticator.refresh_user` when the provider says a
user may no longer log in. Refusing the request at hand is not enough: the user's
running servers keep their Kubeflow service account, their API tokens keep working
until their next refresh, and other browser sessions stay logged in. So:

1. revoke all the user's API tokens (including OAuth tokens of their servers);
2. end all their browser sessions (a new cookie id invalidates every hub cookie);
3. stop their servers (through the request handler, or, in the background re-check, which
   has none, through the hub's proxy and the user: the route is removed, then the server
   stopped, as the handler does).
"""

from __future__ import annotations

import logging
from typing import Any

from jupyterhub.utils import new_token

__all__ = ["revoke_access", "stop_server"]


async def stop_server(user: Any, name: str, *, handler: Any = None, proxy: Any = None) -> None:
    """Stop one server of ``user``: through the request handler if there is one, else remove
    its proxy route and stop it (what the handler's ``stop_single_user`` does)."""
    if handler is not None and hasattr(handler, "stop_single_user"):
        await handler.stop_single_user(user, name)
        return
    if proxy is None:
        raise RuntimeError("no request handler and no proxy to stop the server with")
    await proxy.delete_user(user, name)
    await user.stop(name)


async def revoke_access(user: Any, handler: Any, *, log: logging.Logger, proxy: Any = None) -> None:
    """Revoke `user`'s tokens and sessions and stop their servers; log what was done."""
    db = user.db
    tokens = list(user.orm_user.api_tokens)
    for token in tokens:
        db.delete(token)
    user.orm_user.cookie_id = new_token()
    db.commit()
    stopped: list[str] = []
    for name, spawner in list(user.spawners.items()):
        if not spawner.active:
            continue
        can_stop = hasattr(handler, "stop_single_user") or proxy is not None
        if spawner.pending or not can_stop:
            log.error("Cannot stop %s now (%s): stop it by hand", name or "server", spawner.pending)
            continue
        try:
            await stop_server(user, name, handler=handler, proxy=proxy)
        except Exception as e:  # one failing server must not keep the others running
            log.error("Stopping %s of removed user %s failed: %s", name or "server", user.name, e)
        else:
            stopped.append(name or "default server")
    log.warning(
        "Revoked access of %s: %d API tokens revoked, sessions ended, stopped: %s",
        user.name,
        len(tokens),
        ", ".join(stopped) or "none",
    )
