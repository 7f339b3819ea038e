"""pytest plugin: a real OpenID provider (panva/oidc-provider) and a real JupyterHub.

Fixtures (reusable by other tests, e.g. the browser test):

* ``oidc_node_modules`` (session): the ``node_modules`` of ``devstack/oidc_provider``,
  installed with ``npm ci`` into ``<cache>/oidc-npm/<lockfile hash>`` when missing.
  Holds ``oidc-provider`` and ``configurable-http-proxy`` (``chp_command``).
* ``oidc_provider`` (session): :class:`OIDCProvider` on ``http://127.0.0.1:<port>``
  with :data:`DEMO_ACCOUNTS` and the static client :data:`TOKEN_CLIENT` (for tests that
  get tokens without a hub). ``await oidc_provider.register_client(...)`` registers a
  client with exact redirect URIs (dynamic registration, RFC 7591).
* ``oidc_provider_factory`` (session): ``oidc_provider_factory(ttl=..., issuer=...,
  keys=..., accounts=...)`` starts another provider (short token lifetimes, an impostor
  claiming another issuer, another key under the same ``kid``, ``hostile={...}``
  misbehaviours of provider.mjs); all stopped at the end. ``await provider.set_claims(
  login, claims)`` changes an account at the running provider (None deletes it).
* ``oidc_keys`` (session): :class:`SigningKeys` (``primary``, ``rogue``: two RSA keys
  with the same ``kid``).
* ``hub_factory`` (function): ``await hub_factory(provider, authenticator={...})``
  starts ``jupyterhub`` + ``configurable-http-proxy`` with ``DnaOIDCAuthenticator``,
  encrypted auth_state and a recording spawner stub; returns :class:`HubProcess`
  (``url``, ``api()``, ``login()``, ``client``, spawner records). Stopped after the test.

Log in with an HTTP client: ``await hub.login(http, "alice")`` (hub flow) or
``await provider.browse(http, url, username="alice")`` (any flow through the provider's
devInteractions pages, including the logout confirmation). The devInteractions login
form accepts any password (:data:`DEMO_PASSWORD` is what the helpers type). Tokens
without a hub: ``await provider.obtain_tokens("alice")`` (or ``authorize`` then
``exchange``) as :data:`TOKEN_CLIENT`; ``await provider.refresh(token, client)``.

Hub settings used by ``hub_factory`` are :func:`default_authenticator_settings`
(groups policy :data:`ALLOWED_GROUPS`/:data:`ADMIN_GROUPS`, scopes :data:`HUB_SCOPES`).
The hub's client is registered at the provider with redirect URI
``<hub>/hub/oauth_callback`` and post-logout URI ``<hub>/hub/login``; the spawner stub
writes ``{"user", "auth_state", "api_token"}`` to ``hub.spawn_record(name)`` and "runs" nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack import paths

NODE_PACKAGE_DIR = Path(__file__).parent / "oidc_provider"
PROVIDER_SCRIPT = NODE_PACKAGE_DIR / "provider.mjs"
READY_TIMEOUT = float(os.environ.get("DNA_HUB_OIDC_READY_TIMEOUT", "60"))
HTTP_TIMEOUT = 15.0
MIN_NODE = (20, 19)

#: What the login helpers type into the devInteractions password field (it is not checked).
DEMO_PASSWORD = "demo-password"

#: Accounts of the default provider: login name -> claims (`sub` is the login name).
DEMO_ACCOUNTS: dict[str, dict[str, Any]] = {
    # A regular data scientist; mixed-case names check the username normalisation and that
    # the Kubeflow identity keeps its case.
    "alice": {
        "claims": {
            "preferred_username": "Alice",
            "email": "Alice.Smith@Example.com",
            "email_verified": True,
            "name": "Alice Smith",
            "groups": ["data-science"],
        }
    },
    # An admin through the admin group.
    "bob": {
        "claims": {
            "preferred_username": "bob",
            "email": "bob@example.com",
            "email_verified": True,
            "groups": ["data-science", "hub-admins"],
        }
    },
    # Authenticated, but not in an allowed group.
    "mallory": {
        "claims": {
            "preferred_username": "mallory",
            "email": "mallory@example.com",
            "email_verified": True,
            "groups": ["marketing"],
        }
    },
    # In the allowed group, but the provider has not verified the email address.
    "eve": {
        "claims": {
            "preferred_username": "eve",
            "email": "eve@example.com",
            "email_verified": False,
            "groups": ["data-science"],
        }
    },
    # No preferred_username: the hub name falls back to the email.
    "carol": {
        "claims": {
            "email": "Carol@Example.com",
            "email_verified": True,
            "groups": ["data-science"],
        }
    },
}

#: Hub groups policy matching DEMO_ACCOUNTS.
ALLOWED_GROUPS = ["data-science"]
ADMIN_GROUPS = ["hub-admins"]
#: Scopes the hub asks for (oidc-provider maps `groups` to the groups claim).
HUB_SCOPES = ["openid", "email", "profile", "groups", "offline_access"]


@dataclass(frozen=True)
class OIDCClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()


#: A static client on every provider, for getting tokens without a hub.
TOKEN_CLIENT = OIDCClient(
    client_id="dna-token-tests",
    client_secret="dna-token-tests-secret-0123456789abcdef",
    redirect_uris=("http://127.0.0.1:9/callback",),
)


def _client_metadata(client: OIDCClient) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "redirect_uris": list(client.redirect_uris),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_post",
    }


# ---------------------------------------------------------------------------- node


def _node_version() -> tuple[int, ...] | None:
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    match = re.match(r"v(\d+)\.(\d+)", out.stdout.strip())
    return tuple(int(x) for x in match.groups()) if match else None


def install_node_modules() -> Path:
    """`npm ci` the test node package into the cache (once per lockfile), return node_modules.

    Keyed by the lockfile's hash so a dependency bump gets a fresh tree; a file lock makes
    parallel test processes wait for one install instead of racing.
    """
    version = _node_version()
    if version is None or shutil.which("npm") is None:
        paths.unavailable("node and npm are needed for the OpenID provider tests")
    assert version is not None
    if version[:2] < MIN_NODE:
        paths.unavailable(f"node >= {'.'.join(map(str, MIN_NODE))} is needed, found {version}")
    lock = (NODE_PACKAGE_DIR / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (NODE_PACKAGE_DIR / "package.json").read_bytes())
    target = paths.CACHE_DIR / "oidc-npm" / digest.hexdigest()[:16]
    marker = target / ".installed"
    if marker.exists():
        return target / "node_modules"
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not marker.exists():
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(NODE_PACKAGE_DIR / name, target / name)
            shutil.rmtree(target / "node_modules", ignore_errors=True)
            result = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=target,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if result.returncode != 0:
                pytest.fail(
                    f"npm ci in {target} failed:\n{result.stdout}\n{result.stderr}",
                    pytrace=False,
                )
            marker.touch()
    return target / "node_modules"


def chp_command(node_modules: Path) -> list[str]:
    return [str(node_modules / ".bin" / "configurable-http-proxy")]


# ---------------------------------------------------------------------------- keys


def _rsa_jwk(kid: str, bits: int = 2048) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    # PyJWT marks private JWKs key_ops=["sign"]; oidc-provider then cannot use the key to
    # verify its own tokens (e.g. an id_token_hint at logout).
    jwk.pop("key_ops", None)
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk


@dataclass(frozen=True)
class SigningKeys:
    """Private signing JWKs: `rogue` is other key material under the same `kid`."""

    primary: dict[str, Any]
    rogue: dict[str, Any]


# ---------------------------------------------------------------------------- forms


@dataclass
class Form:
    action: str
    method: str
    id: str | None
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[dict[str, str]] = field(default_factory=list)


class _FormParser(HTMLParser):
    """Just enough HTML form parsing for oidc-provider's devInteractions pages."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._buttons: list[dict[str, str]] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("action", ""), a.get("method", "get").lower(), a.get("id"))
            self.forms.append(self._current)
        elif tag == "input" and a.get("name"):
            form = self._current
            if "form" in a:
                form = next((f for f in self.forms if f.id == a["form"]), form)
            if form is not None:
                form.fields[a["name"]] = a.get("value", "")
        elif tag == "button":
            self._buttons.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None

    def close(self) -> None:
        super().close()
        # Buttons may sit outside their form (`form="op.logoutForm"`).
        for button in self._buttons:
            form = next(
                (f for f in self.forms if button.get("form") and f.id == button["form"]), None
            )
            if form is None and len(self.forms) == 1:
                form = self.forms[0]
            if form is not None:
                form.buttons.append(button)


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


# ---------------------------------------------------------------------------- provider


class OIDCProvider:
    """One `node provider.mjs` process."""

    def __init__(
        self,
        node_modules: Path,
        work_dir: Path,
        *,
        keys: list[dict[str, Any]],
        accounts: dict[str, dict[str, Any]] | None = None,
        clients: list[OIDCClient] | None = None,
        ttl: dict[str, int] | None = None,
        issuer: str | None = None,
        hostile: dict[str, Any] | None = None,
        store_size: int | None = None,
    ) -> None:
        self.node_modules = node_modules
        self.work_dir = work_dir
        self.accounts = accounts if accounts is not None else DEMO_ACCOUNTS
        self.clients = clients if clients is not None else [TOKEN_CLIENT]
        self.config = {
            "port": 0,
            "issuer": issuer,
            "keys": keys,
            "accounts": self.accounts,
            "clients": [_client_metadata(c) for c in self.clients],
            "ttl": ttl or {},
            "modulesDir": str(node_modules),
            "hostile": hostile or {},
            # entries of the provider's in-memory store (None: provider.mjs's 1,000,000)
            "storeSize": store_size,
        }
        self.process: subprocess.Popen[str] | None = None
        self.issuer = ""
        self.base_url = ""
        self.log_file = work_dir / "provider.log"

    # lifecycle ------------------------------------------------------------------

    def start(self) -> OIDCProvider:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.work_dir / "provider.json"
        config_file.write_text(json.dumps(self.config))
        log = open(self.log_file, "w")
        self.process = subprocess.Popen(
            ["node", str(PROVIDER_SCRIPT), str(config_file)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        log.close()
        ready = threading.Event()
        line: list[str] = []

        def read() -> None:
            assert self.process is not None and self.process.stdout is not None
            for text in self.process.stdout:
                if text.startswith("READY ") and not line:
                    line.append(text)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(READY_TIMEOUT) or not line:
            self.stop()
            pytest.fail(
                f"the OpenID provider did not start; log:\n{self.log_file.read_text()}",
                pytrace=False,
            )
        _, self.issuer, self.base_url = line[0].split()
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    # endpoints ------------------------------------------------------------------

    @property
    def discovery_url(self) -> str:
        return f"{self.base_url}/.well-known/openid-configuration"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def register_client(
        self,
        redirect_uris: list[str],
        post_logout_redirect_uris: list[str] | None = None,
    ) -> OIDCClient:
        """Register a confidential client with exactly these redirect URIs (RFC 7591)."""
        metadata = _client_metadata(
            OIDCClient("", "", tuple(redirect_uris), tuple(post_logout_redirect_uris or ()))
        )
        del metadata["client_id"], metadata["client_secret"]
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(self.url("/reg"), json=metadata)
        response.raise_for_status()
        body = response.json()
        return OIDCClient(
            body["client_id"],
            body["client_secret"],
            tuple(redirect_uris),
            tuple(post_logout_redirect_uris or ()),
        )

    async def set_claims(self, login: str, claims: dict[str, Any] | None) -> None:
        """Replace an account's claims at the running provider (None deletes the account).

        Through provider.mjs's test-only endpoint; later refresh grants and userinfo
        calls see the change, as after an admin's edit at a real provider.
        """
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(
                self.url(f"/__test/accounts/{login}"), json={"claims": claims}
            )
        response.raise_for_status()

    async def set_outage(self, down: bool) -> None:
        """While `down`, every request to the provider answers 503 (an IdP outage)."""
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(self.url("/__test/outage"), json={"down": down})
        response.raise_for_status()

    # browsing -------------------------------------------------------------------

    async def browse(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        username: str | None = None,
        password: str = DEMO_PASSWORD,
        stop_at: str | None = None,
        method: str = "GET",
        data: dict[str, str] | None = None,
        max_steps: int = 40,
    ) -> httpx.Response:
        """Act like a browser: follow redirects and fill the provider's pages.

        Fills the devInteractions login form (as `username`), the consent form, the
        RP-initiated logout confirmation ("Yes, sign me out") and auto-submitting
        form_post pages. Returns the first response that is neither a redirect nor one of
        those pages, or the redirect whose target starts with `stop_at`.
        """
        response = await http.request(method, url, data=data, follow_redirects=False)
        for _ in range(max_steps):
            if response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                if stop_at and target.startswith(stop_at):
                    return response
                response = await http.get(target, follow_redirects=False)
                continue
            submission = self._fill(response, username, password)
            if submission is None:
                return response
            action, fields = submission
            response = await http.post(action, data=fields, follow_redirects=False)
        raise AssertionError(f"too many steps browsing from {url}")

    def _fill(
        self, response: httpx.Response, username: str | None, password: str
    ) -> tuple[str, dict[str, str]] | None:
        if not str(response.url).startswith(self.base_url):
            return None
        if "html" not in response.headers.get("content-type", ""):
            return None
        for form in parse_forms(response.text):
            if form.method != "post":
                continue
            action = urljoin(str(response.url), form.action)
            fields = dict(form.fields)
            if "login" in fields:
                if username is None:
                    raise AssertionError("the provider asks for a login but no username given")
                fields.update(login=username, password=password)
                return action, fields
            if fields.get("prompt") == "consent":
                return action, fields
            if form.id == "op.logoutForm":
                fields["logout"] = "yes"
                return action, fields
            if "xsrf" in fields or "code" in fields or "state" in fields:
                return action, fields  # oidc-provider's auto-submitting form_post page
        return None

    async def authorize(
        self,
        username: str,
        *,
        client: OIDCClient = TOKEN_CLIENT,
        nonce: str | None = None,
        scope: str = "openid email profile groups offline_access",
    ) -> Authorization:
        """Log in as `username` for `client` (PKCE, nonce); return the unused code."""
        nonce = nonce or secrets.token_urlsafe(16)
        verifier = secrets.token_urlsafe(32)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .decode()
            .rstrip("=")
        )
        redirect_uri = client.redirect_uris[0]
        query = {
            "client_id": client.client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": secrets.token_urlsafe(8),
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await self.browse(
                http,
                self.url("/auth?") + urlencode(query),
                username=username,
                stop_at=redirect_uri,
            )
        assert response.is_redirect, response.text
        params = parse_qs(urlsplit(response.headers["location"]).query)
        assert "code" in params, params
        return Authorization(params["code"][0], verifier, nonce, redirect_uri, client)

    async def exchange(self, authorization: Authorization) -> TokenGrant:
        """Redeem an authorization code at the token endpoint."""
        client = authorization.client
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            token = await http.post(
                self.url("/token"),
                data={
                    "grant_type": "authorization_code",
                    "code": authorization.code,
                    "redirect_uri": authorization.redirect_uri,
                    "code_verifier": authorization.code_verifier,
                    "client_id": client.client_id,
                    "client_secret": client.client_secret,
                },
            )
        token.raise_for_status()
        return TokenGrant(token.json(), authorization.nonce)

    async def obtain_tokens(
        self,
        username: str,
        *,
        client: OIDCClient = TOKEN_CLIENT,
        nonce: str | None = None,
        scope: str = "openid email profile groups offline_access",
    ) -> TokenGrant:
        """Run the whole authorization-code flow as `client`; return the tokens."""
        return await self.exchange(
            await self.authorize(username, client=client, nonce=nonce, scope=scope)
        )

    async def refresh(self, refresh_token: str, client: OIDCClient) -> httpx.Response:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            return await http.post(
                self.url("/token"),
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "client_id": client.client_id,
                    "client_secret": client.client_secret,
                },
            )


@dataclass(frozen=True)
class Authorization:
    """An authorization code and what is needed to redeem it."""

    code: str
    code_verifier: str
    nonce: str
    redirect_uri: str
    client: OIDCClient


@dataclass(frozen=True)
class TokenGrant:
    """A token endpoint response and the nonce the authorization request carried."""

    response: dict[str, Any]
    nonce: str

    @property
    def id_token(self) -> str:
        return self.response["id_token"]


ProviderFactory = Callable[..., OIDCProvider]


# ---------------------------------------------------------------------------- hub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HUB_CONFIG = '''\
# Generated by devstack/oidc_stack.py
import json
import pathlib

from jupyterhub.spawner import Spawner

RECORD_DIR = pathlib.Path({record_dir!r})


class RecordingSpawner(Spawner):
    """No server at all: records what it was started with, points at a 404 page."""

    async def start(self):
        auth_state = await self.user.get_auth_state()
        record = {{"user": self.user.name, "auth_state": auth_state, "api_token": self.api_token}}
        (RECORD_DIR / f"{{self.user.name}}.json").write_text(json.dumps(record))
        self._running = True
        return ({dummy_host!r}, {dummy_port!r})

    async def poll(self):
        return None if getattr(self, "_running", False) else 0

    async def stop(self, now=False):
        self._running = False


c = get_config()  # noqa
c.JupyterHub.bind_url = {bind_url!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port!r}
c.ConfigurableHTTPProxy.api_url = {proxy_api_url!r}
c.ConfigurableHTTPProxy.command = {chp!r}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_secret_file!r}
c.JupyterHub.spawner_class = RecordingSpawner
c.Spawner.start_timeout = 30
c.Spawner.http_timeout = 30
c.JupyterHub.authenticator_class = "dna-oidc"
c.Authenticator.enable_auth_state = True
c.JupyterHub.services = [{{"name": "dna-test", "api_token": {api_token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "dna-test",
        "scopes": [
            "admin:users", "admin:auth_state", "admin:groups", "admin:servers", "tokens"
        ],
        "services": ["dna-test"],
    }}
]
for key, value in json.loads({hub_settings!r}).items():
    setattr(c.JupyterHub, key, value)
for key, value in json.loads({auth_settings!r}).items():
    setattr(c.DnaOIDCAuthenticator, key, value)
'''


@dataclass
class HubProcess:
    url: str
    provider: OIDCProvider
    client: OIDCClient
    api_token: str
    process: subprocess.Popen[bytes]
    log_file: Path
    record_dir: Path

    @property
    def callback_url(self) -> str:
        return f"{self.url}/hub/oauth_callback"

    def api(self) -> httpx.AsyncClient:
        """A REST API client with admin scopes (users, auth_state, groups, servers)."""
        return httpx.AsyncClient(
            base_url=f"{self.url}/hub/api",
            headers={"Authorization": f"token {self.api_token}"},
            timeout=HTTP_TIMEOUT,
        )

    async def user_model(self, name: str) -> dict[str, Any] | None:
        """The user's REST model with auth_state, or None if the hub has no such user."""
        async with self.api() as api:
            response = await api.get(f"/users/{name}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    async def user_names(self) -> list[str]:
        async with self.api() as api:
            response = await api.get("/users")
        response.raise_for_status()
        return [u["name"] for u in response.json()]

    async def login(
        self, http: httpx.AsyncClient, username: str, *, next_url: str = "/hub/home"
    ) -> httpx.Response:
        """Log in through the provider's pages; returns the last page (hub or error)."""
        start = f"{self.url}/hub/oauth_login?" + urlencode({"next": next_url})
        return await self.provider.browse(http, start, username=username)

    def spawn_record(self, name: str) -> dict[str, Any] | None:
        path = self.record_dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        # A hub that had to be killed leaves its proxy (own session) running: end it by the
        # pid the hub recorded, after checking it is that proxy.
        pid_file = self.log_file.parent / "jupyterhub-proxy.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            if b"configurable-http-proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)


HubFactory = Callable[..., Awaitable[HubProcess]]


def default_authenticator_settings(provider: OIDCProvider, client: OIDCClient) -> dict[str, Any]:
    return {
        "issuer": provider.issuer,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "allow_insecure_loopback": True,
        "scope": HUB_SCOPES,
        "manage_groups": True,
        "allowed_groups": ALLOWED_GROUPS,
        "admin_groups": ADMIN_GROUPS,
    }


async def start_hub(
    provider: OIDCProvider,
    node_modules: Path,
    work: Path,
    *,
    authenticator: dict[str, Any] | None = None,
    hub: dict[str, Any] | None = None,
    issuer: str | None = None,
    extra_config: str = "",
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> HubProcess:
    """Start ``jupyterhub`` + ``configurable-http-proxy``; its client registered at `provider`.

    `authenticator` overrides DnaOIDCAuthenticator settings (defaults:
    :func:`default_authenticator_settings`); `hub` sets JupyterHub settings; `issuer`
    overrides the issuer the hub is configured with; `extra_config` is Python appended to
    the generated jupyterhub_config.py (e.g. to select DnaSpawner instead of the stub).
    """
    record_dir = work / "spawns"
    record_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    client = await provider.register_client([f"{url}/hub/oauth_callback"], [f"{url}/hub/login"])
    settings = default_authenticator_settings(provider, client)
    settings["oauth_callback_url"] = f"{url}/hub/oauth_callback"
    if issuer is not None:
        settings["issuer"] = issuer
    settings.update(authenticator or {})
    dummy = urlsplit(provider.base_url)
    api_token = secrets.token_hex(32)
    config = _HUB_CONFIG.format(
        record_dir=str(record_dir),
        dummy_host=dummy.hostname,
        dummy_port=dummy.port,
        bind_url=url,
        hub_port=free_port(),
        proxy_api_url=f"http://127.0.0.1:{free_port()}",
        chp=chp_command(node_modules),
        db_url=f"sqlite:///{work / 'jupyterhub.sqlite'}",
        cookie_secret_file=str(work / "cookie_secret"),
        api_token=api_token,
        hub_settings=json.dumps(hub or {}),
        auth_settings=json.dumps(settings),
    )
    (work / "jupyterhub_config.py").write_text(config + extra_config)
    # `env` may set JUPYTERHUB_CRYPT_KEY (e.g. "new;old" to rotate the auth_state key).
    process_env = {
        **os.environ,
        "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
        "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(32),
        **(env or {}),
    }
    log_file = work / "jupyterhub.log"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyterhub"), "-f", "jupyterhub_config.py"],
            cwd=work,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    hub_process = HubProcess(url, provider, client, api_token, process, log_file, record_dir)
    try:
        await _wait_for_hub(hub_process)
    except BaseException:
        hub_process.stop()
        raise
    return hub_process


class HubNotReady(RuntimeError):
    """jupyterhub exited or did not answer /hub/health in time (the message has its log)."""


async def _wait_for_hub(hub: HubProcess, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while asyncio.get_running_loop().time() < deadline:
            if hub.process.poll() is not None:
                raise HubNotReady(f"jupyterhub exited:\n{hub.log()}")
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get(f"{hub.url}/hub/health")
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise HubNotReady(f"jupyterhub did not become ready:\n{hub.log()}")
