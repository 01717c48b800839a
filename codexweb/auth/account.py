"""What a logged-in user does to their own account: change the password or the email address,
see and end their logins, delete the account.

Shared by the JSON API (`api.py`) and the /account page (`account_views.py`). Every change
that matters is confirmed with the current password, checked here (`wrong_password`: the API
answers it as 400 `invalid_credentials`, the page under the password field). The functions
commit their own changes, raise `AccountError`/`TokenError`, and emit events with ids only.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy.exc import IntegrityError

from ..clock import utcnow
from ..extensions import db
from ..logging import emit
from ..models import Login, User
from . import mail
from .accounts import (
    AccountError,
    check_new_password,
    delete_account,
    email_problem,
    find_user_by_email,
    hash_password,
    normalise_email,
    password_matches,
)
from .logins import end_all_logins, end_login, live_logins
from .once import consume_once
from .tokens import TokenError, fingerprint, read_email_change_token

WRONG_PASSWORD = "The password is wrong."  # noqa: S105 (a message, not a password)
SAME_EMAIL = "That is already your email address."


def confirm_password(user: User, password: str) -> None:
    """`wrong_password` unless `password` is the user's (one argon2id either way). An account
    made by single sign-on has no password to confirm with: it sets one by a reset first."""
    if not password_matches(user, password):
        emit("auth.password.confirm_failed", logging.WARNING, user_id=user.id)
        raise AccountError("wrong_password", WRONG_PASSWORD)


# Password --------------------------------------------------------------------------------


def change_password(
    user: User, current_password: str, new_password: str, *, keep_login: str | None
) -> User:
    """Set a new password; every login of the user ends but `keep_login` (the one asking).

    Reset links mailed before are bound to the old hash, so they die with it.
    """
    confirm_password(user, current_password)
    check_new_password(new_password)
    user.password_hash = hash_password(new_password)
    ended = end_all_logins(user.id, keep=keep_login)
    emit("auth.password.changed", user_id=user.id, logins_ended=ended)
    return user


# Email address ---------------------------------------------------------------------------


def request_email_change(user: User, password: str, new_email: str) -> str:
    """Mail a confirmation link to `new_email` and a notice to the address in use; the address
    itself changes only when the link is opened (`confirm_email_change`). Returns the
    normalised new address.

    A taken address is `email_taken`: the person asking proved the password, so telling them
    is no enumeration a registration would not allow too.
    """
    confirm_password(user, password)
    new_email = _new_address(user, new_email)
    mail.queue_email_change(user, new_email)
    db.session.commit()
    emit("auth.email.change_requested", user_id=user.id)
    return new_email


def _new_address(user: User, new_email: str) -> str:
    new_email = normalise_email(new_email)
    problem = email_problem(new_email)
    if problem:
        raise AccountError("invalid_email", problem)
    if new_email == user.email:
        raise AccountError("invalid_email", SAME_EMAIL)
    if find_user_by_email(new_email) is not None:
        raise AccountError("email_taken")
    return new_email


def confirm_email_change(token: str) -> User:
    """Move the account to the token's new address, verified; the token works once, also when
    opened several times at the same instant (`consume_once`).

    The token is bound to the address and the password the user had when asking: once
    either changed (the address by this link or another), it is `token_invalid`.
    Verification links of the old address die with it (they are bound to the address too).
    An address taken meanwhile is `email_taken`, and the link stays unused.
    """
    claim = read_email_change_token(token)
    user = db.session.get(User, claim.user_id)
    if (
        user is None
        or not hmac.compare_digest(claim.email_fingerprint, fingerprint(user.email))
        or not hmac.compare_digest(claim.password_fingerprint, fingerprint(user.password_hash))
    ):
        raise TokenError("token_invalid")
    holder = find_user_by_email(claim.new_email)
    # The holder may be this very user, moved there by a simultaneous use of this link: then
    # `consume_once` answers (`token_invalid`), not the address.
    if holder is not None and holder.id != user.id:
        raise AccountError("email_taken")
    max_age = timedelta(seconds=int(current_app.config["EMAIL_VERIFY_MAX_AGE"]))
    consume_once("email_change", token, expires_at=utcnow() + max_age)
    user.email = claim.new_email
    user.email_verified_at = utcnow()
    try:
        db.session.commit()
    except IntegrityError:
        # Registered between our check and this commit: the unique index decides.
        db.session.rollback()
        raise AccountError("email_taken") from None
    emit("auth.email.changed", user_id=user.id)
    return user


# Logins ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginView:
    """A live login as its owner sees it."""

    id: str
    kind: str
    created_at: datetime
    last_used_at: datetime
    user_agent: str | None
    current: bool


def logins_of(user: User, *, current_login: str | None) -> list[LoginView]:
    """The user's live logins, most recently used first; `current` marks the one asking."""
    return [_view(login, current_login) for login in live_logins(user.id)]


def _view(login: Login, current_login: str | None) -> LoginView:
    return LoginView(
        id=login.id,
        kind=login.kind,
        created_at=login.created_at,
        last_used_at=login.last_used_at,
        user_agent=login.user_agent,
        current=login.id == current_login,
    )


def end_own_login(user: User, login_id: str) -> None:
    """End one of the user's logins everywhere; `unknown_login` when it is not a live login of
    theirs (someone else's is as unknown as one that never was)."""
    if not end_login(login_id, user_id=user.id):
        raise AccountError("unknown_login", "No such login.")


def end_other_logins(user: User, *, keep_login: str | None) -> int:
    """End every login of the user but the one asking; how many ended."""
    return end_all_logins(user.id, keep=keep_login)


# Deleting the account --------------------------------------------------------------------


def delete_own_account(user: User, password: str) -> None:
    """Delete the account after the password confirms it: its Codex sessions, their ChatKit
    sessions, logins, refresh tokens, identities and queued mail go with it (ON DELETE
    CASCADE), and the address may register again."""
    confirm_password(user, password)
    delete_account(user)
