"""Passwords and access tokens.

Passwords are hashed with argon2 (pwdlib's recommended hasher) and never stored or returned in
any other form. Access tokens are JWTs signed with the configured secret, carrying the user's id,
the user's token version, the session they belong to (`sid`) and an expiry; the account and the
session are re-read on every request, so a deactivated user's token, one issued before the
version was raised, or one of a session that was logged out stops working at once.

Each token names the key that signed it (`kid`, a digest of the key): SECRET_KEY signs, and
PREVIOUS_SECRET_KEYS still verify what they signed, so the key can be changed without logging
everyone out (README: "Rotating the signing key").
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from pwdlib import PasswordHash

from app.config import Settings
from app.models.types import utcnow
from app.models.validation import is_whole_number

JWT_ALGORITHM = "HS256"
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_SESSION_ID = 2**63 - 1  # a BIGINT

_hasher = PasswordHash.recommended()
# Verifying against this when the account does not exist keeps a failed login as slow as a real
# one, so response times do not tell which emails are registered.
_DUMMY_HASH = _hasher.hash("not a real password, only for timing")


class InvalidToken(Exception):
    """The token is malformed, expired, or signed with another key."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def check_password(password: str, hashed: str | None) -> bool:
    """`verify_password` in a worker thread: argon2 takes a fifth of a second on purpose, and
    the event loop must go on serving everyone else meanwhile."""
    return await asyncio.to_thread(verify_password, password, hashed)


def verify_password(password: str, hashed: str | None) -> bool:
    if hashed is None:
        _hasher.verify(password, _DUMMY_HASH)
        return False
    try:
        return _hasher.verify(password, hashed)
    except Exception:  # a corrupt stored hash is a failed login, not a crash
        return False


@dataclass(frozen=True)
class AccessClaims:
    """Who a credential says the caller is: an access token's claims, or an API key's
    (app/services/api_keys.py)."""

    user_id: int
    # The user's token_version when the token was issued; None for an API key, which a version
    # change does not void (its account's deactivation and its own revocation do).
    version: int | None
    # Whether the user was a superuser when the token was issued: a hint that lets a read be
    # shaped for the caller's scope in the statement that also checks the account (which
    # compares it with the stored flag). Never a grant: None for tokens issued without it.
    superuser: bool | None = None
    # The session the token was issued for (app/services/sessions.py); it must still be live.
    session_id: int | None = None
    # Or the API key, and its scope ("read" keys may only read).
    key_id: int | None = None
    scope: str | None = None

    @property
    def read_only(self) -> bool:
        return self.scope == "read"


@dataclass(frozen=True)
class SigningKeys:
    """The key that signs, and every key that verifies, each by its id (`kid`)."""

    kid: str
    secret: str
    verifying: tuple[tuple[str, str], ...]

    def secret_of(self, kid: object) -> str:
        for known, secret in self.verifying:
            if known == kid:
                return secret
        raise InvalidToken("signed with a key that is not in use")


def secret_digest(secret: str) -> str:
    """The SHA-256 (hex) a refresh token or an API key is stored as. Both are 32 random bytes,
    so a fast digest is as good as a slow hash, and keeps the per-request look-up cheap. Text
    that is not valid Unicode (a lone surrogate) is digested, not refused with an error."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def key_id(secret: str) -> str:
    """A key's public name: a digest, so a token tells which key to check it with, and nothing
    about the key."""
    return hashlib.sha256(b"crm-kid:" + secret.encode()).hexdigest()[:16]


def create_access_token(
    user_id: int,
    settings: Settings,
    version: int = 0,
    *,
    session_id: int,
    superuser: bool | None = None,
    issued_at: datetime | None = None,
) -> tuple[str, int]:
    """A signed token for the user's session, and its lifetime in seconds. `version` is the
    user's `token_version` now; the token is refused once the stored one has moved on.
    `superuser`, the account's flag now, is carried as a hint (see `AccessClaims`). The same
    arguments, `issued_at` included, make the same token: a refresh repeated within its grace
    period is answered with the token it was answered with before."""
    lifetime = timedelta(minutes=settings.access_token_expire_minutes)
    now = issued_at or utcnow()
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "sid": session_id,
        "ver": version,
        "iat": now,
        "exp": now + lifetime,
        "type": "access",
    }
    if superuser is not None:
        claims["su"] = superuser
    keys = signing_keys(settings)
    token = jwt.encode(claims, keys.secret, algorithm=JWT_ALGORITHM, headers={"kid": keys.kid})
    return token, int(lifetime.total_seconds())


def decode_access_token(token: str, settings: Settings) -> AccessClaims:
    """Who a valid token was issued to, for which session and at which token version.

    A client sends the same token with every request for up to its lifetime, and checking its
    signature and claims costs more than the lead read it guards: the result of the check, a
    pure function of the token and the keys, is remembered (`_verified`); only the expiry,
    which depends on the time, is checked on every call."""
    claims, expires = _verified(token, signing_keys(settings))
    if time.time() >= expires:
        raise InvalidToken("Signature has expired")
    return claims


@functools.lru_cache(maxsize=4096)
def _verified(token: str, keys: SigningKeys) -> tuple[AccessClaims, float]:
    """The claims of a token signed with one of `keys`, and when it expires; InvalidToken
    (never remembered) for any other."""
    try:
        secret = keys.secret_of(jwt.get_unverified_header(token).get("kid"))
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "sid", "exp", "iat"]},
        )
        if claims.get("type") != "access":
            raise InvalidToken("not an access token")
        version = claims.get("ver", 0)
        if not is_whole_number(version) or version < 0:
            raise InvalidToken("malformed token version")
        session_id = claims["sid"]
        if not is_whole_number(session_id) or not 1 <= session_id <= MAX_SESSION_ID:
            raise InvalidToken("malformed session id")
        superuser = claims.get("su")
        if not isinstance(superuser, bool | None):
            raise InvalidToken("malformed superuser hint")
        expires = float(claims["exp"])
        return AccessClaims(int(claims["sub"]), version, superuser, session_id), expires
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidToken(str(exc)) from exc


def signing_keys(settings: Settings) -> SigningKeys:
    if settings.secret_key is None:
        raise RuntimeError("SECRET_KEY is not configured")
    return _keys(
        settings.secret_key.get_secret_value(),
        tuple(key.get_secret_value() for key in settings.previous_secret_keys),
    )


@functools.lru_cache(maxsize=8)
def _keys(current: str, previous: tuple[str, ...]) -> SigningKeys:
    verifying = tuple((key_id(secret), secret) for secret in (current, *previous))
    return SigningKeys(key_id(current), current, verifying)
