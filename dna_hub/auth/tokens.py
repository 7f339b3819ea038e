"""id_token verification (OpenID Connect Core 1.0, 3.1.3.7) with PyJWT, and a JWKS cache.

All cryptography is PyJWT's. What this module adds is policy: which algorithms are
acceptable at all, which key a token may be checked with, the OIDC-specific claim checks
(azp, nonce) and a JWKS cache that follows key rotation without letting a stream of
forged `kid`s turn into a stream of requests to the provider.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK

#: An async function that GETs a URL and returns the parsed JSON body, raising on errors.
FetchJSON = Callable[[str], Awaitable[Any]]

#: Asymmetric signature algorithms PyJWT implements, with the JWK key type (and curve)
#: each needs. `none` and HS* are deliberately absent: `none` is no signature, and HS*
#: verified "with the provider's public key" is the classic algorithm-confusion forgery.
KEY_TYPE_FOR_ALG: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
#: Shortest RSA modulus accepted (NIST SP 800-131A; RFC 7518 3.3 requires 2048 for RS*).
#: PyJWT only warns about shorter keys, so the check is here.
MIN_RSA_KEY_BITS = 2048


class TokenVerificationError(Exception):
    """An id_token was rejected. `reason` is a short machine-readable word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def validate_algorithms(algorithms: Iterable[str]) -> list[str]:
    """Check a configured algorithm list; raise ValueError on anything unsafe or unknown."""
    algs = list(algorithms)
    if not algs:
        raise ValueError("at least one id_token signing algorithm must be allowed")
    for alg in algs:
        if alg.lower() == "none":
            raise ValueError("the 'none' algorithm (unsigned tokens) can never be allowed")
        if alg.upper().startswith("HS"):
            raise ValueError(
                f"{alg} is symmetric (HMAC); only asymmetric algorithms verified with the "
                "provider's published keys are allowed"
            )
        if alg not in KEY_TYPE_FOR_ALG:
            raise ValueError(
                f"unsupported id_token algorithm {alg!r}; choose from {sorted(KEY_TYPE_FOR_ALG)}"
            )
    return algs


class JWKSCache:
    """The provider's signing keys by `kid`, re-fetched on an unknown `kid` (key rotation).

    Re-fetches happen at most once per `min_refetch_interval` seconds, so tokens with
    made-up `kid`s cannot make us hammer the provider; the key set is also re-fetched
    when older than `max_age`, so keys the provider withdraws stop being trusted.
    """

    def __init__(
        self,
        jwks_uri: str,
        fetch_json: FetchJSON,
        *,
        min_refetch_interval: float = 60.0,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ) -> None:
        self.jwks_uri = jwks_uri
        self._fetch_json = fetch_json
        self._min_refetch_interval = min_refetch_interval
        self._max_age = max_age
        self._clock = clock
        self._log = log or logging.getLogger(__name__)
        self._keys: list[dict[str, Any]] | None = None
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        #: how many times the key set was fetched (tests check the rate limit with it)
        self.fetch_count = 0

    async def _refresh(self, *, reason: str) -> None:
        async with self._lock:
            now = self._clock()
            if self._fetched_at is not None and now - self._fetched_at < self._min_refetch_interval:
                return  # fetched recently (maybe by a concurrent task): rate limit
            self._log.info("Fetching JWKS %s (%s)", self.jwks_uri, reason)
            try:
                document = await self._fetch_json(self.jwks_uri)
            finally:
                # Count failures too: a dead provider must not be retried per request.
                self._fetched_at = self._clock()
                self.fetch_count += 1
            if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
                raise TokenVerificationError("jwks", f"{self.jwks_uri} is not a JWK set")
            self._keys = [k for k in document["keys"] if isinstance(k, dict)]

    def _find(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        kty, crv = KEY_TYPE_FOR_ALG[alg]
        candidates = [
            k
            for k in self._keys or []
            if k.get("kty") == kty
            and (crv is None or k.get("crv") == crv)
            and k.get("use", "sig") == "sig"
            and k.get("alg", alg) == alg
        ]
        if kid is not None:
            candidates = [k for k in candidates if k.get("kid") == kid]
        # Without a kid, only an unambiguous key is acceptable (Core 10.1).
        return candidates[0] if len(candidates) == 1 else None

    async def key_for(self, kid: str | None, alg: str) -> PyJWK:
        if (
            self._keys is None
            or self._fetched_at is None
            or self._clock() - self._fetched_at >= self._max_age
        ):
            await self._refresh(reason="no current key set")
        jwk = self._find(kid, alg)
        if jwk is None:
            await self._refresh(reason=f"unknown key id {kid!r}")
            jwk = self._find(kid, alg)
        if jwk is None:
            raise TokenVerificationError(
                "signature",
                f"no {alg} signing key with kid {kid!r} in the provider's JWKS {self.jwks_uri}",
            )
        try:
            key = PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError as e:
            raise TokenVerificationError("jwks", f"unusable key {kid!r}: {e}") from e
        if isinstance(key.key, RSAPublicKey) and key.key.key_size < MIN_RSA_KEY_BITS:
            raise TokenVerificationError(
                "weak-key",
                f"the provider's RSA signing key {kid!r} has {key.key.key_size} bits; "
                f"at least {MIN_RSA_KEY_BITS} are required",
            )
        return key


class IdTokenVerifier:
    """Verify an id_token: signature, iss, aud/azp, exp/iat (with leeway), nonce."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        jwks: JWKSCache,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        leeway: float = 30.0,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.jwks = jwks
        self.algorithms = validate_algorithms(algorithms)
        self.leeway = leeway

    async def verify(
        self, id_token: str, *, nonce: str | None, require_nonce: bool = True
    ) -> dict[str, Any]:
        """Return the verified claims or raise TokenVerificationError.

        `nonce`: the value sent in the authorization request. At login it is required
        (`require_nonce`); for an id_token from a refresh it may be absent, but if present
        it must still be the original one (Core 12.2).
        """
        if not isinstance(id_token, str) or not id_token:
            raise TokenVerificationError("missing", "the provider returned no id_token")
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as e:
            raise TokenVerificationError("malformed", f"malformed id_token: {e}") from e
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise TokenVerificationError(
                "algorithm", f"id_token algorithm {alg!r} is not allowed ({self.algorithms})"
            )
        kid = header.get("kid")
        key = await self.jwks.key_for(kid if isinstance(kid, str) else None, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key.key,
                algorithms=[alg],
                audience=self.client_id,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": ["iss", "sub", "aud", "exp", "iat"],
                    "verify_signature": True,
                },
            )
        except jwt.ExpiredSignatureError as e:
            raise TokenVerificationError("expired", f"id_token expired: {e}") from e
        except jwt.InvalidSignatureError as e:
            raise TokenVerificationError("signature", f"bad id_token signature: {e}") from e
        except jwt.InvalidIssuerError as e:
            raise TokenVerificationError(
                "issuer", f"id_token issuer is not {self.issuer!r}: {e}"
            ) from e
        except jwt.InvalidAudienceError as e:
            raise TokenVerificationError(
                "audience", f"id_token audience does not include {self.client_id!r}: {e}"
            ) from e
        except jwt.ImmatureSignatureError as e:
            raise TokenVerificationError("iat", f"id_token not yet valid: {e}") from e
        except jwt.MissingRequiredClaimError as e:
            raise TokenVerificationError("claims", f"id_token incomplete: {e}") from e
        except jwt.PyJWTError as e:
            raise TokenVerificationError("malformed", f"invalid id_token: {e}") from e

        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        # Core 3.1.3.7 items 4-5: with several audiences the authorized party must be us.
        if azp is not None and azp != self.client_id:
            raise TokenVerificationError(
                "audience", f"id_token azp {azp!r} is not {self.client_id!r}"
            )
        if len(audiences) > 1 and azp is None:
            raise TokenVerificationError(
                "audience", "id_token has several audiences but no azp claim"
            )

        token_nonce = claims.get("nonce")
        if nonce is None:
            if require_nonce:
                raise TokenVerificationError("nonce", "no nonce was stored for this login")
        elif token_nonce is None:
            if require_nonce:
                raise TokenVerificationError("nonce", "id_token has no nonce")
        elif not isinstance(token_nonce, str) or not hmac.compare_digest(
            token_nonce.encode(), nonce.encode()
        ):
            raise TokenVerificationError("nonce", "id_token nonce does not match this login")
        return claims
