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
import re
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
EMAIL_MAX_LENGTH = 254
# Deliberately loose: one @, no spaces or control characters (PostgreSQL refuses NUL), a dot
# in the domain. The verification email is the real test of an address; this only catches
# typos and junk.
_EMAIL_SHAPE = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")

DISABLED_DETAIL = "This account is disabled. Contact your administrator."


class AccountError(Exception):
    """A rule said no. `code`: `email_taken`, `invalid_credentials`, `account_disabled`
    (CONTRACT.md §5); `invalid_email` / `invalid_password` (input the API and the forms
    refuse before asking, the CLI through these rules); `unknown_user` (an operator named
    nobody); or `refresh_invalid` / `refresh_reused`, which callers answer as a 401.
    `detail` says it for a person where the code alone would not."""

    def __init__(self, code: str, detail: str | None = None) -> None:
        super().__init__(detail or code)
        self.code = code
        self.detail = detail


# Users and passwords ---------------------------------------------------------------------


def normalise_email(email: str) -> str:
    """Emails are trimmed and compared case-insensitively: we store them lower-cased."""
    return email.strip().lower()


def email_problem(email: str) -> str | None:
    """Why `email` (already normalised) is not an address, or None when it looks like one."""
    if not email:
        return "Enter your email address."
    if len(email) > EMAIL_MAX_LENGTH or not _EMAIL_SHAPE.match(email):
        return "Enter a valid email address."
    return None


def check_new_password(password: str) -> None:
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise AccountError(
            "invalid_password",
            f"The password needs at least {PASSWORD_MIN_LENGTH} characters "
            f"(and at most {PASSWORD_MAX_LENGTH}).",
        )


# argon2id at OWASP's minimum (19 MiB, 2 passes, 1 lane): the Password Storage Cheat Sheet's
# first choice. Werkzeug's scrypt hashes of older accounts still verify and are replaced by
# an argon2id hash at the next successful login.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


# Accounts made by single sign-on have no password: their hash starts with this marker, which
# no hash function produces, followed by random text, so nothing ever matches it.
UNUSABLE_PASSWORD_PREFIX = "!"  # noqa: S105 (a marker, not a password)


def unusable_password_hash() -> str:
    return UNUSABLE_PASSWORD_PREFIX + secrets.token_urlsafe(32)


def has_usable_password(user: User) -> bool:
    return not user.password_hash.startswith(UNUSABLE_PASSWORD_PREFIX)


def password_matches(user: User, password: str) -> bool:
    if not has_usable_password(user):
        # Cost the same argon2id as a wrong password: the answer must not tell SSO-only
        # accounts apart.
        hash_matches(_unknown_user_hash(), password)
        return False
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


def create_user(email: str, password: str | None, *, verified: bool = False) -> User:
    """Add a user to the session (the caller commits); without a password it is unusable."""
    user = User(
        email=normalise_email(email),
        password_hash=hash_password(password) if password is not None else unusable_password_hash(),
        email_verified_at=utcnow() if verified else None,
    )
    db.session.add(user)
    return user


def register_user(email: str, password: str) -> User:
    """Create an unverified account and queue its verification email, in one transaction.

    A taken address is `email_taken`, also when two registrations race (the unique index
    decides).
    """
    user = _add_user(email, password, verified=False, send_link=True)
    emit("auth.user.registered", user_id=user.id)
    return user


def _add_user(email: str, password: str, *, verified: bool, send_link: bool = False) -> User:
    """Create and commit a user, with its verification email queued in the same transaction
    when `send_link`; `email_taken` also when two creations race (the unique index decides)."""
    if find_user_by_email(email) is not None:
        raise AccountError("email_taken")
    user = create_user(email, password, verified=verified)
    try:
        db.session.flush()
        if send_link:
            _queue_verification(user)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise AccountError("email_taken") from None
    return user


def authenticate(email: str, password: str) -> User:
    """The user with that email and password, or `invalid_credentials`.

    An unknown email and a wrong password cost the same (one argon2id) and look the same. A
    disabled account says so only to someone who knows its password: a guesser learns
    nothing more than from any other wrong password. An outdated hash (werkzeug's scrypt,
    weaker parameters) is upgraded on the way in.
    """
    user = find_user_by_email(email)
    if user is None:
        hash_matches(_unknown_user_hash(), password)
        emit("auth.login.failed", logging.WARNING, user_id=None, reason="unknown_email")
        raise AccountError("invalid_credentials")
    if not password_matches(user, password):
        emit("auth.login.failed", logging.WARNING, user_id=user.id, reason="wrong_password")
        raise AccountError("invalid_credentials")
    ensure_may_log_in(user)
    if hash_is_outdated(user.password_hash):
        user.password_hash = hash_password(password)
        db.session.commit()
        emit("auth.password.rehashed", user_id=user.id)
    return user


def ensure_may_log_in(user: User) -> None:
    """`account_disabled` for a disabled account: every way in (password, single sign-on)
    asks this once it knows who is logging in."""
    if user.disabled_at is not None:
        emit("auth.login.failed", logging.WARNING, user_id=user.id, reason="disabled")
        raise AccountError("account_disabled", DISABLED_DETAIL)


# Email verification ----------------------------------------------------------------------


def send_verification(user: User) -> None:
    """Queue a fresh verification link for an unverified user (nothing for a verified one)."""
    if not user.email_verified:
        _queue_verification(user)
        db.session.commit()


def _queue_verification(user: User) -> None:
    mail.queue_verification(user)
    # The pages tell someone who was never sent a link to ask for one.
    user.verification_sent_at = utcnow()


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


# Operators (`flask users …`) -----------------------------------------------------------


def create_account(
    email: str, password: str, *, verified: bool = False, send_link: bool = False
) -> User:
    """An operator's new account: the checks of registration, verified or not, and the
    verification email only when asked (`send_link`)."""
    email = normalise_email(email)
    problem = email_problem(email)
    if problem:
        raise AccountError("invalid_email", problem)
    check_new_password(password)
    user = _add_user(email, password, verified=verified, send_link=send_link)
    emit("auth.user.created", user_id=user.id, verified=verified)
    return user


def account_for(email: str) -> User:
    """The account with that address, or `unknown_user`."""
    user = find_user_by_email(email)
    if user is None:
        raise AccountError("unknown_user", f"No account uses {normalise_email(email)}.")
    return user


def list_accounts() -> list[User]:
    return list(db.session.execute(db.select(User).order_by(User.created_at, User.email)).scalars())


def set_password(user: User, password: str) -> None:
    """An operator sets a password: like a reset, every login of the user ends."""
    check_new_password(password)
    user.password_hash = hash_password(password)
    end_all_logins(user.id)
    emit("auth.password.set", user_id=user.id)


def disable_account(user: User) -> None:
    """Refuse the user's logins from now on and end the ones they have."""
    if user.disabled_at is None:
        user.disabled_at = utcnow()
    end_all_logins(user.id)
    emit("auth.user.disabled", user_id=user.id)


def enable_account(user: User) -> None:
    user.disabled_at = None
    db.session.commit()
    emit("auth.user.enabled", user_id=user.id)


def delete_account(user: User) -> None:
    """Delete the user; their sessions and tokens go with them (ON DELETE CASCADE), and the
    address may register again."""
    user_id = user.id
    db.session.delete(user)
    db.session.commit()
    emit("auth.user.deleted", user_id=user_id)
