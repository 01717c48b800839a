"""ChatKit tokens of the local provider, checked the way an outside verifier would: with
nothing but `/.well-known/jwks.json`. Keys: sealed in the database, rotation, restarts,
concurrent first use, the import of earlier versions' key files, a changed SECRET_KEY."""

from __future__ import annotations

import base64
import json
import threading
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, JoseError
from joserfc.jwk import OKPKey
from sqlalchemy import select

from codexweb.codex import chatkit
from codexweb.extensions import db
from codexweb.models import SigningKeyRecord
from tests.codex_support import (
    new_session,
    verify_with_jwks,
)


@pytest.fixture
def owner(user, auth_headers):
    return auth_headers(user)


def mint(client, headers, session_id) -> dict:
    response = client.get(f"/api/codex/chatkit/token?session_id={session_id}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def published(client) -> dict:
    return client.get("/.well-known/jwks.json").get_json()


def key_dir(app):
    return Path(app.config["CHATKIT_KEYS_DIR"])


def test_a_token_verifies_with_only_the_published_jwks(client, owner, user):
    session = new_session(client, owner)
    body = mint(client, owner, session["session_id"])
    decoded = verify_with_jwks(
        body["token"],
        published(client),
        iss="http://localhost",
        aud="chatkit",
        sub=user.id,
        sid=session["session_id"],
        cks=body["chatkit_session_id"],
        agent_id="agent_123",
        placement="dashboard",
    )
    assert decoded.header["alg"] == "EdDSA"
    assert decoded.header["kid"] == published(client)["keys"][0]["kid"]
    claims = decoded.claims
    assert set(claims) == {
        "iss",
        "aud",
        "sub",
        "sid",
        "cks",
        "agent_id",
        "placement",
        "lid",
        "iat",
        "nbf",
        "exp",
        "jti",
    }
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == 600
    logins = client.get("/api/auth/logins", headers=owner).get_json()["logins"]
    assert claims["lid"] == next(login["id"] for login in logins if login["current"])
    assert (
        datetime.fromtimestamp(claims["exp"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        == (body["expires_at"])
    )
    second = mint(client, owner, session["session_id"])  # every token has its own jti
    assert verify_with_jwks(second["token"], published(client)).claims["jti"] != claims["jti"]


@pytest.mark.parametrize("config_overrides", [{"CHATKIT_ISSUER": "https://chat.example.com/"}])
def test_the_issuer_comes_from_config(client, owner):
    session = new_session(client, owner)
    token = mint(client, owner, session["session_id"])["token"]
    verify_with_jwks(token, published(client), iss="https://chat.example.com")


def _tamper(token: str, **claims) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


def test_forged_tokens_are_rejected(client, owner, make_user):
    session = new_session(client, owner)
    token = mint(client, owner, session["session_id"])["token"]
    keys = published(client)

    with pytest.raises(BadSignatureError):
        verify_with_jwks(_tamper(token, sub="usr_someone_else"), keys)

    # Signed by a key of the attacker's, under our kid.
    kid = keys["keys"][0]["kid"]
    intruder = OKPKey.generate_key("Ed25519", private=True)
    claims = verify_with_jwks(token, keys).claims
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forged = jwt.encode({"alg": "EdDSA", "kid": kid}, claims, intruder, algorithms=["EdDSA"])
    with pytest.raises(BadSignatureError):
        verify_with_jwks(forged, keys)

    # alg "none": no signature at all.
    header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"%s"}' % kid.encode()).decode()
    unsigned = header.rstrip("=") + "." + token.split(".")[1] + "."
    with pytest.raises(JoseError):
        verify_with_jwks(unsigned, keys)


def test_an_expired_token_is_rejected(client, owner):
    session = new_session(client, owner)
    token = mint(client, owner, session["session_id"])["token"]
    claims = verify_with_jwks(token, published(client)).claims
    with pytest.raises(ExpiredTokenError):
        verify_with_jwks(token, published(client), now=claims["exp"] + 1)


def stored_keys(app) -> list[dict]:
    with app.app_context():
        return [
            dict(row) for row in db.session.execute(select(SigningKeyRecord.__table__)).mappings()
        ]


def test_the_key_is_sealed_in_the_database_and_reused_across_restarts(app_factory, client, owner):
    first_app = client.application
    session = new_session(client, owner)
    token = mint(client, owner, session["session_id"])["token"]
    (row,) = stored_keys(first_app)
    private_d = json.loads(_b64(token.split(".")[0]))  # the header names the kid
    assert row["kid"] == private_d["kid"]
    assert row["sealed_jwk"].startswith("v1:")
    assert '"d"' not in row["sealed_jwk"] and "Ed25519" not in row["sealed_jwk"]
    assert not key_dir(first_app).exists()  # no key file anywhere

    restarted = app_factory()  # same database, new process state
    restarted_keys = restarted.test_client().get("/.well-known/jwks.json").get_json()
    assert restarted_keys == published(client)
    verify_with_jwks(token, restarted_keys)


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_rotation_keeps_old_tokens_verifiable_and_signs_with_the_new_key(
    app, client, owner, frozen_clock
):
    start = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
    frozen_clock(start)
    session = new_session(client, owner)
    old = mint(client, owner, session["session_id"])["token"]
    old_kid = verify_with_jwks(old, published(client), now=int(start.timestamp())).header["kid"]

    frozen_clock(start + timedelta(minutes=1))
    with app.app_context():
        new_kid = chatkit.rotate_keys()
    assert new_kid != old_kid
    new = mint(client, owner, session["session_id"])["token"]
    keys = published(client)
    assert {key["kid"] for key in keys["keys"]} == {old_kid, new_kid}
    now = int((start + timedelta(minutes=1)).timestamp())
    assert verify_with_jwks(new, keys, now=now).header["kid"] == new_kid
    verify_with_jwks(old, keys, now=now)

    # Once every token of the old key has expired (retired at 08:01 + TTL 600 s) it goes.
    frozen_clock(start + timedelta(minutes=11))
    assert [key["kid"] for key in published(client)["keys"]] == [new_kid]
    with app.app_context():
        assert chatkit.prune_keys() == [old_kid]
    assert [row["kid"] for row in stored_keys(app)] == [new_kid]


@pytest.mark.parametrize("config_overrides", [{"CHATKIT_KEYS_CACHE_SECONDS": 0}])
def test_a_rotation_by_another_process_is_noticed(app_factory, client, owner):
    session = new_session(client, owner)
    before = verify_with_jwks(
        mint(client, owner, session["session_id"])["token"], published(client)
    )
    other_process = app_factory()  # another worker / the CLI on the same instance folder
    with other_process.app_context():
        new_kid = chatkit.rotate_keys()
    after = verify_with_jwks(mint(client, owner, session["session_id"])["token"], published(client))
    assert before.header["kid"] != new_kid == after.header["kid"]


def test_concurrent_first_use_creates_exactly_one_key(app):
    with app.app_context():
        store = chatkit.key_store()
    barrier = threading.Barrier(8)
    kids: list[str] = []

    def first_use():
        barrier.wait()
        kids.append(store.current().kid)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(kids)) == 1
    assert len(stored_keys(app)) == 1


def test_the_token_never_reaches_the_logs(client, owner, events, capfd):
    session = new_session(client, owner)
    token = mint(client, owner, session["session_id"])["token"]
    out, err = capfd.readouterr()
    assert token not in out + err
    assert token not in "".join(events.lines())
    assert token.split(".")[2] not in out + err
