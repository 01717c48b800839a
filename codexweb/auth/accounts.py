"""Account rules, shared by the JSON API, the pages and the CLI.

Registering, checking a password, verifying an email address, the refresh-token families
(rotation and reuse detection) and password resets each live in exactly one function here.
The functions commit their own changes, raise `AccountError`/`TokenError` for the caller to
render, and emit the structured events of CONTRACT.md §7 (ids only: never a password, a token
or a link).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app, has_request_context, session
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from ..clock import utcnow
from ..extensions import db
from ..ids import new_id
from ..logging import emit
from ..models import RefreshToken, User
from . import mail
from .tokens import (
    TokenError,
    fingerprint,
    issue_access_token,
    read_reset_token,
    read_verification_token,
)

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


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


# Accounts made by single sign-on have no password: their hash starts with this marker, which
# no hash function produces, followed by random text, so nothing ever matches it.
UNUSABLE_PASSWORD_PREFIX = "!"  # noqa: S105 (a marker, not a password)


def unusable_password_hash() -> str:
    return UNUSABLE_PASSWORD_PREFIX + secrets.token_urlsafe(32)


def has_usable_password(user: User) -> bool:
    return not user.password_hash.startswith(UNUSABLE_PASSWORD_PREFIX)


def password_matches(user: User, password: str) -> bool:
    if not has_usable_password(user):
        # Cost the same scrypt as a wrong password: the answer must not tell SSO-only
        # accounts apart.
        check_password_hash(_UNKNOWN_USER_HASH, password)
        return False
    return check_password_hash(user.password_hash, password)


# Checked against when the email is unknown, so both failures cost one scrypt with the same
# parameters. The hash of a random, forgotten string: it belongs to no account, and matching
# it would log nobody in.
_UNKNOWN_USER_HASH = (
    "scrypt:32768:8:1$DHZcZZB9M69uhd0Q$d34b720d215481874025ada019"
    "7348f0c8ee11aa42bc298ea2cd3d2cfc7efdca92a0ef7082fce9201d5fa7f258d641ef73e9728042012563693aae3bf878a861"
)


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


# The login session remembers which password it was opened with (a fingerprint of the hash).
SESSION_BINDING_KEY = "_login_binding"


def login_session_binding(user: User) -> str:
    return fingerprint(user.password_hash)


def load_user(user_id: str) -> User | None:
    """flask-login's user loader: a login session dies when the password changes.

    A reset revokes every refresh token; this makes it end every browser session too. Our
    login pages always bind the session; one without a binding can only have been made by
    code holding SECRET_KEY (tests forging a login), so it is taken as it is.
    """
    user = db.session.get(User, user_id)
    if user is None or user.disabled_at is not None:
        return None
    if not has_request_context():
        return user
    bound = session.get(SESSION_BINDING_KEY)
    if bound is not None and not hmac.compare_digest(str(bound), login_session_binding(user)):
        return None
    return user


def register_user(email: str, password: str) -> User:
    """Create an unverified account and send its verification email.

    A taken address is `email_taken`, also when two registrations race (the unique index
    decides). A mail failure does not lose the account: it is logged, and the user can ask
    for another email.
    """
    user = _add_user(email, password, verified=False)
    emit("auth.user.registered", user_id=user.id)
    send_verification(user)
    return user


def _add_user(email: str, password: str, *, verified: bool) -> User:
    """Create and commit a user; `email_taken` also when two creations race (the unique
    index decides)."""
    if find_user_by_email(email) is not None:
        raise AccountError("email_taken")
    user = create_user(email, password, verified=verified)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise AccountError("email_taken") from None
    return user


def authenticate(email: str, password: str) -> User:
    """The user with that email and password, or `invalid_credentials`.

    An unknown email and a wrong password cost the same (one scrypt) and look the same. A
    disabled account says so only to someone who knows its password: a guesser learns
    nothing more than from any other wrong password.
    """
    user = find_user_by_email(email)
    if user is None:
        check_password_hash(_UNKNOWN_USER_HASH, password)
        emit("auth.login.failed", logging.WARNING, user_id=None, reason="unknown_email")
        raise AccountError("invalid_credentials")
    if not password_matches(user, password):
        emit("auth.login.failed", logging.WARNING, user_id=user.id, reason="wrong_password")
        raise AccountError("invalid_credentials")
    ensure_may_log_in(user)
    return user


def ensure_may_log_in(user: User) -> None:
    """`account_disabled` for a disabled account: every way in (password, single sign-on)
    asks this once it knows who is logging in."""
    if user.disabled_at is not None:
        emit("auth.login.failed", logging.WARNING, user_id=user.id, reason="disabled")
        raise AccountError("account_disabled", DISABLED_DETAIL)


# Email verification ----------------------------------------------------------------------


def send_verification(user: User) -> bool:
    """Mail a fresh verification link to an unverified user; False when sending failed."""
    if user.email_verified:
        return False
    sent = mail.send_verification_email(user)
    if sent:
        # The pages tell someone who was never sent a link to ask for one.
        user.verification_sent_at = utcnow()
        db.session.commit()
    return sent


def resend_verification_to(email: str) -> None:
    """Resend for an address given by an anonymous caller; silent about unknown addresses."""
    user = find_user_by_email(email)
    if user is not None:
        send_verification(user)


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


# Access and refresh tokens ---------------------------------------------------------------


@dataclass(frozen=True)
class AccessGrant:
    """What a login or a refresh hands out. `refresh_token` is the raw cookie value."""

    user: User
    access_token: str
    expires_in: int
    expires_at: datetime
    refresh_token: str
    family_id: str


def _hash_refresh(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _new_refresh_token(user: User, family_id: str) -> str:
    raw = secrets.token_urlsafe(32)
    db.session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=_hash_refresh(raw),
            expires_at=utcnow() + timedelta(seconds=current_app.config["REFRESH_TOKEN_TTL"]),
        )
    )
    return raw


def _grant(user: User, refresh_token: str, family_id: str) -> AccessGrant:
    ttl = int(current_app.config["ACCESS_TOKEN_TTL"])
    return AccessGrant(
        user=user,
        access_token=issue_access_token(user.id),
        expires_in=ttl,
        expires_at=utcnow() + timedelta(seconds=ttl),
        refresh_token=refresh_token,
        family_id=family_id,
    )


def start_refresh_family(user: User, *, via: str, method: str = "password") -> AccessGrant:
    """A successful login: a new refresh-token family and an access token.

    `method` says how the user proved who they are: `password` or `oidc` (single sign-on).
    """
    family_id = new_id("rtf")
    raw = _new_refresh_token(user, family_id)
    user.last_login_at = utcnow()
    db.session.commit()
    emit(
        "auth.login.succeeded",
        user_id=user.id,
        via=via,
        method=method,
        email_verified=user.email_verified,
    )
    return _grant(user, raw, family_id)


def rotate_refresh_token(raw: str | None) -> AccessGrant:
    """Trade a refresh token for a new one and a new access token.

    A token that was already rotated is a stolen or replayed copy: its whole family is revoked
    (`refresh_reused`), which logs out the thief and the owner alike. The rotation itself is a
    conditional UPDATE, so of two concurrent refreshes with one token exactly one wins.
    """
    record = _find_refresh(raw)
    if record is None or record.revoked_at is not None or record.expires_at <= utcnow():
        raise AccountError("refresh_invalid")
    if record.rotated_at is not None:
        _reuse_detected(record)
    user = db.session.get(User, record.user_id)
    if user is None or user.disabled_at is not None:
        raise AccountError("refresh_invalid")
    claimed = db.session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == record.id,
            RefreshToken.rotated_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(rotated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        db.session.rollback()
        _reuse_detected(record)
    new_raw = _new_refresh_token(user, record.family_id)
    db.session.commit()
    emit("auth.token.refreshed", user_id=user.id, family_id=record.family_id)
    return _grant(user, new_raw, record.family_id)


def _reuse_detected(record: RefreshToken) -> None:
    revoke_family(record.family_id)
    emit(
        "auth.refresh.reuse_detected",
        logging.WARNING,
        user_id=record.user_id,
        family_id=record.family_id,
    )
    raise AccountError("refresh_reused")


def _find_refresh(raw: str | None) -> RefreshToken | None:
    if not raw or len(raw) > 512:
        return None
    return db.session.execute(
        db.select(RefreshToken).where(RefreshToken.token_hash == _hash_refresh(raw))
    ).scalar_one_or_none()


def revoke_family(family_id: str) -> None:
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def log_out(*, user_id: str | None, refresh_token: str | None, family_id: str | None) -> None:
    """End one login: revoke its refresh-token family (found by cookie or remembered id)."""
    record = _find_refresh(refresh_token)
    family = record.family_id if record else family_id
    if family:
        revoke_family(family)
    emit("auth.logout", user_id=user_id or (record.user_id if record else None))


def revoke_all_refresh_tokens(user: User) -> None:
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )


# Password reset --------------------------------------------------------------------------


def request_password_reset(email: str) -> None:
    """Mail a reset link to a known address; say nothing either way (no enumeration)."""
    user = find_user_by_email(email)
    emit("auth.password.reset_requested", user_id=user.id if user else None)
    if user is not None:
        mail.send_password_reset_email(user)


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
    """Set a new password with a reset token; every refresh token of the user dies.

    The link reached the user's inbox, which proves the address as well as a verification
    link would: an unverified account becomes verified.
    """
    user = check_reset_token(token)
    user.password_hash = hash_password(new_password)
    if not user.email_verified:
        user.email_verified_at = utcnow()
    revoke_all_refresh_tokens(user)
    db.session.commit()
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
    user = _add_user(email, password, verified=verified)
    emit("auth.user.created", user_id=user.id, verified=verified)
    if send_link:
        send_verification(user)
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
    """An operator sets a password: like a reset, every login of the user ends (refresh
    tokens are revoked; browser sessions were bound to the old password's hash)."""
    check_new_password(password)
    user.password_hash = hash_password(password)
    revoke_all_refresh_tokens(user)
    db.session.commit()
    emit("auth.password.set", user_id=user.id)


def disable_account(user: User) -> None:
    """Refuse the user's logins from now on and end the ones they have."""
    if user.disabled_at is None:
        user.disabled_at = utcnow()
    revoke_all_refresh_tokens(user)
    db.session.commit()
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
