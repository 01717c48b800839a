"""The accounts emails: verification, password reset and email change, through the mail queue.

The request only queues (`queue_verification`, `queue_password_reset`, `queue_email_change`)
in its own transaction; `codexweb.outbox` builds and sends the message later with the
renderers below, minting the link's token at that moment. Each email has a plain-text and an
HTML body rendered from `templates/email/`. Links start with `PUBLIC_BASE_URL` (or, when it
is unset, the URL the request came in on, remembered in the queued row). Events carry the
user id and the kind of email, never the link or the token.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, has_request_context, render_template, request
from flask_mailman import EmailMultiAlternatives

from ..models import User
from ..outbox import enqueue, renderer
from .tokens import issue_email_change_token, issue_reset_token, issue_verification_token


def public_base_url() -> str:
    configured = current_app.config.get("PUBLIC_BASE_URL")
    if configured:
        return str(configured).rstrip("/")
    if has_request_context():
        return request.host_url.rstrip("/")
    return "http://127.0.0.1:5000"


def queue_verification(user: User | None) -> None:
    """Queue a verification email (None: a stand-in for an address we do not tell about)."""
    enqueue("verification", user, public_base_url())


def queue_password_reset(user: User | None) -> None:
    """Queue a reset email (None: a stand-in for an unknown address, dropped unsent)."""
    enqueue("password_reset", user, public_base_url())


def queue_email_change(user: User, new_email: str) -> None:
    """Queue the confirmation link to `new_email` and a notice to the address in use now."""
    addresses = {"old_email": user.email, "new_email": new_email}
    enqueue("email_change", user, public_base_url(), **addresses)
    enqueue("email_change_notice", user, public_base_url(), **addresses)


@renderer("verification")
def _verification_email(
    user: User, base_url: str, params: dict[str, Any]
) -> EmailMultiAlternatives | None:
    if user.email_verified:
        return None  # verified since it was queued: nothing left to ask
    token = issue_verification_token(user.id, user.email)
    return _email(
        user,
        subject="Verify your email address for codexweb",
        template="email/verify_email",
        link=f"{base_url}/verify-email/{token}",
        max_age_hours=current_app.config["EMAIL_VERIFY_MAX_AGE"] // 3600,
    )


@renderer("password_reset")
def _password_reset_email(
    user: User, base_url: str, params: dict[str, Any]
) -> EmailMultiAlternatives:
    token = issue_reset_token(user.id, user.password_hash)
    return _email(
        user,
        subject="Reset your codexweb password",
        template="email/reset_password",
        link=f"{base_url}/reset-password/{token}",
        max_age_minutes=current_app.config["PASSWORD_RESET_MAX_AGE"] // 60,
    )


@renderer("email_change")
def _email_change_email(
    user: User, base_url: str, params: dict[str, Any]
) -> EmailMultiAlternatives | None:
    if user.email != params["old_email"]:
        return None  # the address changed since it was asked: this link could not work
    token = issue_email_change_token(
        user.id, params["old_email"], user.password_hash, params["new_email"]
    )
    return _email(
        user,
        to=params["new_email"],
        subject="Confirm your new email address for codexweb",
        template="email/confirm_email",
        link=f"{base_url}/confirm-email/{token}",
        max_age_hours=current_app.config["EMAIL_VERIFY_MAX_AGE"] // 3600,
        **params,
    )


@renderer("email_change_notice")
def _email_change_notice(
    user: User, base_url: str, params: dict[str, Any]
) -> EmailMultiAlternatives:
    # To the address that was in use when the change was asked: its owner is who must know.
    return _email(
        user,
        to=params["old_email"],
        subject="Your codexweb email address is being changed",
        template="email/email_change_notice",
        account_url=f"{base_url}/account",
        forgot_url=f"{base_url}/forgot-password",
        **params,
    )


def _email(
    user: User, *, subject: str, template: str, to: str | None = None, **context
) -> EmailMultiAlternatives:
    context["user"] = user
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_template(f"{template}.txt", **context),
        from_email=current_app.config["MAIL_DEFAULT_SENDER"],
        to=[to or user.email],
    )
    message.attach_alternative(render_template(f"{template}.html", **context), "text/html")
    return message
