"""Signed tokens of the accounts flow (itsdangerous), one salt per purpose.

- access tokens: short-lived Bearer credentials carrying the user id and the login that
  issued them (refused by the guard once that login has ended);
- email verification tokens: bound to the user and to the email address they were sent to,
  so changing the address kills old links;
- password reset tokens: bound to the current password hash, so a token works once;
- email change tokens: carry the new address, bound to the user and the address they had
  when asking, so a link dies once the address changes (by it or by any other link).

This module knows nothing of requests or the database: callers pass what the token is
checked against and receive the payload or a `TokenError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flask import current_app
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

ACCESS_SALT = "codexweb.access-token.v1"
VERIFY_SALT = "codexweb.email-verify.v1"
RESET_SALT = "codexweb.password-reset.v1"
EMAIL_CHANGE_SALT = "codexweb.email-change.v1"


class TokenError(Exception):
    """A token that cannot be used; `code` is `token_expired` or `token_invalid`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _serializer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=salt)


def fingerprint(value: str) -> str:
    """A short, stable digest to bind a token to a value without putting the value in it."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


# Access tokens ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessClaim:
    user_id: str
    login_id: str


def issue_access_token(user_id: str, login_id: str) -> str:
    return _serializer(ACCESS_SALT).dumps({"uid": user_id, "lid": login_id})


def read_access_token(token: str) -> AccessClaim | None:
    """The claim of a valid, unexpired access token; None for anything else.

    Tokens minted before logins existed carry no login id: nothing could end them, so they
    are refused like any other bad token.
    """
    try:
        payload = _serializer(ACCESS_SALT).loads(
            token, max_age=current_app.config["ACCESS_TOKEN_TTL"]
        )
    except BadData:
        return None
    if not isinstance(payload, dict):
        return None
    user_id, login_id = payload.get("uid"), payload.get("lid")
    if not isinstance(user_id, str) or not isinstance(login_id, str):
        return None
    return AccessClaim(user_id=user_id, login_id=login_id)


# Email verification ----------------------------------------------------------------------


@dataclass(frozen=True)
class VerificationClaim:
    user_id: str
    email_fingerprint: str


def issue_verification_token(user_id: str, email: str) -> str:
    return _serializer(VERIFY_SALT).dumps({"uid": user_id, "em": fingerprint(email)})


def read_verification_token(token: str) -> VerificationClaim:
    payload = _load(VERIFY_SALT, token, current_app.config["EMAIL_VERIFY_MAX_AGE"])
    return VerificationClaim(user_id=payload["uid"], email_fingerprint=payload["em"])


# Password reset --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetClaim:
    user_id: str
    password_fingerprint: str


def issue_reset_token(user_id: str, password_hash: str) -> str:
    return _serializer(RESET_SALT).dumps({"uid": user_id, "pw": fingerprint(password_hash)})


def read_reset_token(token: str) -> ResetClaim:
    payload = _load(RESET_SALT, token, current_app.config["PASSWORD_RESET_MAX_AGE"])
    return ResetClaim(user_id=payload["uid"], password_fingerprint=payload["pw"])


# Email change ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailChangeClaim:
    user_id: str
    email_fingerprint: str
    password_fingerprint: str
    new_email: str


def issue_email_change_token(
    user_id: str, current_email: str, password_hash: str, new_email: str
) -> str:
    """Signed, not encrypted: the new address is readable in the link, which only ever goes
    to that very address. Bound to the address and the password of the moment: a link asked
    for by whoever held the account before its password changed (or was taken away when
    single sign-on proved the address someone else's) dies with it."""
    return _serializer(EMAIL_CHANGE_SALT).dumps(
        {
            "uid": user_id,
            "em": fingerprint(current_email),
            "pw": fingerprint(password_hash),
            "new": new_email,
        }
    )


def read_email_change_token(token: str) -> EmailChangeClaim:
    payload = _load(EMAIL_CHANGE_SALT, token, current_app.config["EMAIL_VERIFY_MAX_AGE"])
    if not all(key in payload for key in ("uid", "em", "pw", "new")):
        raise TokenError("token_invalid")
    return EmailChangeClaim(
        user_id=payload["uid"],
        email_fingerprint=payload["em"],
        password_fingerprint=payload["pw"],
        new_email=payload["new"],
    )


def _load(salt: str, token: str, max_age: int) -> dict:
    try:
        payload = _serializer(salt).loads(token, max_age=max_age)
    except SignatureExpired as error:
        raise TokenError("token_expired") from error
    except BadData as error:
        raise TokenError("token_invalid") from error
    if not isinstance(payload, dict) or not all(isinstance(v, str) for v in payload.values()):
        raise TokenError("token_invalid")
    return payload
