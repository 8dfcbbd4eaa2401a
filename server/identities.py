"""Who is asking (contract 7.2): an `Identity` made from a token, and the rules of what it
may reach. Signed tokens are JWTs checked by PyJWT, never by hand: one algorithm per
configured key (HS256 with --auth-secret; RS256 or ES256 with --auth-public-key, by the
key's type), so `alg: none` and algorithm confusion are refused. Pure: no I/O after the
keys are read.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .protocol import BadRequest, Forbidden, Unauthorized

SCOPES = ("start", "read", "cancel", "respond", "admin")
DEFAULT_SCOPE = frozenset({"start", "read", "cancel", "respond"})
MIN_SECRET_BYTES = 32
DEFAULT_TTL = 900.0  # seconds: a minted token's life unless asked otherwise
MAX_TTL = 86_400.0
LEEWAY = 0  # seconds of clock skew allowed on `exp`


@dataclass(frozen=True, slots=True)
class Identity:
    """Who asks: `sub` (None for a --token token or a server without tokens), what it may
    do (`scope`), the runs and workflows its token is limited to (None: no limit), and when
    its token expires (epoch seconds; None: never)."""

    sub: str | None = None
    scope: frozenset[str] = frozenset({"admin"})
    runs: frozenset[str] | None = None
    workflows: frozenset[str] | None = None
    expires_at: float | None = None

    @property
    def admin(self) -> bool:
        return "admin" in self.scope

    def can(self, action: str) -> bool:
        """Whether the scope allows `action` (a scope name; admin allows everything)."""
        return self.admin or action in self.scope

    def require(self, action: str) -> None:
        if not self.can(action):
            scope = " ".join(sorted(self.scope)) or "none"
            raise Forbidden(f"this token's scope ({scope}) does not allow {action!r}; ask for a token with {action!r}")

    def reaches(self, run_id: str, owner: str | None) -> bool:
        """Whether this identity may see and act on the run `run_id` owned by `owner`."""
        if self.admin:
            return True
        if self.runs is not None:
            return run_id in self.runs
        return self.sub is not None and owner == self.sub

    def may_start(self, workflow: str) -> bool:
        return self.workflows is None or workflow in self.workflows


ANYONE = Identity()  # a server without tokens, and every --token token: may do everything


def parse_scope(text: Any) -> frozenset[str]:
    """A `scope` claim or field (space-separated names), or ValueError."""
    if not isinstance(text, str):
        raise ValueError("scope must be a string of space-separated names")
    names = frozenset(text.split())
    unknown = names - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope {sorted(unknown)[0]!r}; scopes are {', '.join(SCOPES)}")
    return names


def _names(value: Any, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return frozenset(value)


def identity_of(claims: dict[str, Any]) -> Identity:
    """The identity a verified token's claims describe, or ValueError."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise ValueError("the token has no sub")
    scope = parse_scope(claims["scope"]) if "scope" in claims else DEFAULT_SCOPE
    return Identity(
        sub=sub,
        scope=scope,
        runs=_names(claims.get("runs"), "runs"),
        workflows=_names(claims.get("workflows"), "workflows"),
        expires_at=float(claims["exp"]),
    )


def _public_key(pem: bytes) -> tuple[Any, str]:
    """A PEM public key and the one algorithm it verifies (RS256 or ES256)."""
    key = serialization.load_pem_public_key(pem)
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, "ES256"
    raise ValueError("--auth-public-key must be an RSA (RS256) or EC P-256 (ES256) public key in PEM")


class Authenticator:
    """The server's tokens: --token tokens (admin, no sub), and JWTs signed with
    --auth-secret or by --auth-public-key's private key. With none, the server is open."""

    def __init__(
        self,
        tokens: Iterable[str] = (),
        *,
        secret: str | None = None,
        public_key: bytes | None = None,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        self._tokens = [t.encode() for t in tokens if t]
        if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"--auth-secret must be at least {MIN_SECRET_BYTES} bytes")
        self.secret = secret
        self._keys: dict[str, Any] = {}  # algorithm -> the one key that verifies it
        if secret is not None:
            self._keys["HS256"] = secret
        if public_key is not None:
            key, algorithm = _public_key(public_key)
            self._keys[algorithm] = key
        self.issuer = issuer
        self.audience = audience

    @property
    def enabled(self) -> bool:
        return bool(self._tokens or self._keys)

    @property
    def signed(self) -> bool:
        """Whether signed tokens (identities with a `sub`) are accepted."""
        return bool(self._keys)

    def identify(self, token: str | None) -> Identity:
        """The identity of a token (ANYONE on a server without tokens), or Unauthorized."""
        if not self.enabled:
            return ANYONE
        if not token:
            raise Unauthorized("no token")
        given = token.encode()
        if any([hmac.compare_digest(given, t) for t in self._tokens]):  # constant time: no short cut
            return ANYONE
        if not self._keys or token.count(".") != 2:
            raise Unauthorized("wrong token")
        return self._verify(token)

    def _verify(self, token: str) -> Identity:
        import jwt  # (PyJWT: imported when a signed token is first checked; a server without starts faster)

        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
            if key is None or not isinstance(algorithm, str):
                raise Unauthorized(f"wrong token: this server does not take {algorithm!r} tokens")
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY,
                options={"require": ["sub", "exp"], "verify_aud": self.audience is not None},
            )
            return identity_of(claims)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired; get a fresh one") from None
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise Unauthorized(f"wrong token: {exc}") from None

    def mint(self, caller: Identity, fields: dict[str, Any]) -> tuple[str, float]:
        """`mint_token`: a token for the caller's own sub that can do no more than the
        caller (Forbidden when asked for more; BadRequest for what cannot be). Returns the
        token and when it expires."""
        if self.secret is None:
            raise BadRequest("this server signs no tokens: start it with --auth-secret")
        sub = caller.sub if caller.sub is not None else fields.get("sub")
        if not isinstance(sub, str) or not sub:
            raise BadRequest("give `sub`: the identity the token is for (a --token caller has none of its own)")
        scope = _within(caller, fields)
        runs = _subset(caller.runs, fields.get("runs"), "runs")
        workflows = _subset(caller.workflows, fields.get("workflows"), "workflows")
        ttl = fields.get("ttl", DEFAULT_TTL)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
            raise BadRequest(f"ttl must be seconds, above 0 and at most {MAX_TTL:g}")
        expires = time.time() + ttl
        if caller.expires_at is not None:
            expires = min(expires, caller.expires_at)
        token = mint_token(
            self.secret, sub=sub, scope=" ".join(sorted(scope)), runs=runs, workflows=workflows, exp=expires
        )
        return token, int(expires)


def _within(caller: Identity, fields: dict[str, Any]) -> frozenset[str]:
    if "scope" not in fields or fields["scope"] is None:
        return caller.scope
    try:
        scope = parse_scope(fields["scope"])
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if not caller.admin and not scope <= caller.scope:
        raise Forbidden(f"a token cannot have more scope than its minter's ({' '.join(sorted(caller.scope))})")
    return scope


def _subset(limit: frozenset[str] | None, asked: Any, what: str) -> list[str] | None:
    try:
        names = _names(asked, what)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if limit is None:
        return sorted(names) if names is not None else None
    if names is None:
        return sorted(limit)
    if not names <= limit:
        raise Forbidden(f"a token cannot reach {what} its minter cannot")
    return sorted(names)


def mint_token(
    secret: str,
    *,
    sub: str,
    scope: str | None = None,
    runs: Iterable[str] | None = None,
    workflows: Iterable[str] | None = None,
    ttl: float = DEFAULT_TTL,
    exp: float | None = None,
) -> str:
    """A token signed with `secret` (HS256) for `sub`, expiring in `ttl` seconds (or at `exp`):
    what a backend hands a browser. `scope` is space-separated (default: start read cancel
    respond); `runs` and `workflows` limit what it reaches."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes")
    claims: dict[str, Any] = {"sub": sub, "exp": int(exp if exp is not None else time.time() + ttl)}
    if scope is not None:
        claims["scope"] = " ".join(sorted(parse_scope(scope)))
    if runs is not None:
        claims["runs"] = list(runs)
    if workflows is not None:
        claims["workflows"] = list(workflows)
    import jwt

    return jwt.encode(claims, secret, algorithm="HS256")
