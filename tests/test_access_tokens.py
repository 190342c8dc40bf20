"""Access-token checks are remembered per token (app/services/security.py): what is remembered
must never outlive the token's expiry, nor let a token pass under another signing key."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest
from pydantic import SecretStr

from app.models.types import utcnow
from app.services.security import (
    JWT_ALGORITHM,
    InvalidToken,
    create_access_token,
    decode_access_token,
    key_id,
)
from tests.helpers import TEST_SECRET, make_settings


def short_lived_token(seconds: float) -> str:
    now = utcnow()
    claims = {
        "sub": "7",
        "sid": 1,
        "ver": 0,
        "iat": now,
        "exp": now + timedelta(seconds=seconds),
        "type": "access",
    }
    return jwt.encode(
        claims, TEST_SECRET, algorithm=JWT_ALGORITHM, headers={"kid": key_id(TEST_SECRET)}
    )


def test_a_remembered_token_is_refused_once_it_has_expired() -> None:
    settings = make_settings()
    token = short_lived_token(1.0)
    assert decode_access_token(token, settings).user_id == 7
    time.sleep(1.2)
    with pytest.raises(InvalidToken):
        decode_access_token(token, settings)


def test_a_remembered_token_is_refused_under_another_signing_key() -> None:
    token, _ = create_access_token(7, make_settings(), session_id=1)
    assert decode_access_token(token, make_settings()).user_id == 7
    other = make_settings().model_copy(
        update={"secret_key": SecretStr("another-secret-key-long-enough-for-hs256-use")}
    )
    with pytest.raises(InvalidToken):
        decode_access_token(token, other)


def test_the_superuser_hint_round_trips_and_is_absent_from_older_tokens() -> None:
    settings = make_settings()
    hinted, _ = create_access_token(7, settings, session_id=1, superuser=True)
    plain, _ = create_access_token(8, settings, session_id=1)
    assert decode_access_token(hinted, settings).superuser is True
    assert decode_access_token(plain, settings).superuser is None
