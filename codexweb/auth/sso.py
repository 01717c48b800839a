"""Single sign-on accounts: who a provider's user is here, and the identities a user links.

An identity is (issuer, subject): the provider's own, stable name for its user. Addresses
change at the provider, so an address never finds an identity; it is used once, at the first
login, to create an account or to link to an existing one, and linking to an existing password
account needs the provider to vouch for the address (`email_verified`) in a domain the
operator trusts (`OIDC_ALLOWED_DOMAINS`), and the account not to be linked to another user of
the same provider already. Linking an account whose address was never verified takes every
way in its registrant set up (password, logins, linked provider accounts, a pending email
change): whoever registered it never proved the address. Anyone else links from their account
page, after proving the password.

The functions commit their own changes and raise `SsoError` for the pages to explain.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import current_app
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from ..clock import utcnow
from ..extensions import db
from ..logging import emit
from ..models import Identity, User
from .accounts import (
    create_user,
    find_user_by_email,
    has_usable_password,
    send_verification,
    unusable_password_hash,
)
from .logins import end_all_logins


class SsoError(Exception):
    """Single sign-on said no. `code` names what happened; the pages say it in words.

    Protocol: `provider_unreachable`, `provider_error`, `state_mismatch`, `access_denied`,
    `invalid_id_token`, `email_missing`. Accounts: `email_unverified`, `domain_not_allowed` and
    `account_linked` (an account with that address exists and may not be linked this way: the
    last, because it already signs in as another user of this provider), `identity_in_use`
    (linked to someone else), `identity_not_found`, `password_required` (the last way in).
    """

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def sso_configured(config: Mapping[str, Any]) -> bool:
    return all(config.get(key) for key in ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET"))


def provider_vouches(claims: Mapping[str, Any]) -> bool:
    """The provider says it checked the address (some send the string "true")."""
    return claims.get("email_verified") in (True, "true")


def domain_allowed(email: str) -> bool:
    allowed = {
        domain.strip().lower().lstrip("@") for domain in current_app.config["OIDC_ALLOWED_DOMAINS"]
    }
    return email.rpartition("@")[2].lower() in allowed


def find_identity(issuer: str, subject: str) -> Identity | None:
    return db.session.execute(
        db.select(Identity).where(Identity.issuer == issuer, Identity.subject == subject)
    ).scalar_one_or_none()


# Signing in ------------------------------------------------------------------------------


def sign_in(issuer: str, claims: Mapping[str, Any]) -> User:
    """The user these verified ID token claims belong to, created or linked on first sight.

    A known (issuer, subject) is its user, whatever address the provider now reports. A new
    one gets a new account (verified when the provider vouches for the address, else the
    usual verification mail), or is linked to the password account with that address when
    the provider vouches for it and its domain is allowed.
    """
    subject = str(claims["sub"])
    identity = find_identity(issuer, subject)
    if identity is not None:
        return _returning(identity, claims)
    email = claims.get("email")
    if not email or "@" not in str(email):
        raise SsoError("email_missing")
    existing = find_user_by_email(str(email))
    if existing is not None:
        return _link_existing(existing, issuer, subject, claims)
    try:
        return _create_account(issuer, subject, str(email), vouched=provider_vouches(claims))
    except IntegrityError:
        # Two first logins of one person at once: the other request created the account.
        db.session.rollback()
        identity = find_identity(issuer, subject)
        if identity is None:
            raise
        return _returning(identity, claims)


def _returning(identity: Identity, claims: Mapping[str, Any]) -> User:
    identity.email = claims.get("email") or identity.email
    identity.last_login_at = utcnow()
    user = db.session.get(User, identity.user_id)
    db.session.commit()
    return user


def _link_existing(user: User, issuer: str, subject: str, claims: Mapping[str, Any]) -> User:
    if not provider_vouches(claims):
        _refuse_link(user, "email_unverified")
    if not domain_allowed(user.email):
        _refuse_link(user, "domain_not_allowed")
    never_verified = not user.email_verified
    if not never_verified and _has_identity_at(user, issuer):
        # Another of this provider's users held the address first (a mailbox given to a new
        # person, say): the address alone must not hand them that person's account.
        _refuse_link(user, "account_linked")
    removed = _take_from_registrant(user) if never_verified else []
    identity = _add_identity(user, issuer, subject, user.email)
    identity.last_login_at = utcnow()
    if never_verified:
        end_all_logins(user.id)  # commits, with everything above
    db.session.commit()
    for identity_id in removed:
        emit("auth.sso.identity_unlinked", user_id=user.id, identity_id=identity_id)
    emit("auth.sso.identity_linked", user_id=user.id, identity_id=identity.id, via="login")
    return user


def _take_from_registrant(user: User) -> list[str]:
    """An account whose address was never verified, now proved by the provider: verified,
    and every way in its registrant set up removed (password, provider accounts they linked;
    the caller ends the logins). An email change they asked for dies with the password
    (`tokens.issue_email_change_token`). Returns the removed identities' ids."""
    ids = _remove_identities(user)
    user.email_verified_at = utcnow()
    user.password_hash = unusable_password_hash()
    return ids


def _remove_identities(user: User) -> list[str]:
    """Delete every identity linked to the user (uncommitted); their ids."""
    ids = list(db.session.scalars(db.select(Identity.id).where(Identity.user_id == user.id)))
    db.session.execute(
        delete(Identity)
        .where(Identity.user_id == user.id)
        .execution_options(synchronize_session=False)
    )
    return ids


def _has_identity_at(user: User, issuer: str) -> bool:
    return (
        db.session.execute(
            db.select(Identity.id).where(Identity.user_id == user.id, Identity.issuer == issuer)
        ).first()
        is not None
    )


def _refuse_link(user: User, code: str) -> None:
    emit("auth.sso.link_refused", logging.WARNING, user_id=user.id, reason=code)
    raise SsoError(code)


def _create_account(issuer: str, subject: str, email: str, *, vouched: bool) -> User:
    user = create_user(email, None, verified=vouched)
    db.session.flush()
    identity = _add_identity(user, issuer, subject, user.email)
    identity.last_login_at = utcnow()
    db.session.commit()
    emit("auth.user.registered", user_id=user.id, method="oidc")
    emit("auth.sso.identity_linked", user_id=user.id, identity_id=identity.id, via="signup")
    send_verification(user)
    return user


def _add_identity(user: User, issuer: str, subject: str, email: str | None) -> Identity:
    identity = Identity(user_id=user.id, issuer=issuer, subject=subject, email=email)
    db.session.add(identity)
    return identity


# The account page's identities -----------------------------------------------------------


def list_identities(user: User) -> list[Identity]:
    """The user's linked identities, oldest first."""
    return list(
        db.session.execute(
            db.select(Identity)
            .where(Identity.user_id == user.id)
            .order_by(Identity.created_at, Identity.id)
        ).scalars()
    )


def link_identity(user: User, *, issuer: str, subject: str, email: str | None = None) -> Identity:
    """Link (issuer, subject) to a logged-in user; idempotent for their own identity.

    Here the user proved both sides (our login and the provider's), so neither the address
    nor its domain matters. An identity already linked to someone else is `identity_in_use`.
    """
    identity = find_identity(issuer, subject)
    if identity is not None:
        if identity.user_id != user.id:
            emit("auth.sso.link_refused", logging.WARNING, user_id=user.id, reason="in_use")
            raise SsoError("identity_in_use")
        return identity
    identity = _add_identity(user, issuer, subject, email)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise SsoError("identity_in_use") from None
    emit("auth.sso.identity_linked", user_id=user.id, identity_id=identity.id, via="account")
    return identity


def unlink_all_identities(user: User) -> list[str]:
    """An operator's way out (`flask users unlink-sso`): remove every provider account linked
    to the user, so that their next single sign-on links afresh (by address, under the usual
    rules). Returns the removed identities' ids."""
    ids = _remove_identities(user)
    db.session.commit()
    for identity_id in ids:
        emit("auth.sso.identity_unlinked", user_id=user.id, identity_id=identity_id)
    return ids


def unlink_identity(user: User, identity_id: str) -> None:
    """Remove one of the user's identities; refused (`password_required`) without a password,
    which would leave the account without a way in. Not theirs: `identity_not_found`."""
    identity = db.session.execute(
        db.select(Identity).where(Identity.id == identity_id, Identity.user_id == user.id)
    ).scalar_one_or_none()
    if identity is None:
        raise SsoError("identity_not_found")
    if not has_usable_password(user):
        raise SsoError("password_required")
    db.session.delete(identity)
    db.session.commit()
    emit("auth.sso.identity_unlinked", user_id=user.id, identity_id=identity_id)
