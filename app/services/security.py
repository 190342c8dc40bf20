"""Passwords and access tokens.

Passwords are hashed with argon2 (pwdlib's recommended hasher) and never stored or returned in
any other form. Access tokens are JWTs signed with the configured secret, carrying the user's id,
the user's token version and an expiry; the user is re-read on every request, so a deactivated
user's token, or one issued before the version was raised (a password change), stops working at
once.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from pwdlib import PasswordHash

from app.config import Settings
from app.models.types import utcnow
from app.models.validation import is_whole_number

JWT_ALGORITHM = "HS256"
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHash.recommended()
# Verifying against this when the account does not exist keeps a failed login as slow as a real
# one, so response times do not tell which emails are registered.
_DUMMY_HASH = _hasher.hash("not a real password, only for timing")


class InvalidToken(Exception):
    """The token is malformed, expired, or signed with another key."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


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
    user_id: int
    version: int  # the user's token_version when the token was issued
    # Whether the user was a superuser when the token was issued: a hint that lets a read be
    # shaped for the caller's scope in the statement that also checks the account (which
    # compares it with the stored flag). Never a grant: None for tokens issued without it.
    superuser: bool | None = None


def create_access_token(
    user_id: int, settings: Settings, version: int = 0, *, superuser: bool | None = None
) -> tuple[str, int]:
    """A signed token for the user, and its lifetime in seconds. `version` is the user's
    `token_version` now; the token is refused once the stored one has moved on. `superuser`,
    the account's flag now, is carried as a hint (see `AccessClaims`)."""
    lifetime = timedelta(minutes=settings.access_token_expire_minutes)
    now = utcnow()
    claims = {
        "sub": str(user_id),
        "ver": version,
        "iat": now,
        "exp": now + lifetime,
        "type": "access",
    }
    if superuser is not None:
        claims["su"] = superuser
    token = jwt.encode(claims, _secret(settings), algorithm=JWT_ALGORITHM)
    return token, int(lifetime.total_seconds())


def decode_access_token(token: str, settings: Settings) -> AccessClaims:
    """Who a valid token was issued to, and at which token version. A token without "ver"
    (issued before versions existed) counts as version 0, which every account started at.

    A client sends the same token with every request for up to an hour, and checking its
    signature and claims costs more than the lead read it guards: the result of the check, a
    pure function of the token and the key, is remembered (`_verified`); only the expiry, which
    depends on the time, is checked on every call."""
    claims, expires = _verified(token, _secret(settings))
    if time.time() >= expires:
        raise InvalidToken("Signature has expired")
    return claims


@functools.lru_cache(maxsize=4096)
def _verified(token: str, secret: str) -> tuple[AccessClaims, float]:
    """The claims of a token signed with `secret`, and when it expires; InvalidToken (never
    remembered) for any other."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "exp", "iat"]},
        )
        if claims.get("type") != "access":
            raise InvalidToken("not an access token")
        version = claims.get("ver", 0)
        if not is_whole_number(version) or version < 0:
            raise InvalidToken("malformed token version")
        superuser = claims.get("su")
        if not isinstance(superuser, bool | None):
            raise InvalidToken("malformed superuser hint")
        expires = float(claims["exp"])
        return AccessClaims(int(claims["sub"]), version, superuser), expires
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidToken(str(exc)) from exc


def _secret(settings: Settings) -> str:
    if settings.secret_key is None:
        raise RuntimeError("SECRET_KEY is not configured")
    return settings.secret_key.get_secret_value()
