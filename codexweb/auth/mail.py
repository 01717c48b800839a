"""The accounts emails: verification and password reset, sent through Flask-Mailman.

Each email has a plain-text and an HTML body rendered from `templates/email/`. Links start
with `PUBLIC_BASE_URL` (or, when it is unset, the URL the request came in on). A failure to
send is logged as `auth.email.send_failed` and reported as False: it never undoes the
account change that triggered it. Events carry the user id and the kind of email, never the
link or the token.
"""

from __future__ import annotations

import logging

from flask import current_app, has_request_context, render_template, request
from flask_mailman import EmailMultiAlternatives

from ..logging import emit
from ..models import User
from .tokens import issue_reset_token, issue_verification_token


def public_base_url() -> str:
    configured = current_app.config.get("PUBLIC_BASE_URL")
    if configured:
        return str(configured).rstrip("/")
    if has_request_context():
        return request.host_url.rstrip("/")
    return "http://127.0.0.1:5000"


def send_verification_email(user: User) -> bool:
    token = issue_verification_token(user.id, user.email)
    sent = _send(
        user,
        kind="verification",
        subject="Verify your email address for codexweb",
        template="email/verify_email",
        link=f"{public_base_url()}/verify-email/{token}",
        max_age_hours=current_app.config["EMAIL_VERIFY_MAX_AGE"] // 3600,
    )
    if sent:
        emit("auth.email.verification_sent", user_id=user.id)
    return sent


def send_password_reset_email(user: User) -> bool:
    token = issue_reset_token(user.id, user.password_hash)
    sent = _send(
        user,
        kind="password_reset",
        subject="Reset your codexweb password",
        template="email/reset_password",
        link=f"{public_base_url()}/reset-password/{token}",
        max_age_minutes=current_app.config["PASSWORD_RESET_MAX_AGE"] // 60,
    )
    if sent:
        emit("auth.email.password_reset_sent", user_id=user.id)
    return sent


def _send(user: User, *, kind: str, subject: str, template: str, **context) -> bool:
    context["user"] = user
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_template(f"{template}.txt", **context),
        from_email=current_app.config["MAIL_DEFAULT_SENDER"],
        to=[user.email],
    )
    message.attach_alternative(render_template(f"{template}.html", **context), "text/html")
    try:
        message.send()
    except Exception as error:  # any transport failure: SMTP, DNS, disk, a bad config
        emit(
            "auth.email.send_failed",
            logging.ERROR,
            user_id=user.id,
            kind=kind,
            error=type(error).__name__,
        )
        return False
    return True
