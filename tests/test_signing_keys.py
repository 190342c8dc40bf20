"""Rotating the signing key (issue 14): SECRET_KEY signs, PREVIOUS_SECRET_KEYS still verify what
they signed, and each token names its key (`kid`), so it is checked against that key alone."""

from __future__ import annotations

import httpx
import jwt
import pytest
from pydantic import SecretStr

from app.config import Settings, use_settings
from app.models import User
from app.services.security import (
    JWT_ALGORITHM,
    InvalidToken,
    create_access_token,
    decode_access_token,
    key_id,
)
from tests.helpers import TEST_SECRET, make_settings, token_for, uid

OLD_SECRET = "the-old-signing-key-that-is-long-enough-for-hs256"
NEW_SECRET = "the-new-signing-key-that-is-long-enough-for-hs256"
ME = "/api/v1/users/me"


def keys(current: str, *previous: str) -> Settings:
    return make_settings().model_copy(
        update={
            "secret_key": SecretStr(current),
            "previous_secret_keys": tuple(SecretStr(key) for key in previous),
        }
    )


def signed_under(settings: Settings) -> str:
    return create_access_token(7, settings, session_id=1)[0]


def test_a_token_names_the_key_that_signed_it() -> None:
    token = signed_under(keys(NEW_SECRET, OLD_SECRET))

    assert jwt.get_unverified_header(token)["kid"] == key_id(NEW_SECRET)


def test_a_token_of_the_previous_key_is_accepted_after_the_rotation() -> None:
    token = signed_under(keys(OLD_SECRET))

    assert decode_access_token(token, keys(NEW_SECRET, OLD_SECRET)).user_id == 7


def test_dropping_the_previous_key_voids_its_tokens() -> None:
    token = signed_under(keys(OLD_SECRET))
    assert decode_access_token(token, keys(NEW_SECRET, OLD_SECRET)).user_id == 7

    with pytest.raises(InvalidToken):
        decode_access_token(token, keys(NEW_SECRET))


def test_a_token_is_checked_against_the_key_it_names_alone() -> None:
    """Signed with the current key but naming the previous one: trying every key would pass it."""
    claims = jwt.decode(signed_under(keys(NEW_SECRET)), NEW_SECRET, algorithms=[JWT_ALGORITHM])
    misnamed = jwt.encode(
        claims, NEW_SECRET, algorithm=JWT_ALGORITHM, headers={"kid": key_id(OLD_SECRET)}
    )

    with pytest.raises(InvalidToken):
        decode_access_token(misnamed, keys(NEW_SECRET, OLD_SECRET))


def test_a_token_naming_no_key_is_refused() -> None:
    claims = jwt.decode(signed_under(keys(NEW_SECRET)), NEW_SECRET, algorithms=[JWT_ALGORITHM])
    unnamed = jwt.encode(claims, NEW_SECRET, algorithm=JWT_ALGORITHM)

    with pytest.raises(InvalidToken):
        decode_access_token(unnamed, keys(NEW_SECRET))


def test_the_key_id_tells_nothing_of_the_key() -> None:
    assert NEW_SECRET not in key_id(NEW_SECRET)
    assert key_id(NEW_SECRET) != key_id(OLD_SECRET)


def test_previous_keys_are_read_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREVIOUS_SECRET_KEYS", f" {OLD_SECRET} ,{TEST_SECRET},")

    settings = Settings(_env_file=None)

    revealed = [key.get_secret_value() for key in settings.previous_secret_keys]
    assert revealed == [OLD_SECRET, TEST_SECRET]
    assert OLD_SECRET not in repr(settings)


async def test_a_rotation_keeps_a_logged_in_user_working_until_the_old_key_is_dropped(
    client: httpx.AsyncClient, agent: User
) -> None:
    """The procedure README describes, through the API: sign with the old key, rotate, drop."""
    with use_settings(keys(OLD_SECRET)) as old:
        headers = {"Authorization": f"Bearer {token_for(old, uid(agent))}"}
        assert (await client.get(ME, headers=headers)).status_code == 200
    with use_settings(keys(NEW_SECRET, OLD_SECRET)):
        assert (await client.get(ME, headers=headers)).status_code == 200
    with use_settings(keys(NEW_SECRET)):
        assert (await client.get(ME, headers=headers)).status_code == 401
