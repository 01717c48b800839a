"""Account rules, shared by the JSON API, the pages and the CLI.

Registering, checking a password, verifying an email address and password resets each live
in exactly one function here (logins and their refresh families: `logins.py`).
The functions commit their own changes, raise `AccountError`/`TokenError` for the caller to
render, and emit the structured events of CONTRACT.md §7 (ids only: never a password, a token
or a link).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash

from ..clock import utcnow
from ..extensions import db
from ..logging import emit
from ..models import User
from . import mail
from .logins import end_all_logins
from .once import consume_once
from .tokens import TokenError, fingerprint, read_reset_token, read_verification_token

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 256


class AccountError(Exception):
    """A rule said no. `code`: `email_taken` or `invalid_credentials` (CONTRACT.md §5)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# Users and passwords ---------------------------------------------------------------------


def normalise_email(email: str) -> str:
    """Emails are trimmed and compared case-insensitively: we store them lower-cased."""
    return email.strip().lower()


# argon2id at OWASP's minimum (19 MiB, 2 passes, 1 lane): the Password Storage Cheat Sheet's
# first choice. Werkzeug's scrypt hashes of older accounts still verify and are replaced by
# an argon2id hash at the next successful login.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def password_matches(user: User, password: str) -> bool:
    return hash_matches(user.password_hash, password)


def hash_matches(stored: str, password: str) -> bool:
    if not stored.startswith("$argon2"):
        return check_password_hash(stored, password)
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_is_outdated(stored: str) -> bool:
    """Not argon2id at today's parameters: replace it while the password is at hand."""
    return not stored.startswith("$argon2id$") or _HASHER.check_needs_rehash(stored)


@cache
def _unknown_user_hash() -> str:
    """Checked against when the email is unknown, so both failures cost one argon2id with the
    same parameters. The hash of a random, forgotten string: matching it logs nobody in."""
    return hash_password(secrets.token_urlsafe(32))


def find_user_by_email(email: str) -> User | None:
    return db.session.execute(
        db.select(User).where(User.email == normalise_email(email))
    ).scalar_one_or_none()


def create_user(email: str, password: str, *, verified: bool = False) -> User:
    """Add a user to the session (the caller commits)."""
    user = User(
        email=normalise_email(email),
        password_hash=hash_password(password),
        email_verified_at=utcnow() if verified else None,
    )
    db.session.add(user)
    return user


def register_user(email: str, password: str) -> User:
    """Create an unverified account and queue its verification email, in one transaction.

    A taken address is `email_taken`, also when two registrations race (the unique index
    decides).
    """
    if find_user_by_email(email) is not None:
        raise AccountError("email_taken")
    user = create_user(email, password)
    try:
        db.session.flush()
        mail.queue_verification(user)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise AccountError("email_taken") from None
    emit("auth.user.registered", user_id=user.id)
    return user


def authenticate(email: str, password: str) -> User:
    """The user with that email and password, or `invalid_credentials`.

    An unknown email and a wrong password cost the same (one argon2id) and look the same. An
    outdated hash (werkzeug's scrypt, weaker parameters) is upgraded on the way in.
    """
    user = find_user_by_email(email)
    if user is None:
        hash_matches(_unknown_user_hash(), password)
        emit("auth.login.failed", logging.WARNING, user_id=None, reason="unknown_email")
        raise AccountError("invalid_credentials")
    if not password_matches(user, password):
        emit("auth.login.failed", logging.WARNING, user_id=user.id, reason="wrong_password")
        raise AccountError("invalid_credentials")
    if hash_is_outdated(user.password_hash):
        user.password_hash = hash_password(password)
        db.session.commit()
        emit("auth.password.rehashed", user_id=user.id)
    return user


# Email verification ----------------------------------------------------------------------


def send_verification(user: User) -> None:
    """Queue a fresh verification link for an unverified user (nothing for a verified one)."""
    if not user.email_verified:
        mail.queue_verification(user)
        db.session.commit()


def resend_verification_to(email: str) -> None:
    """Resend for an address given by an anonymous caller; silent about unknown addresses,
    and as quick: a stand-in is queued for them (and for verified ones) all the same."""
    user = find_user_by_email(email)
    mail.queue_verification(user if user is not None and not user.email_verified else None)
    db.session.commit()


def verify_email(token: str) -> User:
    """Mark the token's user verified; idempotent. `TokenError` for a bad or expired token.

    The token is bound to the address it was sent to: once the address changes, old links
    are `token_invalid`. Verifying never touches logins or tokens.
    """
    claim = read_verification_token(token)
    user = db.session.get(User, claim.user_id)
    if user is None or not hmac.compare_digest(claim.email_fingerprint, fingerprint(user.email)):
        raise TokenError("token_invalid")
    if not user.email_verified:
        user.email_verified_at = utcnow()
        db.session.commit()
        emit("auth.email.verified", user_id=user.id)
    return user


# Password reset --------------------------------------------------------------------------


def request_password_reset(email: str) -> None:
    """Mail a reset link to a known address; say nothing either way (no enumeration), and
    take as long either way: an unknown address queues a stand-in the worker drops."""
    user = find_user_by_email(email)
    emit("auth.password.reset_requested", user_id=user.id if user else None)
    mail.queue_password_reset(user)
    db.session.commit()


def check_reset_token(token: str) -> User:
    """The user a reset token is for, while it is unused and fresh; `TokenError` otherwise.

    The token is bound to the password hash it was issued against: once the password
    changes (by this reset or any other), the token is `token_invalid`.
    """
    claim = read_reset_token(token)
    user = db.session.get(User, claim.user_id)
    if user is None or not hmac.compare_digest(
        claim.password_fingerprint, fingerprint(user.password_hash)
    ):
        raise TokenError("token_invalid")
    return user


def reset_password(token: str, new_password: str) -> User:
    """Set a new password with a reset token; every login of the user ends with it.

    The token is used once even when it is presented several times at the same instant
    (`consume_once`). The link reached the user's inbox, which proves the address as well as
    a verification link would: an unverified account becomes verified.
    """
    user = check_reset_token(token)
    # Hashed before the token is claimed: the claim opens the write, kept short.
    new_hash = hash_password(new_password)
    max_age = timedelta(seconds=int(current_app.config["PASSWORD_RESET_MAX_AGE"]))
    consume_once("password_reset", token, expires_at=utcnow() + max_age)
    user.password_hash = new_hash
    if not user.email_verified:
        user.email_verified_at = utcnow()
    end_all_logins(user.id)
    emit("auth.password.reset", user_id=user.id)
    return user
